#!/usr/bin/env bash
# Socket directories of a SIGKILLed droverd (and of its SIGKILLed driver)
# are removed by the next droverd that starts; those of a live droverd are
# kept (PROTOCOL.md §12.6). Directory names carry their owner's pid and
# start time, so a reused pid is not taken for the owner.
. "$(dirname "$0")/lib.sh"
need drover-driver-sim

S=$T/s
mkdir -p "$S"
((${#S} <= 48)) || fail "socket base $S is too long for this test"
export TMPDIR=$S

# A live droverd first (every droverd sweeps at start: it would remove the litter made below).
B=$T/b
start_other_droverd "$B"
wait_other_sim "$B"
b_dir=$(dirname "$SIM_SOCK")

A=$T/a
start_other_droverd "$A"
a_pid=$OTHER_PID
wait_other_sim "$A"
a_dir=$(dirname "$SIM_SOCK")
[[ -d $a_dir && $a_dir == "$S"/drover-* ]] || fail "unexpected socket directory $a_dir"
# Both killed at once, as by an OOM killer or a power cut of a container: nobody cleans up.
kill -KILL "$a_pid" "$SIM_PID"
wait_gone "$a_pid" 50 || fail "the first droverd did not die"
wait_gone "$SIM_PID" 50 || fail "its sim driver did not die"
[[ -d $a_dir ]] || fail "no litter was left (the test proves nothing)"

config_header
cat >>"$CONFIG" <<YAML
drivers: {dirs: [$BIN]}
projects:
  - name: main
    backends: [{name: sim, type: sim, config: {state_file: $T/sim.json}}]
YAML
start_droverd
[[ ! -e $a_dir ]] || fail "the killed droverd's socket directory $a_dir is still there"
[[ -S $b_dir/sim.sock ]] || fail "the live droverd's socket directory $b_dir (or its socket) was removed"
grep -Eq "removed [0-9]+ stale socket director(y|ies)" "$LOG" || fail "droverd did not say it removed the stale directory"
# The live droverd still works through that socket.
other_drover "$B" --json offer --gpu H100 >"$T/b-offers" ||
	fail "the live droverd's offers failed"
(($(jq '.offers | length' "$T/b-offers") > 0)) || fail "the live droverd gave no offers"
run 0 --json offer --gpu H100
(($(jout '.offers | length') > 0)) || fail "no offers from this droverd's sim"
log "ok"
