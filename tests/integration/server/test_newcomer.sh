#!/usr/bin/env bash
# The newcomer's path: scripts/run.sh starts droverd in the foreground with a
# hint of what to run next, and those commands work from a second shell:
# drover offer --gpu H100, drover instance create. The shipped
# config/droverd.yaml is used as is, except that its relative paths (./var,
# ./build/bin) are pointed into this test's temp directory so the test never
# touches the repository's own ./var.
. "$(dirname "$0")/lib.sh"
need drover-driver-sim

[[ -f $SRC/config/droverd.yaml ]] || fail "the repository ships no config/droverd.yaml"
mkdir -p "$DATA"
sed -e "s|\./var|$DATA|g" -e "s|\./build/bin|$BIN|g" "$SRC/config/droverd.yaml" >"$CONFIG"
grep -q "$DATA" "$CONFIG" || fail "config/droverd.yaml does not keep its data in ./var"

build=$(cd "$BIN/.." && pwd)
# run.sh records its data directory for the CLI under $XDG_RUNTIME_DIR: this test's.
export XDG_RUNTIME_DIR=$T/xdg
mkdir -p "$XDG_RUNTIME_DIR"
DROVER_CONFIG=$CONFIG "$SRC/scripts/run.sh" "$build" >"$T/run.out" 2>"$LOG" &
DROVERD_PID=$! # run.sh execs droverd, so this is droverd's pid
wait_for 15 "[[ -S $DATA/droverd.sock && -s $DATA/admin.token ]] && drover project list >/dev/null 2>&1" || {
	alive "$DROVERD_PID" || DROVERD_PID=
	fail "scripts/run.sh did not bring droverd up"
}
grep -q "drover offer --gpu H100" "$LOG" || fail "run.sh printed no hint of what to run next"
grep -q "drover instance create" "$LOG" || fail "run.sh's hint does not show instance create"
[[ $(cat /proc/"$DROVERD_PID"/comm) == droverd ]] || fail "run.sh did not exec droverd in the foreground"
[[ $(cat "$XDG_RUNTIME_DIR/drover/server") == "$DATA" ]] || fail "run.sh did not record the config's data_dir for the CLI"

run 0 offer --gpu H100
contains "$OUT" "H100" "drover offer --gpu H100 with the shipped config"
run 0 --json instance create --gpu H100 --name demo
st=$(jout '.instance.status')
[[ $st == INSTANCE_STATUS_PROVISIONING || $st == INSTANCE_STATUS_RUNNING ]] || fail "instance create gave status $st"
run 0 instance list
contains "$OUT" "demo" "instance list"
run 0 instance terminate demo --wait
contains "$OUT" "terminated" "instance terminate --wait"
log "ok"
