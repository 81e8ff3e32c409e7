#!/usr/bin/env bash
# A spawned driver's handshake may name only its own socket (PROTOCOL.md
# §12.6). Hostile drivers (fixture broken-sdk, --fault handshake-*) name
# another droverd's live sim socket, directly and hard-linked into their own
# socket directory, and a recording listener's unix socket and TCP port.
# Each is refused with an error naming the driver and the address, the driver
# is stopped (not restarted on the crash backoff), and the listener records that no byte (no config, no secret) was ever sent to it.
# A TCP handshake is taken only from a driver whose config entry allows it.
# The healthy sim backend beside them, and the other droverd, work on.
. "$(dirname "$0")/lib.sh"
need drover-driver-sim fixture-driver-broken-sdk

# Socket directories of both droverds, on the file system of the listener's
# socket (a hard link cannot cross file systems), short enough for a socket path.
S=$T/s
VS=$T/vs
mkdir -p "$S" "$VS" "$T/rec"
((${#S} <= 48)) || fail "socket base $S is too long for this test"

# The recording listener: another program's unix socket and TCP port.
python3 - "$T/rec" <<'PY' &
import os, selectors, socket, sys
d = sys.argv[1]
events = open(os.path.join(d, "events"), "a", buffering=1)
sel = selectors.DefaultSelector()
us = socket.socket(socket.AF_UNIX)
us.bind(os.path.join(d, "other.sock"))
us.listen(16)
ts = socket.socket()
ts.bind(("127.0.0.1", 0))
ts.listen(16)
with open(os.path.join(d, "port.tmp"), "w") as f:
    f.write(str(ts.getsockname()[1]))
os.rename(os.path.join(d, "port.tmp"), os.path.join(d, "port"))
sel.register(us, selectors.EVENT_READ, "unix")
sel.register(ts, selectors.EVENT_READ, "tcp")
while True:
    for key, _ in sel.select():
        if key.data in ("unix", "tcp"):
            c, _ = key.fileobj.accept()
            events.write("conn %s\n" % key.data)
            sel.register(c, selectors.EVENT_READ, "conn")
        else:
            b = key.fileobj.recv(65536)
            if b:
                events.write("bytes %d %r\n" % (len(b), b[:200]))
            else:
                sel.unregister(key.fileobj)
                key.fileobj.close()
PY
BG_PIDS+=($!)
wait_for 10 "[[ -s $T/rec/port ]]" || fail "the recording listener did not start"
port=$(cat "$T/rec/port")
: >>"$T/rec/events"

# The other droverd, with a live sim driver whose socket the hostile drivers name.
V=$T/victim
TMPDIR=$VS start_other_droverd "$V"
victim_pid=$OTHER_PID
wait_other_sim "$V"
vsock=$SIM_SOCK
log "the other droverd's sim socket: $vsock"

# A standalone sim on loopback: what an allowed TCP handshake names.
"$BIN/drover-driver-sim" --listen 127.0.0.1:0 >"$T/tcp-sim.out" 2>"$T/tcp-sim.err" &
BG_PIDS+=($!)
wait_for 10 "grep -q '^1|1|tcp|' $T/tcp-sim.out" || fail "the standalone sim did not print its address"
tcp_sim=$(cut -d'|' -f4 "$T/tcp-sim.out" | head -1)

config_header
cat >>"$CONFIG" <<YAML
drivers:
  dirs: [$BIN]
  commands:
    - {type: h-victim, path: $BIN/fixture-driver-broken-sdk, args: [--fault, "handshake-unix=$vsock"]}
    - {type: h-victim-link, path: $BIN/fixture-driver-broken-sdk, args: [--fault, "handshake-link=$vsock"]}
    - {type: h-unix, path: $BIN/fixture-driver-broken-sdk, args: [--fault, "handshake-unix=$T/rec/other.sock"]}
    - {type: h-link, path: $BIN/fixture-driver-broken-sdk, args: [--fault, "handshake-link=$T/rec/other.sock"]}
    - {type: h-tcp, path: $BIN/fixture-driver-broken-sdk, args: [--fault, "handshake-tcp=127.0.0.1:$port"]}
    - type: t-ok
      path: $BIN/fixture-driver-broken-sdk
      args: [--fault, "handshake-tcp=$tcp_sim"]
      allow_tcp_handshake: true
  restart_backoff_ms: 1000
projects:
  - name: main
    backends:
      - name: sim
        type: sim
        config: {state_file: $T/sim.json}
      - {name: b-victim, type: h-victim, secrets: {api_key: hostile-secret-5678}}
      - {name: b-victim-link, type: h-victim-link, secrets: {api_key: hostile-secret-5678}}
      - {name: b-unix, type: h-unix, secrets: {api_key: hostile-secret-5678}}
      - {name: b-link, type: h-link, secrets: {api_key: hostile-secret-5678}}
      - {name: b-tcp, type: h-tcp, secrets: {api_key: hostile-secret-5678}}
      - {name: tcp-sim, type: t-ok, config: {state_file: $T/tcp-sim.json}}
YAML
TMPDIR=$S start_droverd

hostile='["h-victim","h-victim-link","h-unix","h-link","h-tcp"]'
refused="drover --json driver list | jq -e --argjson h '$hostile' '[.drivers[] | select(.type as \$t | \$h | index(\$t)) | select(.last_error | test(\"handshake refused\"))] | length == 5' >/dev/null"
wait_for 20 "$refused" || {
	run any --json driver list
	fail "not every hostile driver's handshake was refused"
}
run 0 --json driver list
err_of() { jout ".drivers[] | select(.type == \"$1\") | .last_error"; }
for t in h-victim h-victim-link h-unix h-link h-tcp; do
	[[ $(jout ".drivers[] | select(.type == \"$t\") | .state") != DRIVER_STATE_READY ]] || fail "driver $t is READY"
	e=$(err_of "$t")
	[[ $e == *"driver '$t'"* ]] || fail "driver $t: the error does not name the driver: $e"
done
e=$(err_of h-victim)
[[ $e == *"$vsock"* && $e == *"outside the socket directory"* ]] || fail "h-victim: $e"
e=$(err_of h-victim-link)
[[ $e == *"broken-sdk.sock"* && $e == *"is not the driver"* ]] || fail "h-victim-link: $e"
e=$(err_of h-unix)
[[ $e == *"$T/rec/other.sock"* && $e == *"outside the socket directory"* ]] || fail "h-unix: $e"
e=$(err_of h-link)
[[ $e == *"is not the driver"* ]] || fail "h-link: $e"
e=$(err_of h-tcp)
[[ $e == *"127.0.0.1:$port"* && $e == *"allow_tcp_handshake"* ]] || fail "h-tcp: $e"
grep -q "driver 'h-tcp'.*handshake refused: it names the TCP address 127.0.0.1:$port" "$LOG" ||
	fail "the log does not say why h-tcp was refused"

# A refused driver is stopped, not restarted as a crash loop would be: its
# state says so, its last error says why, and so do calls to its backend.
sleep 3 # three times restart_backoff_ms: a restart on the crash backoff would have come
run 0 --json driver list
for t in h-victim h-victim-link h-unix h-link h-tcp; do
	[[ $(jout ".drivers[] | select(.type == \"$t\") | .state") == DRIVER_STATE_STOPPED ]] ||
		fail "driver $t is $(jout ".drivers[] | select(.type == \"$t\") | .state") after its refusal"
	[[ $(jout ".drivers[] | select(.type == \"$t\") | .restarts") == 0 ]] ||
		fail "driver $t was restarted after its refusal: $(jout ".drivers[] | select(.type == \"$t\")")"
	e=$(err_of "$t")
	[[ $e == *"handshake refused"*"the driver is stopped and not restarted"* ]] || fail "driver $t: $e"
done
run 0 driver list
contains "$OUT" "stopped" "driver list after the refusals"
run 0 --json event list --all --limit 500
[[ $(jout '[.events[] | select(.kind == "driver.refused")] | length') == 5 ]] ||
	fail "expected one driver.refused event per hostile driver: $(jout '[.events[] | select(.kind | startswith("driver."))]')"
run 0 --json offer
contains "$(jout '.backends[] | select(.backend == "b-tcp") | .message')" "driver h-tcp is stopped: driver 'h-tcp'" "b-tcp's offers"
run 0 --json driver list

# Nothing was sent: the hard-linked socket was connected to (that is how its
# listener is found out), and closed without a byte; the TCP port never.
log "the listener's events: $(tr '\n' ';' <"$T/rec/events")"
! grep -q '^bytes' "$T/rec/events" || fail "bytes were sent to another program's socket"
! grep -q '^conn tcp' "$T/rec/events" || fail "droverd connected to the TCP port of another program"
grep -q '^conn unix' "$T/rec/events" || fail "the hard-link case never got as far as connecting (the test proves nothing)"
! grep -q hostile-secret-5678 "$LOG" || fail "a backend's secret is in droverd's log"

# Allowed for its driver, a TCP handshake is taken.
[[ $(jout '.drivers[] | select(.type == "t-ok") | .state') == DRIVER_STATE_READY ]] ||
	fail "the driver allowed a TCP handshake is not READY: $(err_of t-ok)"

# The healthy backends work on, here and in the other droverd.
run 0 --json offer --gpu H100
[[ $(jout '.backends[] | select(.backend == "sim") | .code') == OK ]] || fail "the sim backend is not OK"
(($(jout '[.offers[] | select(.backend == "sim")] | length') > 0)) || fail "no offers from the healthy sim backend"
(($(jout '[.offers[] | select(.backend == "tcp-sim")] | length') > 0)) || fail "no offers through the allowed TCP handshake"
alive "$victim_pid" || fail "the other droverd died"
capture other_drover "$V" --json offer --gpu H100
((RC == 0)) || fail "the other droverd's offers failed: $ERR"
log "ok"
