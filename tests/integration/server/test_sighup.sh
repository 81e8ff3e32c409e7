#!/usr/bin/env bash
# SIGHUP (the terminal of a foreground droverd closing, as with `make run`)
# stops droverd as SIGTERM does: the log says so, the drivers it spawned are
# stopped, and it exits 0. It used to die at once, with no log line, leaving
# its drivers to notice the closed stdin on their own.
. "$(dirname "$0")/lib.sh"
need drover-driver-sim

config_header
cat >>"$CONFIG" <<YAML
drivers:
  dirs: [$BIN]
projects:
  - name: main
    backends:
      - name: sim
        type: sim
        config: {state_file: $T/sim.json}
YAML
start_droverd
pid=$(wait_driver_pid sim) || fail "no pid for the sim driver in drover driver list"

kill -HUP "$DROVERD_PID"
wait_gone "$DROVERD_PID" 100 || fail "droverd did not stop within 10 s of SIGHUP"
set +e
wait "$DROVERD_PID"
rc=$?
set -e
DROVERD_PID=
[[ $rc == 0 ]] || fail "droverd exited $rc after SIGHUP, expected 0 (a clean stop)"
grep -q '\[droverd\] received SIGHUP' "$LOG" || fail "droverd's log does not say it received SIGHUP"
grep -q '\[droverd\] stopped$' "$LOG" || fail "droverd's log has no \"stopped\" line"
wait_gone "$pid" 50 || fail "the sim driver (pid $pid) outlived droverd's clean stop"
log "ok"
