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

# Starts a droverd of its own on data directory $1 with one sim backend; prints its pid.
start_other() {
	local d=$1
	mkdir -p "$d"
	cat >"$d/droverd.yaml" <<YAML
listen: {unix: $d/droverd.sock}
data_dir: $d
drivers: {dirs: [$BIN]}
projects:
  - name: main
    backends: [{name: sim, type: sim, config: {state_file: $d/sim.json}}]
YAML
	"$BIN/droverd" --config "$d/droverd.yaml" >>"$d/droverd.log" 2>&1 &
	echo $!
}
# The socket directory and pid of the sim driver of the droverd on data directory $1.
sim_of() {
	"$BIN/drover" --server "unix:$1/droverd.sock" --token-file "$1/admin.token" --json driver list 2>/dev/null |
		jq -r '.drivers[] | select(.type == "sim" and .state == "DRIVER_STATE_READY") | "\(.address) \(.pid)"'
}

# A live droverd first (every droverd sweeps at start: it would remove the litter made below).
B=$T/b
b_pid=$(start_other "$B")
BG_PIDS+=("$b_pid")
wait_for 15 '[[ -n $(sim_of "$B") ]]' || fail "the live droverd's sim driver did not start"
read -r b_addr b_sim <<<"$(sim_of "$B")"
b_dir=$(dirname "${b_addr#unix:}")


A=$T/a
a_pid=$(start_other "$A")
BG_PIDS+=("$a_pid")
wait_for 15 '[[ -n $(sim_of "$A") ]]' || fail "the first droverd's sim driver did not start"
read -r a_addr a_sim <<<"$(sim_of "$A")"
a_dir=$(dirname "${a_addr#unix:}")
[[ -d $a_dir && $a_dir == "$S"/drover-* ]] || fail "unexpected socket directory $a_dir"
# Both killed at once, as by an OOM killer or a power cut of a container: nobody cleans up.
kill -KILL "$a_pid" "$a_sim"
wait_gone "$a_pid" 50 || fail "the first droverd did not die"
wait_gone "$a_sim" 50 || fail "its sim driver did not die"
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
"$BIN/drover" --server "unix:$B/droverd.sock" --token-file "$B/admin.token" --json offer --gpu H100 >"$T/b-offers" ||
	fail "the live droverd's offers failed"
(($(jq '.offers | length' "$T/b-offers") > 0)) || fail "the live droverd gave no offers"
run 0 --json offer --gpu H100
(($(jout '.offers | length') > 0)) || fail "no offers from this droverd's sim"
log "ok"
