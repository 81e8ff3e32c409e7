#!/usr/bin/env bash
# A CreateInstance answer that fails droverd's check is cleaned up by
# observation, not by belief (issue 12 §4-5), with a healthy sim beside a
# driver (broken-sdk --fault create-empty-id-lies) that answers the create
# with an empty id and lies at its first three TerminateInstance calls:
# - while the machine lives, its instance is never closed: it stays
#   "creating" with the look's reason in last_error, and droverd looks again
#   with backoff, warning termination.unconfirmed past the window (1 s here);
# - once the machine is gone and no longer listed, the attempt fails for
#   good, saying it was observed;
# - the sim's creates, offers and `driver list` keep working.
. "$(dirname "$0")/lib.sh"
need drover-driver-sim fixture-driver-broken-sdk

config_header
cat >>"$CONFIG" <<YAML
drivers:
  dirs: [$BIN]
  commands:
    - {type: liar, path: $BIN/fixture-driver-broken-sdk, args: [--fault, create-empty-id-lies, --report-file, $T/liar.state]}
projects:
  - name: main
    backends:
      - {name: sim, type: sim, config: {state_file: $T/sim.json}}
      - {name: liar, type: liar, config: {project: x}}
provisioning: {reconcile_interval_ms: 100, termination_confirm_window_ms: 1000}
YAML
start_droverd

run any --json instance create --backend liar --max-tries 1 --name bad
[[ $(jout '.instance.backend') == liar ]] || fail "bad was made on $(jout '.instance.backend'): $OUT"

# The row is read before the driver's state, so a closed row beside a live
# machine is a machine forgotten while it lived, never a race.
seen_looking=0
for ((i = 0; i < 600; i++)); do
	run 0 --json instance show bad
	status=$(jout '.instance.status')
	err=$(jout '.instance.last_error // ""')
	live=$(grep -c ' live$' "$T/liar.state" || true)
	if [[ $status != INSTANCE_STATUS_CREATING ]]; then
		((live == 0)) || fail "bad is $status while its machine lives: $err; machines: $(cat "$T/liar.state")"
		break
	fi
	if ((live == 1)) && [[ $err == *"TerminateInstance answered OK, ListInstances by its tags still lists"* ]]; then
		seen_looking=1
	fi
	sleep 0.05
done
((seen_looking)) || fail "bad was never seen waiting for its machine's end while the machine lived"
[[ $status == INSTANCE_STATUS_FAILED ]] || fail "bad ended $status, expected failed: $err"
contains "$err" "the CreateInstance answer failed droverd's check" "bad's last error"
contains "$err" "ListInstances by its tags no longer lists it" "bad's last error"
[[ $(wc -l <"$T/liar.state") == 1 ]] || fail "the liar made more than one machine: $(cat "$T/liar.state")"

run 0 --json event list --instance bad
[[ $(jout '[.events[] | select(.kind == "instance.bad_answer" and (.message | contains("instance_id is empty")))] | length') == 1 ]] ||
	fail "expected one instance.bad_answer event naming the empty id: $OUT"
# One look per lie, each after a growing wait, then the end.
[[ $(jout '[.events[] | select(.kind == "instance.attempt_uncertain" and (.message | contains("not observed yet")))] | length') -ge 3 ]] ||
	fail "expected a look at bad's machine per lie: $OUT"
[[ $(jout '[.events[] | select(.kind == "termination.unconfirmed")] | length') == 1 ]] ||
	fail "expected one termination.unconfirmed warning for bad: $OUT"
[[ $(jout '[.events[] | select(.kind == "instance.failed")] | length') == 1 ]] || fail "bad did not fail once: $OUT"

# The healthy backend beside.
run 0 --json instance create --backend sim --name healthy --wait
[[ $(jout '.instance.status') == INSTANCE_STATUS_RUNNING ]] || fail "the sim's create is $(jout '.instance.status')"
run 0 --json offer
[[ $(jout '[.offers[] | select(.backend == "sim")] | length') -gt 0 ]] || fail "no sim offers beside the liar"
run 0 driver list
contains "$OUT" "liar" "driver list"
log "ok"
