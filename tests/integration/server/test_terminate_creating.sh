#!/usr/bin/env bash
# `drover instance terminate` while the instance's CreateInstance call is
# out (the sim's latency_ms slows every provider call): the request is kept
# on the row, and the machine the create makes is terminated as soon as the
# create ends; asked while the create still looks up offers, the create ends
# FAILED with no driver call. Then droverd is SIGKILLed after the terminate
# was acknowledged: the restarted server resumes the create with the same
# key, finds the one machine, and terminates it.
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
      # Slower still, where several CLI calls must land inside one driver call
      # (the offers lookup, or the create of section 1), even on a loaded machine.
      - name: lazy
        type: sim
        config: {latency_ms: 4000, capacity: 4, state_file: $T/sim.json}
provisioning: {max_tries: 1, reconcile_interval_ms: 200}
YAML
start_droverd

creating() { # NAME: true once the row is written and the driver call is out
	drover --json instance list 2>/dev/null |
		jq -e --arg n "$1" '.instances[] | select(.name == $n and .status == "INSTANCE_STATUS_CREATING")' >/dev/null
}
status_of() { # NAME
	drover --json instance show "$1" | jq -r '.instance.status'
}
sim_machines() { # live|all: this run's machines in the sim's state file
	if [[ $1 == live ]]; then
		jq '[.instances[] | select(.terminated | not)] | length' "$T/sim.json"
	else
		jq '.instances | length' "$T/sim.json"
	fi
}

# create_ended WANT_RC FILE WHAT: the create started in the background
# ($create_pid, output in $T/FILE.out and .err) exits WANT_RC.
create_ended() {
	local rc=0
	wait "$create_pid" || rc=$?
	[[ $rc == "$1" ]] || fail "$3 exited $rc, expected $1: $(cat "$T/$2.out" "$T/$2.err")"
}

# 1. While the create is out.
drover instance create --gpu H100 --spot-policy auto --backend lazy --name brief >"$T/create.out" 2>"$T/create.err" &
create_pid=$!
BG_PIDS+=($create_pid)
wait_for 15 "creating brief" || fail "the instance never reached CREATING"
run 0 instance terminate brief
contains "$OUT" "creating (terminate requested: it follows the create)" "terminate while creating"
run 0 --json instance show brief
[[ $(jout '.instance.status') == INSTANCE_STATUS_CREATING ]] || fail "the row left CREATING before the create ended"
[[ $(jout '.instance.terminate_requested') == true ]] || fail "show --json does not say the terminate is requested"
run 0 instance list
contains "$OUT" "creating (terminate requested)" "instance list while the terminate waits"
# Asking again changes nothing.
run 0 instance terminate brief
contains "$OUT" "terminate requested" "a second terminate while creating"

create_ended 0 create "the create"
grep -q "terminating" "$T/create.out" || fail "the create's answer is not TERMINATING: $(cat "$T/create.out")"
run 0 --timeout 20 instance terminate --wait brief
contains "$OUT" "terminated" "terminate --wait after the create"
[[ $(sim_machines all) == 1 && $(sim_machines live) == 0 ]] ||
	fail "the sim holds $(sim_machines all) machine(s), $(sim_machines live) live; expected 1, none live"
run 0 event list --instance brief
contains "$OUT" "instance.terminate_requested" "the events of the instance"

# 1b. `create --wait` waits until the instance is running: one terminated
# while being created never runs, so the wait fails (it used to exit 0 on the
# create's TERMINATING answer).
drover --timeout 30 instance create --gpu H100 --spot-policy auto --backend slow --name waity --wait >"$T/createw.out" 2>"$T/createw.err" &
create_pid=$!
BG_PIDS+=($create_pid)
wait_for 15 "creating waity" || fail "waity never reached CREATING"
run 0 instance terminate waity
create_ended 1 createw "create --wait of an instance terminated while created"
grep -q "terminat" "$T/createw.err" || fail "create --wait does not say why it failed: $(cat "$T/createw.err")"
wait_for 20 '[[ $(status_of waity) == INSTANCE_STATUS_TERMINATED ]]' || fail "waity is $(status_of waity), not TERMINATED"
[[ $(sim_machines live) == 0 ]] || fail "the sim still holds a live machine after waity's terminate"

# 2. Even earlier: the create is still looking up offers (the sim's latency
# slows GetOffers too), so it has no row yet. Shown pending until then; the
# terminate writes its row FAILED at once, and no driver call is made.
drover instance create --gpu H100 --spot-policy auto --backend lazy --name early --idempotency-key key-early >"$T/create3.out" 2>"$T/create3.err" &
create_pid=$!
BG_PIDS+=($create_pid)
# The create reaches droverd within moments; until then the name is unknown
# (and show used to say NOT_FOUND until the offers were in).
wait_for 10 'capture drover --json instance show early; [[ $RC == 0 ]]' || fail "show of a create looking up offers: exit $RC: $ERR"
[[ $(jout '.instance.status') == INSTANCE_STATUS_PENDING ]] || fail "show while looking up offers: $(jout '.instance.status')"
run 0 --json instance list --status pending
[[ $(jout '[.instances[] | select(.name == "early")] | length') == 1 ]] || fail "instance list --status pending does not list the create looking up offers: $OUT"
run 0 --json instance list
[[ $(jout '.instances[-1].name') == early && $(jout '.instances | length') -ge 3 ]] ||
	fail "instance list does not end with the newest, pending create: $(jout '[.instances[].name] | join(" ")')"
run 0 --json instance list --status running
[[ $(jout '[.instances[] | select(.name == "early")] | length') == 0 ]] || fail "instance list --status running lists a pending create"
run 0 instance terminate early
contains "$OUT" "failed: terminated before any attempt" "terminate while looking up offers"
run 0 --json instance show early
[[ $(jout '.instance.status') == INSTANCE_STATUS_FAILED && $(jout '.instance.terminate_requested') == true ]] ||
	fail "after the terminate, show says $(jout '.instance.status'), terminate_requested $(jout '.instance.terminate_requested')"
run 0 --timeout 20 instance terminate --wait early
contains "$OUT" "failed: terminated before any attempt" "terminate --wait while looking up offers"
create_ended 1 create3 "the create terminated before any attempt"
grep -q "terminated before any attempt" "$T/create3.out" ||
	fail "the create's answer does not say it was terminated: $(cat "$T/create3.out")"
[[ $(status_of early) == INSTANCE_STATUS_FAILED ]] || fail "the instance is $(status_of early), not FAILED"
[[ $(sim_machines all) == 2 ]] || fail "a create terminated while looking up offers reached the sim"

# 2a. The same, with droverd SIGKILLed right after the terminate's answer,
# before the offers are in: the create retried with its key after the
# restart answers the failed row instead of making a machine.
sleep 1.5 # the offers a create fetched serve the creates of the next second
drover instance create --gpu H100 --spot-policy auto --backend lazy --name late --idempotency-key key-late >"$T/create5.out" 2>"$T/create5.err" &
create_pid=$!
BG_PIDS+=($create_pid)
wait_for 10 'capture drover instance terminate late; [[ $RC == 0 ]]' || fail "terminate of late: exit $RC: $ERR"
late_id=$(drover --json instance show late | jq -r '.instance.id')
kill -KILL "$DROVERD_PID"
wait "$DROVERD_PID" 2>/dev/null || true
DROVERD_PID=
wait "$create_pid" 2>/dev/null || true
start_droverd
run 1 --json instance create --gpu H100 --spot-policy auto --backend lazy --name late --idempotency-key key-late
[[ $(jout '.instance.id') == "$late_id" && $(jout '.instance.status') == INSTANCE_STATUS_FAILED ]] ||
	fail "the create retried after the restart answered $(jout '.instance.id') $(jout '.instance.status'), expected $late_id FAILED"
[[ $(sim_machines all) == 2 ]] || fail "the create terminated before the crash reached the sim"

# 2b. The name again: "early" is free (its row failed), so a new create may
# take it. A terminate by name while the new create looks up offers is for
# the new one, not the dead row of the same name (it used to answer that
# row's "failed", and the new create went on to make a machine).
old_early=$(drover --json instance show early | jq -r '.instance.id')
sleep 1.5 # the offers a create fetched serve the creates of the next second
drover instance create --gpu H100 --spot-policy auto --backend lazy --name early >"$T/create4.out" 2>"$T/create4.err" &
create_pid=$!
BG_PIDS+=($create_pid)
wait_for 10 'capture drover instance terminate early; [[ $RC == 0 && $OUT != *"$old_early"* ]]' ||
	fail "terminate of a reused name while its create looks up offers: exit $RC: $OUT $ERR"
contains "$OUT" "failed: terminated before any attempt" "terminate of a reused name while its create looks up offers"
create_ended 1 create4 "the create of the reused name"
grep -q "terminated before any attempt" "$T/create4.out" ||
	fail "the create of the reused name does not say it was terminated: $(cat "$T/create4.out")"
[[ $(sim_machines all) == 2 ]] || fail "a create of a reused name terminated while looking up offers reached the sim"
run 0 --json instance list --status failed
[[ $(jout '[.instances[] | select(.name == "early")] | length') == 2 ]] || fail "expected two failed rows named early"

# 3. Acknowledged, then the server is killed before the create ends.
drover instance create --gpu H100 --spot-policy auto --backend slow --name crashy >"$T/create2.out" 2>"$T/create2.err" &
create_pid=$!
BG_PIDS+=($create_pid)
wait_for 15 "creating crashy" || fail "the second instance never reached CREATING"
run 0 instance terminate crashy
log "killing droverd (pid $DROVERD_PID) with the terminate acknowledged and the create out"
kill -KILL "$DROVERD_PID"
wait "$DROVERD_PID" 2>/dev/null || true
DROVERD_PID=
wait "$create_pid" 2>/dev/null || true

start_droverd
wait_for 30 '[[ $(status_of crashy) == INSTANCE_STATUS_TERMINATED ]]' ||
	fail "after the restart the instance is $(status_of crashy), not TERMINATED"
live=$(sim_machines live)
[[ $live == 0 ]] || fail "the sim still holds $live live machine(s) after the terminate"
log "ok"
