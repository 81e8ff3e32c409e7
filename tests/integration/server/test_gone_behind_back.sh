#!/usr/bin/env bash
# A running machine terminated behind drover's back (here: in the sim's state
# file, as a provider's console would) is noticed by droverd's running check:
# the instance ends "terminated" with an instance.gone warning, and its name
# can be used again.
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
provisioning: {reconcile_interval_ms: 100, running_check_interval_ms: 300}
YAML
start_droverd

run 0 --json instance create --gpu H100 --name demo --wait
[[ $(jout '.instance.status') == INSTANCE_STATUS_RUNNING ]] || fail "demo is $(jout '.instance.status'), expected running"
iid=$(jout '.instance.provisioning_data.instance_id')

# Under the sim's own lock, a new file in place: the sim reads it again at its next call.
log "terminating $iid in the sim's state file"
now_ms=$(($(date +%s%N) / 1000000))
flock "$T/sim.json.lock" sh -c "jq --arg id '$iid' --argjson now $now_ms \
	'(.instances[] | select(.id == \$id)) |= (.terminated = true | .terminated_ms = \$now)' \
	'$T/sim.json' >'$T/sim.json.new' && mv '$T/sim.json.new' '$T/sim.json'"
[[ $(jq --arg id "$iid" '[.instances[] | select(.id == $id and .terminated)] | length' "$T/sim.json") == 1 ]] ||
	fail "could not mark $iid terminated in the sim's state file"

wait_for 20 "drover --json instance show demo 2>/dev/null | jq -e '.instance.status == \"INSTANCE_STATUS_TERMINATED\"' >/dev/null" || {
	run any --json instance show demo
	fail "demo never became terminated after its machine was terminated behind drover's back: $OUT"
}
run 0 --json event list --instance demo
[[ $(jout '[.events[] | select(.kind == "instance.gone" and (.message | contains("terminated while it was running")))] | length') == 1 ]] ||
	fail "no instance.gone event for demo: $OUT"

# The name is free again.
run 0 --json instance create --gpu H100 --name demo --wait
[[ $(jout '.instance.status') == INSTANCE_STATUS_RUNNING ]] || fail "the second demo is $(jout '.instance.status'), expected running"
[[ $(jout '.instance.provisioning_data.instance_id') != "$iid" ]] || fail "the second demo got the terminated machine $iid"
log "ok"
