#!/usr/bin/env bash
# The CLI finds the server from any directory: $DROVER_SERVER first, then the
# data directory `make run` (scripts/run.sh) recorded for the user, then
# ./var. scripts/run.sh is run for real here, on a test config and data dir.
. "$(dirname "$0")/lib.sh"
need drover-driver-sim droverd drover

export XDG_RUNTIME_DIR=$T/xdg
mkdir -p "$XDG_RUNTIME_DIR" "$T/elsewhere"
unset DROVER_SERVER DROVER_TOKEN_FILE
cat >"$T/run.yaml" <<YAML
data_dir: $T/rundata # the config's data_dir is what run.sh records
drivers:
  dirs: [$BIN]
projects:
  - name: main
    backends:
      - name: sim
        type: sim
        config: {state_file: $T/sim.json}
YAML
DROVER_CONFIG=$T/run.yaml "$SRC/scripts/run.sh" "$(dirname "$BIN")" >"$T/run.log" 2>&1 &
DROVERD_PID=$!
wait_for 30 '[[ -S $T/rundata/droverd.sock && -s $T/rundata/admin.token ]]' || fail "run.sh did not start droverd: $(cat "$T/run.log")"
[[ $(cat "$XDG_RUNTIME_DIR/drover/server") == "$T/rundata" ]] ||
	fail "run.sh did not record its data directory in \$XDG_RUNTIME_DIR/drover/server"
contains "$(cat "$T/run.log")" "from any directory" "run.sh's hint"

# From another directory, without --server or --token-file: the recorded server.
cd "$T/elsewhere"
wait_for 20 '"$BIN/drover" project list >/dev/null 2>&1' || fail "the CLI did not find the recorded server from another directory"
capture "$BIN/drover" offer --gpu H100 --limit 1
[[ $RC == 0 ]] || fail "drover offer from another directory exited $RC: $ERR"
contains "$OUT" "H100" "drover offer through the recorded server"

# $DROVER_SERVER comes first: a wrong one is not rescued by the record.
DROVER_SERVER=unix:$T/nothing.sock capture "$BIN/drover" project list
[[ $RC == 3 ]] || fail "a wrong \$DROVER_SERVER exited $RC, expected 3"
contains "$ERR" "DROVER_SERVER" "the unreachable error names where the address came from"
# --server too; and then the recorded token is not sent to that other server.
capture "$BIN/drover" --server "unix:$T/nothing.sock" project list
[[ $RC == 3 ]] || fail "a wrong --server exited $RC, expected 3"

# A server that stopped leaves its record behind: the CLI falls back to ./var.
stop_droverd
capture "$BIN/drover" project list
[[ $RC == 3 ]] || fail "with the recorded server gone and no ./var, exited $RC, expected 3"
contains "$ERR" "elsewhere/var/droverd.sock" "the fallback to ./var"
# ./var of the current directory, the last resort.
config_header
cat >>"$CONFIG" <<YAML
drivers:
  dirs: [$BIN]
YAML
start_droverd
ln -s "$DATA" "$T/elsewhere/var"
capture "$BIN/drover" project list
[[ $RC == 0 ]] || fail "./var was not used after the record went stale (exit $RC): $ERR"

# A record naming a live server wins over ./var (here one without a server).
printf '%s\n' "$DATA" >"$XDG_RUNTIME_DIR/drover/server"
mkdir -p "$T/other/var"
cd "$T/other"
capture "$BIN/drover" project list
[[ $RC == 0 ]] || fail "the record of a live server was not used before ./var (exit $RC): $ERR"
# The help documents the order.
capture "$BIN/drover" --help
contains "$OUT" "DROVER_SERVER" "drover --help"
contains "$OUT" "drover/server" "drover --help"
contains "$OUT" "./var/droverd.sock" "drover --help"
log "ok"
