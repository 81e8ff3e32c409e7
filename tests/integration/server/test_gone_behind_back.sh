#!/usr/bin/env bash
# droverd's running check, against a machine changed behind drover's back in
# the sim's state file (as a provider's console would change it):
# - a machine the sim no longer knows (NOT_FOUND) stays running, with the
#   failed check in last_error and marked in the list, until it is back;
# - a machine terminated ends "terminated" with an instance.gone warning, and
#   its name can be used again.
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

# edit_sim JQ-FILTER: rewrites the sim's state file under the sim's own lock,
# as a new file in place, so the sim reads it again at its next call.
edit_sim() {
	flock "$T/sim.json.lock" sh -c "jq --arg id '$iid' --argjson now $(($(date +%s%N) / 1000000)) '$1' \
		'$T/sim.json' >'$T/sim.json.new' && mv '$T/sim.json.new' '$T/sim.json'"
}
cp "$T/sim.json" "$T/sim.json.saved"

log "removing $iid from the sim's state file"
edit_sim 'del(.instances[] | select(.id == $id))'
wait_for 20 "drover --json instance show demo 2>/dev/null | jq -e '.instance.last_error | contains(\"GetInstance: NOT_FOUND\")' >/dev/null" ||
	fail "the failed check of a machine the sim does not know never showed in demo's last_error"
run 0 --json instance show demo
[[ $(jout '.instance.status') == INSTANCE_STATUS_RUNNING ]] ||
	fail "NOT_FOUND decided something: demo is $(jout '.instance.status')"
run 0 instance list
contains "$OUT" "running (see last error)" "instance list while demo's check fails"
log "putting $iid back"
flock "$T/sim.json.lock" sh -c "cp '$T/sim.json.saved' '$T/sim.json.new' && mv '$T/sim.json.new' '$T/sim.json'"
wait_for 20 "drover --json instance show demo 2>/dev/null | jq -e '.instance.last_error == \"\"' >/dev/null" ||
	fail "demo's last_error was not cleared by a good check"
run 0 instance list
[[ $OUT != *"see last error"* ]] || fail "instance list still marks demo after a good check: $OUT"

log "terminating $iid in the sim's state file"
edit_sim '(.instances[] | select(.id == $id)) |= (.terminated = true | .terminated_ms = $now)'
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
