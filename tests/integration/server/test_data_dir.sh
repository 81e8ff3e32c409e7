#!/usr/bin/env bash
# One droverd per data directory and per API socket: a second droverd on the
# same data directory, or on another data directory with the same listen.unix
# or listen.tcp, exits 1 naming what is taken, and the first keeps serving
# (the second used to take the first's unix socket over, or share its TCP
# port). After a kill -9, the stale socket and lock do not stop a restart, and
# the state is kept.
. "$(dirname "$0")/lib.sh"

config_header
start_droverd
run 0 project create kept

# A data directory that is a file, or empty: named as such.
touch "$T/afile"
capture "$BIN/droverd" --data-dir "$T/afile"
[[ $RC == 1 ]] || fail "droverd --data-dir FILE exited $RC, expected 1"
contains "$ERR" "data directory $T/afile: Not a directory" "--data-dir FILE"
capture "$BIN/droverd" --data-dir ""
[[ $RC == 1 ]] || fail "droverd --data-dir '' exited $RC, expected 1"
contains "$ERR" "the data directory is an empty path" "--data-dir ''"

# An admin token others can read is refused, as secret.key is (it was taken).
mkdir -m 700 "$T/tok"
openssl rand -hex 32 >"$T/tok/admin.token"
chmod 644 "$T/tok/admin.token"
capture timeout 10 "$BIN/droverd" --data-dir "$T/tok"
[[ $RC == 1 ]] || fail "droverd with a 0644 admin.token exited $RC, expected 1"
contains "$ERR" "admin.token: admin token file is accessible by group or others (mode 644)" "0644 admin.token"

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

# Two droverd on the same listen.tcp: gRPC binds with SO_REUSEPORT, and both
# used to listen, the kernel splitting connections between them.
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
for d in tcp1 tcp2; do
	cat >"$T/$d.yaml" <<YAML
listen: {unix: $T/$d.sock, tcp: {address: 127.0.0.1:$port}}
data_dir: $T/$d-data
YAML
done
"$BIN/droverd" --config "$T/tcp1.yaml" >>"$T/tcp1.log" 2>&1 &
BG_PIDS+=($!)
wait_for 15 "[[ -S $T/tcp1.sock ]]" || fail "the droverd on 127.0.0.1:$port did not start"
capture timeout 10 "$BIN/droverd" --config "$T/tcp2.yaml"
[[ $RC == 1 ]] || fail "a second droverd on 127.0.0.1:$port exited $RC, expected 1"
contains "$ERR" "127.0.0.1:$port: the address is in use" "second droverd, same listen.tcp"
log "ok"
