#!/usr/bin/env bash
# Termination is observed, not believed (issue 12 §5), with a healthy sim
# beside a driver whose TerminateInstance lies (broken-sdk --fault
# terminate-lies: OK, and the machine stays RUNNING):
# - the liar's instance stays terminating, is never marked terminated, and
#   past the window (1.5 s here) raises one termination.unconfirmed warning
#   that `instance list` marks "(unconfirmed)";
# - the sim's instance is terminated on an observation (GetInstance
#   TERMINATED), and its offers and `driver list` keep working.
. "$(dirname "$0")/lib.sh"
need drover-driver-sim fixture-driver-broken-sdk

config_header
cat >>"$CONFIG" <<YAML
drivers:
  dirs: [$BIN]
  commands:
    - {type: liar, path: $BIN/fixture-driver-broken-sdk, args: [--fault, terminate-lies]}
projects:
  - name: main
    backends:
      - {name: sim, type: sim, config: {state_file: $T/sim.json}}
      - {name: liar, type: liar, config: {project: x}}
provisioning: {reconcile_interval_ms: 100, termination_confirm_window_ms: 1500}
YAML
start_droverd

run 0 --json instance create --cpus 2 --backend liar --name lied-to --wait
[[ $(jout '.instance.backend') == liar ]] || fail "lied-to was made on $(jout '.instance.backend')"
run 0 --json instance create --gpu H100 --backend sim --name honest --wait
[[ $(jout '.instance.status') == INSTANCE_STATUS_RUNNING ]] || fail "honest is $(jout '.instance.status')"

run 0 instance terminate lied-to
run 0 instance terminate honest

# The sim's machine ends on an observation.
wait_for 20 "drover --json instance show honest | jq -e '.instance.status == \"INSTANCE_STATUS_TERMINATED\"' >/dev/null" ||
	fail "honest never became terminated"
run 0 --json event list --instance honest
[[ $(jout '[.events[] | select(.kind == "instance.terminated" and (.message | contains("GetInstance reports TERMINATED")))] | length') == 1 ]] ||
	fail "honest's termination was not confirmed by an observation: $OUT"

# The liar's: never terminated, and unconfirmed once the window has passed.
wait_for 20 "drover --json instance show lied-to | jq -e '.instance.termination_unconfirmed == true' >/dev/null" || {
	run any --json instance show lied-to
	fail "lied-to never became termination_unconfirmed: $OUT"
}
run 0 --json instance show lied-to
case $(jout '.instance.status') in
INSTANCE_STATUS_TERMINATING | INSTANCE_STATUS_TERMINATION_FAILING) ;;
*) fail "lied-to is $(jout '.instance.status'): a lying TerminateInstance was believed" ;;
esac
contains "$(jout '.instance.last_error')" "GetInstance still reports RUNNING" "lied-to's last error"
run 0 instance list
contains "$OUT" "(unconfirmed)" "instance list while lied-to's termination is unconfirmed"
run 0 instance show lied-to
contains "$OUT" "termination:      unconfirmed" "instance show lied-to"
run 0 --json event list --instance lied-to
[[ $(jout '[.events[] | select(.kind == "termination.unconfirmed" and .level == "EVENT_LEVEL_WARNING")] | length') == 1 ]] ||
	fail "expected one termination.unconfirmed warning for lied-to: $OUT"
[[ $(jout '[.events[] | select(.kind == "instance.terminated")] | length') == 0 ]] ||
	fail "lied-to has an instance.terminated event: $OUT"

# droverd keeps asking, with backoff: a few seconds later it is still not terminated.
sleep 2
run 0 --json instance show lied-to
[[ $(jout '.instance.status') != INSTANCE_STATUS_TERMINATED ]] || fail "lied-to ended terminated"
[[ $(jout '.instance.last_error') =~ check\ ([0-9]+) ]] && ((BASH_REMATCH[1] >= 3)) ||
	fail "lied-to was not checked again and again: $(jout '.instance.last_error')"

# The healthy backend keeps working beside the liar.
run 0 --json offer --gpu H100
[[ $(jout '[.offers[] | select(.backend == "sim")] | length') -gt 0 ]] || fail "no sim offers beside the liar: $OUT"
run 0 driver list
contains "$OUT" "liar" "driver list"
log "ok"
