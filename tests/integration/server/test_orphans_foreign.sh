#!/usr/bin/env bash
# Orphans are adopted only when droverd provably made them (issue 12 §6),
# with a healthy sim beside hostile drivers whose ListInstances adds
# made-up machines carrying droverd's tags (broken-sdk --fault list-foreign:
# 12,000 with a forged signature, or 100,000, whose answer is over the
# 8 MiB list_answer_bytes limit; --fault list-unsigned: 20 with none):
# - none becomes a row, none is terminated, and each backend's scan reports
#   them in one orphan.foreign warning;
# - the forger's scan looks at 10,000 machines (orphan_max_listed) and says so;
# - the flooder's answer is refused whole, logged with the limit named;
# - `drover instance list --foreign` shows the last scan's foreign machines
#   (1,000 kept per backend) with the total;
# - the sim's instance, its offers and `driver list` keep working.
. "$(dirname "$0")/lib.sh"
need drover-driver-sim fixture-driver-broken-sdk

config_header
cat >>"$CONFIG" <<YAML
drivers:
  dirs: [$BIN]
  commands:
    - {type: forger, path: $BIN/fixture-driver-broken-sdk, args: [--fault, list-foreign]}
    - {type: unsigner, path: $BIN/fixture-driver-broken-sdk, args: [--fault, list-unsigned]}
    - {type: flooder, path: $BIN/fixture-driver-broken-sdk, args: [--fault, list-foreign]}
projects:
  - name: main
    backends:
      - {name: sim, type: sim, config: {state_file: $T/sim.json}}
      - {name: forger, type: forger, config: {project: x, foreign_instances: 12000}}
      - {name: flooder, type: flooder, config: {project: x, foreign_instances: 100000}}
      - {name: unsigner, type: unsigner, config: {project: x, foreign_instances: 20}}
YAML
start_droverd

run 0 --json instance create --gpu H100 --backend sim --name real --wait
[[ $(jout '.instance.status') == INSTANCE_STATUS_RUNNING ]] || fail "real is $(jout '.instance.status')"
# The first scan runs 5 s after the start; the drivers must be up for it.
run 0 --json offer --cpus 2
for b in forger unsigner; do
	wait_for 30 "drover --json event list --limit 1000 | jq -e '[.events[] | select(.kind == \"orphan.foreign\" and .backend == \"$b\")] | length >= 1' >/dev/null" ||
		fail "no orphan.foreign event for backend $b"
done
run 0 --json event list --limit 1000
jout '[.events[] | select(.kind == "orphan.foreign" and .backend == "forger")][0].message' | grep -q '^10000 machine(s)' ||
	fail "the forger's scan did not look at exactly 10,000 machines: $(jout '[.events[] | select(.kind == "orphan.foreign")]')"
jout '[.events[] | select(.kind == "orphan.foreign" and .backend == "unsigner")][0].message' | grep -q '^20 machine(s)' ||
	fail "the unsigner's scan did not count its 20 machines"
[[ $(jout '[.events[] | select(.kind == "orphan.scan_capped" and .backend == "forger")] | length') -ge 1 ]] ||
	fail "no orphan.scan_capped warning for the forger's 12,000 machines"
[[ $(jout '[.events[] | select(.backend == "flooder" and (.kind | startswith("orphan.") or startswith("instance.")))] | length') == 0 ]] ||
	fail "the flooder's over-limit listing was used: $(jout '[.events[] | select(.backend == "flooder")]')"
wait_for 30 "grep -q 'orphan scan of backend main/flooder failed: .*drivers.limits.list_answer_bytes' '$LOG'" ||
	fail "the flooder's refused listing is not logged with its limit"
[[ $(jout '[.events[] | select(.kind == "instance.orphan_adopted" or .kind == "instance.alive_after_termination")] | length') == 0 ]] ||
	fail "a foreign machine was adopted or terminated: $OUT"

# Nothing foreign became a row: the one instance is the sim's.
run 0 --json instance list --all
[[ $(jout '.instances | length') == 1 && $(jout '.instances[0].name') == real ]] ||
	fail "the store holds more than the sim's instance: $(jout '[.instances[] | .name]')"

# They are shown, so that an operator can act on them.
run 0 --json instance list --foreign
[[ $(jout '.total') == 10020 ]] || fail "instance list --foreign: total $(jout '.total'), expected 10020"
[[ $(jout '[.machines[] | select(.backend == "forger")] | length') == 1000 ]] ||
	fail "instance list --foreign: expected the 1,000 kept of the forger's"
[[ $(jout '[.machines[] | select(.backend == "unsigner" and .reason == "no signature")] | length') == 20 ]] ||
	fail "instance list --foreign: expected the unsigner's 20, unsigned"
[[ $(jout '[.machines[] | select(.backend == "forger")][0].reason') == "the signature does not verify" ]] ||
	fail "the forger's machines are not shown as badly signed"
run 0 instance list --foreign
contains "$OUT" "i-forged-0" "instance list --foreign"
contains "$OUT" "10020 foreign machine(s) in the last scan" "instance list --foreign"
run 2 instance list --foreign --status running
contains "$ERR" "--foreign lists machines" "instance list --foreign --status"
run 2 instance create --foreign --cpus 2
contains "$ERR" "--foreign belongs to 'instance list'" "instance create --foreign"

# The healthy backend keeps working beside them, and its instance is fine.
run 0 --json instance show real
[[ $(jout '.instance.status') == INSTANCE_STATUS_RUNNING ]] || fail "real is $(jout '.instance.status')"
run 0 --json offer --gpu H100
[[ $(jout '[.offers[] | select(.backend == "sim")] | length') -gt 0 ]] || fail "no sim offers: $OUT"
run 0 driver list
hwm=$(awk '/VmHWM/ {print $2}' /proc/"$DROVERD_PID"/status)
log "droverd peak RSS after a 12,000-machine forged listing and a refused 100,000-machine one: $((hwm / 1024)) MB"
log "ok"
