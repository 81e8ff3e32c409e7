#!/usr/bin/env bash
# An answer never runs ahead of the store: droverd is SIGKILLed (from gdb)
# right after it handled a TerminateInstance request and before the batch
# of writes that request made is committed. The client must not have been
# told "terminating" then: before the fix it was (exit 0, TERMINATING),
# and after the restart the instance was RUNNING with its machine alive, the
# acknowledged termination forgotten. Now the client learns the server was
# lost (exit 3) and the store and the sim agree.
# Needs gdb and permission to attach; skipped (passes) without them.
# (The create asks for --spot-policy auto: with max_tries 1 the cheapest
# offer must have capacity, and on the sim that is a spot one.)
. "$(dirname "$0")/lib.sh"
need drover-driver-sim
if ! command -v gdb >/dev/null; then
	log "skipped: no gdb"
	exit 0
fi

config_header
cat >>"$CONFIG" <<YAML
drivers:
  commands: [{type: sim, path: $BIN/drover-driver-sim}]
projects:
  - name: main
    backends:
      - name: sim
        type: sim
        config: {state_file: $T/sim.json}
provisioning: {max_tries: 1, reconcile_interval_ms: 100}
YAML
start_droverd
run 0 --json instance create --gpu H100 --spot-policy auto --name victim --wait
id=$(jout .instance.id)

# At the terminate handler, arm a breakpoint on the commit of the batch it
# opens; there, let the other threads run for a second (an answer sent
# before the commit reaches the client meanwhile), then kill droverd.
cat >"$T/gdb.cmds" <<G
set pagination off
set confirm off
attach $DROVERD_PID
break h_terminate_instance
break flush_cb
disable 2
commands 1
  enable 2
  continue
end
commands 2
  call (int)usleep(1000000)
  kill
  quit
end
echo ARMED\n
continue
G
gdb -batch -x "$T/gdb.cmds" >"$T/gdb.out" 2>&1 &
gdb_pid=$!
BG_PIDS+=($gdb_pid)
if ! wait_for 30 "grep -q ARMED '$T/gdb.out' || ! alive $gdb_pid"; then
	fail "gdb did not attach within 30 s: $(tail -5 "$T/gdb.out")"
fi
if ! grep -q ARMED "$T/gdb.out"; then
	log "skipped: gdb cannot attach here: $(tail -3 "$T/gdb.out")"
	exit 0
fi
sleep 0.5
capture drover --json instance terminate "$id"
wait_gone "$DROVERD_PID" 100 || fail "gdb did not kill droverd: $(tail -5 "$T/gdb.out")"
wait "$DROVERD_PID" 2>/dev/null || true
DROVERD_PID=
grep -q "hit Breakpoint 2" "$T/gdb.out" || fail "droverd died elsewhere than before the commit: $(tail -8 "$T/gdb.out")"
if [[ $RC == 0 ]]; then
	fail "the client was told $(jq -r .instance.status "$T/.out") before the state was committed"
fi
[[ $RC == 3 ]] || fail "the terminate whose server died exited $RC, expected 3 (lost the server)"

start_droverd
run 0 --json instance show "$id"
status=$(jout .instance.status)
machine=$(jout .instance.provisioning_data.instance_id)
terminated=$(jq -r --arg m "$machine" '.instances[] | select(.id == $m) | .terminated' "$T/sim.json")
# Unacknowledged, the terminate may or may not have been recorded; the store and the sim agree either way.
case $status in
INSTANCE_STATUS_RUNNING) [[ $terminated == false ]] || fail "RUNNING in the store, terminated in the sim" ;;
INSTANCE_STATUS_TERMINATING | INSTANCE_STATUS_TERMINATED) ;;
*) fail "after the restart the instance is $status" ;;
esac
log "ok (after the restart: $status)"
