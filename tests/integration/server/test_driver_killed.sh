#!/usr/bin/env bash
# A driver SIGKILLed in the middle of a call: the call fails fast with
# UNAVAILABLE (not at its deadline), the supervisor restarts the driver with
# a new pid, and the next call works.
. "$(dirname "$0")/lib.sh"
need drover-driver-sim

config_header
cat >>"$CONFIG" <<YAML
drivers:
  dirs: [$BIN]
  offers_timeout_ms: 15000
  restart_backoff_ms: 100
projects:
  - name: main
    backends:
      - name: sim
        type: sim
        config: {latency_ms: 4000, state_file: $T/sim.json}
YAML
start_droverd
pid1=$(wait_driver_pid sim) || fail "no pid for the sim driver in drover driver list"

start=$(date +%s%N)
drover --json offer --gpu H100 >"$T/offer1.json" 2>"$T/offer1.err" &
offer_pid=$!
BG_PIDS+=($offer_pid)
sleep 0.7
log "killing the sim driver (pid $pid1) mid-GetOffers"
kill -KILL "$pid1"
set +e
wait "$offer_pid"
offer_rc=$?
set -e
ms=$((($(date +%s%N) - start) / 1000000))
OUT=$(cat "$T/offer1.json")
ERR=$(cat "$T/offer1.err")
[[ $offer_rc == 0 ]] || fail "offer exited $offer_rc; a dead backend must be reported, not fail the query"
[[ $(jout '.backends[] | select(.backend == "sim") | .code') == UNAVAILABLE ]] ||
	fail "the call on the killed driver did not fail with UNAVAILABLE"
contains "$ERR" "UNAVAILABLE" "stderr report of the killed driver"
((ms < 3000)) || fail "the call on the killed driver took $ms ms: it did not fail fast"

wait_for 10 "p=\$(driver_pid sim); [[ \$p =~ ^[0-9]+\$ ]] && ((p > 0 && p != $pid1)) && drover --json driver list | jq -e '.drivers[] | select(.type == \"sim\" and .state == \"DRIVER_STATE_READY\")' >/dev/null" ||
	fail "the sim driver was not restarted with a new pid"
run 0 --json driver list
(($(jout '.drivers[] | select(.type == "sim") | .restarts') >= 1)) || fail "restarts not counted"
[[ -n $(jout '.drivers[] | select(.type == "sim") | .last_error') ]] || fail "the crash left no last_error"

run 0 --json offer --gpu H100
[[ $(jout '.backends[] | select(.backend == "sim") | .code') == OK ]] || fail "the next call after the restart failed"
(($(jout '.offers | length') > 0)) || fail "no offers after the restart"
log "ok"
