#!/usr/bin/env bash
# `instance create --wait` shows its attempts and status changes on stderr
# when stderr is a terminal (a pty from script(1) here), nothing extra when
# it is not, and nothing with --quiet.
. "$(dirname "$0")/lib.sh"
need drover-driver-sim
command -v script >/dev/null || fail "script(1) (bsdutils) is missing"

config_header
cat >>"$CONFIG" <<YAML
drivers:
  dirs: [$BIN]
projects:
  - name: main
    backends:
      - name: a-empty
        type: sim
        config: {capacity: 0, state_file: $T/a.json}
      - name: b-full
        type: sim
        config: {capacity: 4, provisioning_delay_ms: 1500, state_file: $T/b.json}
provisioning: {reconcile_interval_ms: 200}
YAML
start_droverd

# on_tty NAME ARGS...: the CLI with stderr on a pty; stdout in $T/NAME.out, the pty's text in $T/NAME.tty.
on_tty() {
	local name=$1
	shift
	local cmd="$BIN/drover --server unix:$DATA/droverd.sock --token-file $DATA/admin.token $* >$T/$name.out"
	set +e
	script -qec "$cmd" "$T/$name.tty" </dev/null >/dev/null
	RC=$?
	set -e
}

on_tty p1 instance create --gpu H100 --name p1 --max-tries 6 --wait
[[ $RC == 0 ]] || fail "instance create --wait on a terminal exited $RC: $(cat "$T/p1.tty")"
tty=$(cat "$T/p1.tty")
grep -Eq 'attempt 1: a-empty .* in .*\$[0-9.]+/h' <<<"$tty" || fail "no line for attempt 1: $tty"
grep -Eq 'attempt 1: RESOURCE_EXHAUSTED: ' <<<"$tty" || fail "no outcome of the failed attempt 1: $tty"
grep -Eq 'attempt [0-9]+: OK' <<<"$tty" || fail "no OK attempt: $tty"
grep -Eq 'instance i-[0-9a-f]+: provisioning' <<<"$tty" || fail "no provisioning status line: $tty"
grep -Eq 'instance i-[0-9a-f]+: running' <<<"$tty" || fail "no running status line: $tty"
# In that order: provisioning before running.
(($(grep -n ': provisioning' <<<"$tty" | cut -d: -f1) < $(grep -n ': running' <<<"$tty" | cut -d: -f1))) ||
	fail "running reported before provisioning: $tty"
contains "$(cat "$T/p1.out")" "status:           running" "stdout of the create"
! grep -q 'drover: \[' "$T/p1.out" || fail "progress went to stdout"

# --quiet: nothing of it.
on_tty p2 instance create --gpu H100 --name p2 --max-tries 6 --wait --quiet
[[ $RC == 0 ]] || fail "instance create --wait --quiet exited $RC"
! grep -q 'drover: \[' "$T/p2.tty" || fail "--quiet still showed progress: $(cat "$T/p2.tty")"
# Not a terminal: nothing extra on stderr.
run 0 instance create --gpu H100 --name p3 --max-tries 6 --wait
[[ -z $ERR ]] || fail "progress or other text on a stderr that is not a terminal: $ERR"
run 2 instance list --quiet
log "ok"
