#!/usr/bin/env bash
# A store restored from a backup still finds the machines it pays for
# (issue 12 §6), and a listing is never trusted blindly:
# - a machine droverd made after the backup is adopted at the next start:
#   its signature tag verifies with the data directory's key;
# - a machine planted in the sim's state with droverd's tags and a forged
#   signature is foreign: not adopted, not terminated, shown by
#   `instance list --foreign`;
# - a machine whose row was terminated, listed alive again (a failed or
#   lying termination), goes back to terminating and is terminated again on
#   an observation.
. "$(dirname "$0")/lib.sh"
need drover-driver-sim

config_header
cat >>"$CONFIG" <<YAML
drivers:
  dirs: [$BIN]
projects:
  - name: main
    backends:
      - {name: sim, type: sim, config: {state_file: $T/sim.json}}
provisioning: {reconcile_interval_ms: 100}
YAML
SIM=$T/sim.json
# edit_sim JQ-FILTER [ARGS...]: rewrites the sim's state file under its own lock.
edit_sim() {
	local filter=$1
	shift
	flock "$SIM.lock" sh -c 'jq "$@" "$0" >"$0.new" && mv "$0.new" "$0"' "$SIM" "$@" "$filter"
}

start_droverd
run 0 --json instance create --gpu H100 --name before --wait
a=$(jout '.instance.id')
a_machine=$(jout '.instance.provisioning_data.instance_id')
stop_droverd
mkdir "$T/backup"
cp "$DATA"/drover.db* "$T/backup/"

start_droverd
run 0 --json instance create --gpu H100 --name after --wait
b=$(jout '.instance.id')
b_machine=$(jout '.instance.provisioning_data.instance_id')
stop_droverd

# A forgery: a copy of the new machine with another id, another drover-instance and a made-up signature.
edit_sim '.instances += [.instances[] | select(.id == $m) | .id = "i-forged0001" | .idempotency_key = "forged/1"
	| .tags["drover-instance"] = "i-00000000forged" | .tags["drover-sig"] = "v1-0123456789abcdef0123456789abcdef"]' \
	--arg m "$b_machine"
[[ $(jq '[.instances[] | select(.terminated | not)] | length' "$SIM") == 3 ]] || fail "could not plant the forged machine"

log "restoring the store from the backup taken before $b was made"
rm -f "$DATA"/drover.db*
cp "$T"/backup/drover.db* "$DATA/"
start_droverd
wait_for 30 "drover --json instance show $b >/dev/null 2>&1" || fail "the machine made after the backup ($b) was not adopted"
run 0 --json instance show "$b"
[[ $(jout '.instance.status') == INSTANCE_STATUS_RUNNING ]] || fail "adopted $b is $(jout '.instance.status')"
[[ $(jout '.instance.provisioning_data.instance_id') == "$b_machine" ]] || fail "adopted $b names the wrong machine"
wait_for 10 "drover --json instance list --foreign | jq -e '.total == 1' >/dev/null" ||
	fail "the forged machine is not shown by instance list --foreign"
run 0 --json instance list --foreign
[[ $(jout '.machines[0].instance_id') == i-forged0001 && $(jout '.machines[0].reason') == "the signature does not verify" ]] ||
	fail "instance list --foreign: $OUT"
run 0 --json instance list --all
[[ $(jout '.instances | length') == 2 ]] || fail "expected the two real instances, got $(jout '[.instances[] | .id]')"
[[ $(jq '[.instances[] | select(.id == "i-forged0001" and (.terminated | not))] | length' "$SIM") == 1 ]] ||
	fail "the forged machine was terminated"

log "terminating $a, then making its machine live again behind drover's back"
run 0 instance terminate "$a"
wait_for 20 "drover --json instance show $a | jq -e '.instance.status == \"INSTANCE_STATUS_TERMINATED\"' >/dev/null" ||
	fail "$a never became terminated"
stop_droverd
edit_sim '(.instances[] | select(.id == $m)) |= (.terminated = false)' --arg m "$a_machine"
start_droverd
wait_for 30 "drover --json event list --instance $a | jq -e '[.events[] | select(.kind == \"instance.alive_after_termination\")] | length == 1' >/dev/null" ||
	fail "the live machine of terminated $a was not noticed"
wait_for 20 "drover --json instance show $a | jq -e '.instance.status == \"INSTANCE_STATUS_TERMINATED\"' >/dev/null" ||
	fail "$a was not terminated again"
[[ $(jq --arg m "$a_machine" '[.instances[] | select(.id == $m and .terminated)] | length' "$SIM") == 1 ]] ||
	fail "$a's machine still lives"
run 0 --json event list --instance "$a"
[[ $(jout '[.events[] | select(.kind == "instance.terminated" and (.message | contains("termination confirmed")))] | length') == 2 ]] ||
	fail "$a was not terminated twice on observations: $OUT"
log "ok"
