#!/usr/bin/env bash
# SIGKILL droverd while a CreateInstance call is in flight (the sim's
# latency_ms slows every provider call), then restart it on the same store:
# there is exactly one instance, both in the sim's state file and in the
# store, and they are the same machine. The spawned sim driver does not
# outlive the killed server.
# (Creates ask for --spot-policy auto: with max_tries 1 the cheapest offer
# must have capacity, and on the sim that is a spot one.)
. "$(dirname "$0")/lib.sh"
need drover-driver-sim

config_header
cat >>"$CONFIG" <<YAML
drivers:
  dirs: [$BIN]
  offers_timeout_ms: 10000
  call_timeout_ms: 20000
projects:
  - name: main
    backends:
      - name: slow
        type: sim
        config: {latency_ms: 1500, capacity: 4, state_file: $T/sim.json}
provisioning: {max_tries: 1, reconcile_interval_ms: 200}
YAML
start_droverd
sim_pid=$(wait_driver_pid sim) || fail "no pid for the sim driver in drover driver list"

drover instance create --gpu H100 --spot-policy auto --name crashy >"$T/create.out" 2>"$T/create.err" &
create_pid=$!
BG_PIDS+=($create_pid)

# Wait until the server has recorded the create and is in the driver call.
wait_for 15 "drover --json instance list 2>/dev/null | jq -e '.instances[] | select(.name == \"crashy\" and .status == \"INSTANCE_STATUS_CREATING\")' >/dev/null" ||
	fail "the instance never reached CREATING (the state written before the driver call)"
sleep 0.5
log "killing droverd (pid $DROVERD_PID) mid-CreateInstance"
kill -KILL "$DROVERD_PID"
wait "$DROVERD_PID" 2>/dev/null || true
DROVERD_PID=

set +e
wait "$create_pid"
create_rc=$?
set -e
[[ $create_rc == 3 ]] || fail "the CLI whose server died exited $create_rc, expected 3 (cannot reach the server)"
wait_gone "$sim_pid" 50 || fail "the sim driver (pid $sim_pid) outlived the SIGKILLed droverd"

log "restarting droverd on the same store"
start_droverd
wait_for 30 "drover --json instance list 2>/dev/null | jq -e '.instances[] | select(.name == \"crashy\" and (.status == \"INSTANCE_STATUS_RUNNING\" or .status == \"INSTANCE_STATUS_PROVISIONING\"))' >/dev/null" ||
	{
		run any --json instance list
		fail "after the restart the instance never became PROVISIONING or RUNNING"
	}

run 0 --json instance list
[[ $(jout '.instances | length') == 1 ]] || fail "the store holds $(jout '.instances | length') instances, expected exactly 1"
store_id=$(jout '.instances[0].provisioning_data.instance_id')
[[ -f $T/sim.json ]] || fail "the sim wrote no state file"
live=$(jq '[.instances[] | select(.terminated | not)] | length' "$T/sim.json")
[[ $live == 1 ]] || fail "the sim's state holds $live live instances, expected exactly 1"
sim_id=$(jq -r '[.instances[] | select(.terminated | not)][0].id' "$T/sim.json")
[[ $store_id == "$sim_id" ]] || fail "the store's instance ($store_id) is not the sim's ($sim_id)"

# Stays that way: a few reconcile rounds later there is still one machine.
sleep 1
[[ $(jq '[.instances[] | select(.terminated | not)] | length' "$T/sim.json") == 1 ]] ||
	fail "a second machine appeared after the restart"
log "ok"
