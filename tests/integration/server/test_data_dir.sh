#!/usr/bin/env bash
# One droverd per data directory and per API socket: a second droverd on the
# same data directory, or on another data directory with the same
# listen.unix, exits 1 naming what is taken, and the first keeps serving (the
# second used to unlink the first's socket and take it over). After a kill -9,
# the stale socket and lock do not stop a restart, and the state is kept.
. "$(dirname "$0")/lib.sh"

config_header
start_droverd
run 0 project create kept

# Same data directory.
capture "$BIN/droverd" --config "$CONFIG"
[[ $RC == 1 ]] || fail "a second droverd on the same data directory exited $RC, expected 1"
contains "$ERR" "another droverd is running on this data directory" "second droverd, same data dir"
run 0 project list

# Another data directory, the same API socket.
cat >"$T/other.yaml" <<YAML
listen: {unix: $DATA/droverd.sock}
data_dir: $T/other-data
YAML
capture timeout 10 "$BIN/droverd" --config "$T/other.yaml"
[[ $RC == 1 ]] || fail "a second droverd on the same socket exited $RC, expected 1"
contains "$ERR" "$DATA/droverd.sock: another server is listening on this socket" \
	"second droverd, same socket"
[[ -S $DATA/droverd.sock ]] || fail "the first droverd's socket is gone"
run 0 --json project list
[[ $(jout '[.projects[] | select(.name == "kept")] | length') == 1 ]] ||
	fail "the first droverd no longer answers on its socket"

# kill -9 leaves the socket and the lock file behind: a restart still serves, with its state.
kill -KILL "$DROVERD_PID"
wait "$DROVERD_PID" 2>/dev/null || true
DROVERD_PID=
[[ -S $DATA/droverd.sock ]] || fail "kill -9 left no stale socket to test with"
start_droverd
run 0 --json project list
[[ $(jout '[.projects[] | select(.name == "kept")] | length') == 1 ]] ||
	fail "project kept was lost across kill -9 and restart"
log "ok"
