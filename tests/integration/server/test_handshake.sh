#!/usr/bin/env bash
# Drivers with broken handshakes, configured as explicit commands: one prints
# garbage, one prints nothing. Each gets a clear error naming it in drover
# driver list and in the log; droverd keeps serving, its other drivers too.
. "$(dirname "$0")/lib.sh"
need drover-driver-sim fixture-driver-hs-garbage fixture-driver-hs-silent

config_header
cat >>"$CONFIG" <<YAML
drivers:
  dirs: [$BIN]
  commands:
    - type: garbage
      path: $BIN/fixture-driver-hs-garbage
    - type: silent
      path: $BIN/fixture-driver-hs-silent
  handshake_timeout_ms: 800
  restart_backoff_ms: 2000
projects:
  - name: main
    backends:
      - name: sim
        type: sim
        config: {state_file: $T/sim.json}
      # Drivers are started for the backends that need them.
      - {name: g1, type: garbage}
      - {name: s1, type: silent}
YAML
start_droverd

errs_set="drover --json driver list | jq -e '[.drivers[] | select((.type == \"garbage\" or .type == \"silent\") and .last_error != \"\")] | length == 2' >/dev/null"
wait_for 10 "$errs_set" || {
	run any --json driver list
	fail "the broken drivers did not both get a last_error"
}
run 0 --json driver list
g=$(jout '.drivers[] | select(.type == "garbage") | .last_error')
s=$(jout '.drivers[] | select(.type == "silent") | .last_error')
[[ $(jout '.drivers[] | select(.type == "garbage") | .state') != DRIVER_STATE_READY ]] || fail "the garbage driver is READY"
[[ $(jout '.drivers[] | select(.type == "silent") | .state') != DRIVER_STATE_READY ]] || fail "the silent driver is READY"
[[ ${g,,} == *handshake* ]] || fail "garbage driver error does not mention the handshake: $g"
[[ $g == *hello* ]] || fail "garbage driver error does not quote the garbage line: $g"
[[ ${s,,} == *handshake* ]] || fail "silent driver error does not mention the handshake: $s"
[[ $s == *800* || ${s,,} == *time* ]] || fail "silent driver error does not say it timed out: $s"

run 0 driver list
contains "$OUT" "garbage" "driver list table"
contains "$OUT" "silent" "driver list table"
grep -q garbage "$LOG" || fail "the log does not name the garbage driver"
grep -q silent "$LOG" || fail "the log does not name the silent driver"

alive "$DROVERD_PID" || fail "droverd died"
run 0 --json offer --gpu H100
(($(jout '.offers | length') > 0)) || fail "the healthy sim backend gave no offers"
[[ $(jout '.backends[] | select(.backend == "sim") | .code') == OK ]] || fail "the sim backend is not OK"
log "ok"
