#!/usr/bin/env bash
# A config file's backend whose config its driver refuses is reported at
# start, in droverd's log and its events, with the field path; a valid one is
# not. It used to show only at the first offer or in `backend list`.
. "$(dirname "$0")/lib.sh"
need drover-driver-sim

config_header
cat >>"$CONFIG" <<YAML
drivers:
  dirs: [$BIN]
projects:
  - name: main
    backends:
      - name: badcap
        type: sim
        config: {capacity: "lots", state_file: $T/sim1.json}
      - name: good
        type: sim
        config: {state_file: $T/sim2.json}
YAML
start_droverd
wait_for 10 "grep -q 'backend main/badcap from the config file' '$LOG'" ||
	fail "no warning at start about backend badcap's invalid config"
grep 'backend main/badcap from the config file' "$LOG" | grep -q WARN || fail "the badcap warning is not at WARN level"
grep -q 'backend main/badcap from the config file.*/capacity' "$LOG" || fail "the warning does not name /capacity"
run 0 --json event list
[[ $(jout '[.events[] | select(.kind == "backend.invalid" and .backend == "badcap")] | length') == 1 ]] ||
	fail "no backend.invalid event for badcap"
[[ $(jout '[.events[] | select(.kind == "backend.invalid" and .backend == "good")] | length') == 0 ]] ||
	fail "a backend.invalid event for the valid backend"
log "ok"
