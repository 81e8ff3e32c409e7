#!/usr/bin/env bash
# A driver that dies at every start (fixture hs-early-exit) is restarted with
# capped exponential backoff: drover driver list shows the restart count, a
# growing delay and the last error, restarts stay few (no hot loop), and the
# server and its other drivers carry on.
. "$(dirname "$0")/lib.sh"
need drover-driver-sim fixture-driver-hs-early-exit

config_header
cat >>"$CONFIG" <<YAML
drivers:
  dirs: [$BIN]
  commands:
    - type: crashy
      path: $BIN/fixture-driver-hs-early-exit
  restart_backoff_ms: 200
  restart_backoff_max_ms: 3200
projects:
  - name: main
    backends:
      - name: sim
        type: sim
        config: {state_file: $T/sim.json}
      # A driver is started for the backends that need it.
      - name: doomed
        type: crashy
YAML
start_droverd

samples=$T/samples
: >"$samples"
# Six seconds of samples (by the clock, so a loaded machine samples less often, not longer).
end=$(($(date +%s%N) + 6000000000))
while (($(date +%s%N) < end)); do
	drover --json driver list | jq -r '.drivers[] | select(.type == "crashy") | "\(.restarts) \(.backoff_ms) \(.state)"' >>"$samples"
	sleep 0.1
done
log "samples (restarts backoff_ms state): $(sort -u "$samples" | tr '\n' ';')"
[[ -s $samples ]] || fail "driver crashy is not in drover driver list"
max_restarts=$(awk '{ if ($1 > m) m = $1 } END { print m + 0 }' "$samples")
((max_restarts >= 3)) || fail "only $max_restarts restarts in 6 s with a 200 ms first delay"
((max_restarts <= 15)) || fail "$max_restarts restarts in 6 s: the backoff does not grow"
first_delay=$(awk '$2 > 0 { print $2; exit }' "$samples")
max_delay=$(awk '{ if ($2 > m) m = $2 } END { print m + 0 }' "$samples")
[[ -n $first_delay ]] || fail "no restart delay (backoff_ms) was ever shown"
((max_delay > first_delay)) || fail "the restart delay did not grow (first $first_delay ms, max $max_delay ms)"
((max_delay <= 3200)) || fail "the restart delay $max_delay ms exceeds the 3200 ms cap"
grep -q DRIVER_STATE_BACKOFF "$samples" || fail "the crashing driver was never shown in BACKOFF"

# The table shows the state too. The driver spends most of its time in
# backoff, but a listing can land in one of its short restarts: look again.
wait_for 5 'run 0 driver list; [[ $OUT == *crashy*backoff* || $OUT == *backoff*crashy* ]]' ||
	fail "driver list table: expected crashy in backoff, last table: $OUT"
run 0 --json driver list
[[ -n $(jout '.drivers[] | select(.type == "crashy") | .last_error') ]] || fail "no last_error for the crashing driver"

# Everything else works on.
alive "$DROVERD_PID" || fail "droverd died"
run 0 --json offer --gpu H100
(($(jout '.offers | length') > 0)) || fail "the healthy sim backend gave no offers"
log "ok"
