#!/usr/bin/env bash
# Hostile CreateInstance answers, each from its own backend, with a healthy
# sim beside (issue 12):
# - an empty id, a (nearly) 1 MiB id and another live machine's id are stored
#   nowhere; each create fails naming the backend and the check, and the
#   machine the driver made is terminated (its own state file says so);
# - 70 instances as big as droverd's caps allow (64 KiB of backend_data
#   each, 4.5 MiB in all) list in tables and JSON, over more than one page;
# - the sim's creates and offers work throughout.
. "$(dirname "$0")/lib.sh"
need drover-driver-sim fixture-driver-broken-sdk

fx=$BIN/fixture-driver-broken-sdk
config_header
cat >>"$CONFIG" <<YAML
drivers:
  dirs: [$BIN]
  commands:
    - {type: h-empty, path: $fx, args: [--fault, create-empty-id, --report-file, $T/h-empty.state]}
    - {type: h-huge, path: $fx, args: [--fault, create-huge-id, --report-file, $T/h-huge.state]}
    - {type: h-dup, path: $fx, args: [--fault, create-dup-id, --report-file, $T/h-dup.state]}
    - {type: h-big, path: $fx, args: [--fault, big-answers, --report-file, $T/h-big.state]}
projects:
  - name: main
    backends:
      - {name: sim, type: sim, config: {state_file: $T/sim.json}}
      - {name: empty, type: h-empty, config: {project: x}}
      - {name: huge, type: h-huge, config: {project: x}}
      - {name: dup, type: h-dup, config: {project: x}}
      - {name: big, type: h-big, config: {project: x}}
YAML
start_droverd

# live_machines FILE: how many machines the fixture holds alive.
live_machines() { grep -c ' live$' "$1" || true; }
machines() { wc -l <"$1"; }

# bad_create BACKEND CHECK: the create fails naming the backend and the check; nothing is stored.
bad_create() {
	run 1 --json instance create --backend "$1" --max-tries 1 --name "bad-$1"
	[[ $(jout '.instance.status') == INSTANCE_STATUS_FAILED ]] || fail "the create on $1 is $(jout '.instance.status')"
	local err
	err=$(jout '.instance.last_error')
	contains "$err" "backend $1" "last_error of the create on $1"
	contains "$err" "failed droverd's check ($2" "last_error of the create on $1"
	contains "$err" "the machine it made was terminated" "last_error of the create on $1"
	[[ $(jout '.instance.provisioning_data // {} | length') == 0 ]] ||
		fail "the create on $1 stored provisioning data: $(jout '.instance.provisioning_data')"
}

bad_create empty "instance_id is empty"
[[ $(machines "$T/h-empty.state") == 1 && $(live_machines "$T/h-empty.state") == 0 ]] ||
	fail "the machine of the empty-id create was not terminated: $(cat "$T/h-empty.state")"
bad_create huge "instance_id is 1044480 bytes long, at most 256"
[[ $(machines "$T/h-huge.state") == 1 && $(live_machines "$T/h-huge.state") == 0 ]] ||
	fail "the machine of the huge-id create was not terminated: $(cat "$T/h-huge.state")"

run 0 --json instance create --backend dup --max-tries 1 --name first
[[ $(jout '.instance.status') == INSTANCE_STATUS_RUNNING ]] || fail "the first create on dup is $(jout '.instance.status')"
first=$(jout '.instance.id')
first_mid=$(jout '.instance.provisioning_data.instance_id')
bad_create dup "instance_id names the machine of instance $first"
[[ $(machines "$T/h-dup.state") == 2 && $(live_machines "$T/h-dup.state") == 1 ]] ||
	fail "dup's machines: $(cat "$T/h-dup.state")"
grep -q "^$first_mid .* live$" "$T/h-dup.state" || fail "the first machine on dup is not the live one: $(cat "$T/h-dup.state")"
run 0 --json instance show first
[[ $(jout '.instance.status') == INSTANCE_STATUS_RUNNING ]] || fail "first is $(jout '.instance.status') after the conflict"

# Only one row holds each machine, and no stored id breaks the rules.
run 0 --json instance list
n_bad=$(jout '[.instances[] | .provisioning_data.instance_id // "x" | select(length == 0 or length > 256)] | length')
[[ $n_bad == 0 ]] || fail "$n_bad instance(s) stored with an unusable provider id"
[[ $(jout --arg m "$first_mid" '[.instances[] | select(.provisioning_data.instance_id == $m)] | length') == 1 ]] ||
	fail "machine $first_mid is held by more than one row"

# The healthy backend beside.
run 0 --json instance create --backend sim --name healthy --wait
[[ $(jout '.instance.status') == INSTANCE_STATUS_RUNNING ]] || fail "the sim's create is $(jout '.instance.status')"
run 0 --json offer
[[ $(jout '[.offers[] | select(.backend == "sim")] | length') -gt 0 ]] || fail "no sim offers"

log "creating 70 instances with 64 KiB of backend_data each"
pids=()
for ((i = 0; i < 70; i++)); do
	drover instance create --backend big --max-tries 1 --name "big-$i" >"$T/big-$i.out" 2>&1 &
	pids+=($!)
done
for p in "${pids[@]}"; do
	wait "$p" || fail "a create on big failed: $(cat "$T"/big-*.out | tail -5)"
done

run 0 --json instance list
total=$(jout '.instances | length')
[[ $total == 75 ]] || fail "instance list --json listed $total instances, expected 75"
[[ $(jout '[.instances[].id] | unique | length') == 75 ]] || fail "instance list --json repeats instances"
[[ $(jout '[.instances[] | select(.backend == "big")] | length') == 70 ]] || fail "not all 70 big rows are listed"
# Above 4 MiB of rows: one page could not hold them, so more than one page was followed.
bytes=$(jout '[.instances[] | .provisioning_data.backend_data // "" | length] | add')
((bytes > 5000000)) || fail "the big rows hold $bytes bytes of base64 backend_data, expected more than 5 MB"
# Oldest first, by creation time.
[[ $(jout '[.instances[].created_unix_ms | tonumber] | . == sort') == true ]] || fail "instance list is not sorted by creation time"
run 0 instance list
[[ $(grep -c ' big-[0-9]' <<<"$OUT") == 70 ]] || fail "the table does not list the 70 big rows"
run 0 instance list --all
[[ $(grep -c ' big-[0-9]' <<<"$OUT") == 70 ]] || fail "the table of every project does not list the 70 big rows"
run 0 --json event list --limit 50
[[ $(jout '.events | length') == 50 ]] || fail "event list --limit 50 listed $(jout '.events | length')"
[[ $(jout '[.events[].id | tonumber] | . == sort') == true ]] || fail "event list is not sorted by id"
run 0 event list --limit 50
[[ $(grep -c ' instance\.' <<<"$OUT") -ge 40 ]] || fail "the event table is short: $OUT"
grep -q "larger than max" "$LOG" && fail "droverd's log shows a message over the transport limit"
log "ok"
