#!/usr/bin/env bash
# Driver logs are bounded (PROTOCOL.md §12.7). One hostile driver floods its
# stderr with short lines for 8 s (fixture broken-sdk, --fault stderr-flood),
# another writes a 200 MiB line without a newline (stderr-long-line), beside
# a healthy sim backend. droverd drains both pipes, passes 1,000 lines/s per
# driver and counts the rest in "N lines dropped" lines, cuts the long line
# at 16 KiB, and keeps its own log file under its cap by rotating it. During
# the flood the sim's offers arrive, drover driver list answers, and
# droverd's CPU stays modest: it reads a driver's stderr at up to 64 MiB/s.
. "$(dirname "$0")/lib.sh"
need drover-driver-sim fixture-driver-broken-sdk

LOGF=$T/droverd-file.log
MAX=1048576
config_header
cat >>"$CONFIG" <<YAML
log: {file: $LOGF, max_bytes: $MAX, keep: 2}
drivers:
  dirs: [$BIN]
  commands:
    - {type: flood, path: $BIN/fixture-driver-broken-sdk, args: [--fault, stderr-flood]}
    - {type: longline, path: $BIN/fixture-driver-broken-sdk, args: [--fault, stderr-long-line]}
projects:
  - name: main
    backends:
      - name: sim
        type: sim
        config: {state_file: $T/sim.json}
      - {name: flooder, type: flood, config: {project: p}}
      - {name: longliner, type: longline, config: {project: p}}
YAML
start_droverd
# droverd's log is the file now; show it when the test fails.
LOG=$LOGF

wait_for 20 "grep -q 'stderr-flood: starting' $LOGF" || fail "the flood did not start"
cpu() { awk '{ print $14 + $15 }' "/proc/$DROVERD_PID/stat"; }
hz=$(getconf CLK_TCK)
t0=$(date +%s%N)
c0=$(cpu)
# While it floods: the healthy backend's offers arrive and driver list answers.
run 0 --json offer --gpu H100
[[ $(jout '.backends[] | select(.backend == "sim") | .code') == OK ]] || fail "the sim backend is not OK during the flood"
(($(jout '[.offers[] | select(.backend == "sim")] | length') > 0)) || fail "no sim offers during the flood"
run 0 --json driver list
wait_for 10 "drover --json driver list | jq -e '.drivers[] | select(.type == \"flood\") | .state == \"DRIVER_STATE_READY\"' >/dev/null" ||
	fail "the flooding driver is not READY"
# A window of 3 s of the flood for droverd's CPU share.
while (($(date +%s%N) - t0 < 3000000000)); do sleep 0.2; done
c1=$(cpu)
t1=$(date +%s%N)
! grep -q 'stderr-flood: done' "$LOGF"* || fail "the flood was over before the checks were (too slow a machine for this test?)"
cpu_pct=$(((c1 - c0) * 100 * 1000000000 / hz / (t1 - t0)))
log "droverd's CPU during the flood: ${cpu_pct}% of one core"

wait_for 30 "grep -q 'stderr-flood: done' $LOGF" || fail "the flood's last line never reached the log"
wait_for 30 "grep -q 'stderr-long-line: done' $LOGF*" || fail "the long line's last line never reached the log"
flood_bytes=$(grep -o 'stderr-flood: done, [0-9]*' "$LOGF" | grep -o '[0-9]*$')
log "the flood wrote $flood_bytes bytes; droverd's log: $(du -cb "$LOGF"* | tail -1 | cut -f1) bytes in $(ls "$LOGF"* | wc -l) files"

# The dropped lines are counted, the long line is cut, and each file stays under its cap.
grep -q '\[driver:flood\] [0-9]* lines dropped' "$LOGF"* || fail "no 'lines dropped' line for the flooding driver"
grep -q '\[driver:longline\] long line:xxxx.*\[cut: the line is longer than 16384 bytes\]' "$LOGF"* ||
	fail "the long line was not cut with a marker"
[[ ! -e $LOGF.3 ]] || fail "more than keep: 2 old log files"
total=0
for f in "$LOGF" "$LOGF".1 "$LOGF".2; do
	[[ -e $f ]] || continue
	n=$(stat -c %s "$f")
	((n <= MAX)) || fail "$f has $n bytes, over max_bytes $MAX"
	total=$((total + n))
done
((flood_bytes > 20 * total)) || fail "the flood ($flood_bytes bytes) was not much bigger than the log ($total bytes): the test proves nothing"
# 1,000 lines/s of ~100 bytes for ~10 s, plus the cut line: far below what was written.
longest=$(awk '{ if (length($0) > m) m = length($0) } END { print m }' "$LOGF"*)
((longest < 17000)) || fail "a log line of $longest bytes"
((cpu_pct < 30)) || fail "droverd used ${cpu_pct}% of a core during the flood"

# Both drivers still serve, and so does the sim.
run 0 --json offer --gpu H100
for b in sim flooder longliner; do
	[[ $(jout ".backends[] | select(.backend == \"$b\") | .code") == OK ]] || fail "backend $b is not OK after the flood"
done
log "ok"
