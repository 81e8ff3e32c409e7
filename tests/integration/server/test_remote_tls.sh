#!/usr/bin/env bash
# A sim driver running standalone on loopback with mutual TLS (certificates
# from scripts/gen-certs.sh), used by droverd as a remote driver: offers and
# instances go through it. A client certificate from another CA is refused,
# and the server reconnects when the remote driver comes back.
. "$(dirname "$0")/lib.sh"
need drover-driver-sim

"$SRC/scripts/gen-certs.sh" "$T/good" 2>/dev/null
"$SRC/scripts/gen-certs.sh" "$T/bad" 2>/dev/null
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

start_remote() {
	"$BIN/drover-driver-sim" --listen "127.0.0.1:$port" --tls-cert "$T/good/driver.pem" \
		--tls-key "$T/good/driver-key.pem" --client-ca "$T/good/ca.pem" >>"$T/remote.log" 2>&1 &
	REMOTE_PID=$!
	BG_PIDS+=($REMOTE_PID)
	wait_for 10 "(echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null" || fail "the standalone sim driver did not listen on $port"
}
start_remote

config_header
cat >>"$CONFIG" <<YAML
drivers:
  dirs: []
  remote:
    - type: sim
      name: remote-sim
      address: 127.0.0.1:$port
      ca: $T/good/ca.pem
      cert: $T/good/client.pem
      key: $T/good/client-key.pem
      server_name: localhost
    - type: simwrongca
      name: wrong-ca
      address: 127.0.0.1:$port
      ca: $T/good/ca.pem
      cert: $T/bad/client.pem
      key: $T/bad/client-key.pem
      server_name: localhost
  restart_backoff_ms: 200
  restart_backoff_max_ms: 1000
  health_interval_ms: 300
projects:
  - name: main
    backends:
      - name: remote
        type: sim
        config: {state_file: $T/remote-state.json}
      - name: wrongca
        type: simwrongca
        config: {state_file: $T/wrong-state.json}
YAML
start_droverd

ready="drover --json driver list | jq -e '.drivers[] | select(.name == \"remote-sim\" and .state == \"DRIVER_STATE_READY\")' >/dev/null"
wait_for 10 "$ready" || {
	run any --json driver list
	fail "the remote sim driver never became READY over mutual TLS"
}
run 0 --json driver list
[[ $(jout '.drivers[] | select(.name == "remote-sim") | .kind') == DRIVER_KIND_REMOTE ]] || fail "remote-sim is not REMOTE"
[[ $(jout '.drivers[] | select(.name == "remote-sim") | .address') == "127.0.0.1:$port" ]] || fail "remote-sim shows no address"
[[ $(jout '.drivers[] | select(.name == "wrong-ca") | .state') != DRIVER_STATE_READY ]] ||
	fail "a client certificate from the wrong CA was accepted"
wait_for 10 "drover --json driver list | jq -e '.drivers[] | select(.name == \"wrong-ca\" and .last_error != \"\")' >/dev/null" ||
	fail "the refused connection left no last_error"
run 0 driver list
contains "$OUT" "127.0.0.1:$port" "driver list shows the remote address"

run 0 --json offer --gpu H100
[[ $(jout '.backends[] | select(.backend == "remote") | .code') == OK ]] || fail "offers through the remote driver failed"
(($(jout '[.offers[] | select(.backend == "remote")] | length') > 0)) || fail "no offers from the remote driver"
wc=$(jout '.backends[] | select(.backend == "wrongca") | .code')
[[ $wc != OK ]] || fail "the backend behind the wrong-CA connection answered"

run 0 --json instance create --backend remote --gpu H100 --name far
[[ -f $T/remote-state.json ]] || fail "the remote sim wrote no state"
[[ $(jq '[.instances[] | select(.terminated | not)] | length' "$T/remote-state.json") == 1 ]] ||
	fail "the remote sim does not hold the instance"

# The remote driver goes away and comes back: the server reconnects.
log "restarting the remote driver"
kill -TERM "$REMOTE_PID"
wait "$REMOTE_PID" 2>/dev/null || true
wait_for 10 "drover --json driver list | jq -e '.drivers[] | select(.name == \"remote-sim\" and .state != \"DRIVER_STATE_READY\")' >/dev/null" ||
	fail "the server did not notice the remote driver went away"
start_remote
wait_for 15 "$ready" || fail "the server did not reconnect to the remote driver"
run 0 --json offer --gpu H100
[[ $(jout '.backends[] | select(.backend == "remote") | .code') == OK ]] || fail "offers after the reconnection failed"

# The driver's stderr is JSON lines only, gRPC's own included: the refused
# client certificate is one, at level error (gRPC wrote "E1129 ..." lines).
# (remote.log has its stdout too: the handshake lines.)
grep -v -e '^{' -e '^1|1|tcp|' "$T/remote.log" | head -3 | grep . &&
	fail "the remote driver wrote lines that are not JSON"
grep '"level":"error"' "$T/remote.log" | grep -q 'gRPC: Handshake failed' ||
	fail "the refused TLS handshake is not in the remote driver's log as a JSON error line"
log "ok"
