#!/usr/bin/env bash
# Hostile answers beside one healthy sim backend: a driver that ignores its
# deadline and cancellation, one that answers bytes that are no protobuf
# message, one that answers another RPC's message (which parses as offers
# with no type, region or price), and one whose error carries terminal
# escapes, C1 controls and a newline. The healthy backend's offers arrive at
# the deadline, each hostile backend is reported beside them with no offer of
# its own listed, droverd keeps answering, and nothing the drivers said
# reaches the terminal as a control sequence.
. "$(dirname "$0")/lib.sh"
need drover-driver-sim fixture-driver-broken-py

py_driver() { # py_driver TYPE FAULT
	printf '    - {type: %s, path: %s, args: [--fault, %s]}\n' "$1" "$BIN/fixture-driver-broken-py" "$2"
}
py_backend() { # py_backend NAME TYPE
	printf '      - {name: %s, type: %s, config: {project: p, latency_ms: 8000}, secrets: {token: t}}\n' "$1" "$2"
}

config_header
{
	cat <<YAML
drivers:
  dirs: [$BIN]
  offers_timeout_ms: 1500
  commands:
YAML
	py_driver hung ignore-deadline
	py_driver garbage garbage-answer
	py_driver wrongtype wrong-type
	py_driver ugly ugly-error
	cat <<YAML
projects:
  - name: main
    backends:
      - name: good
        type: sim
        config: {state_file: $T/good.json}
YAML
	py_backend hung hung
	py_backend garbage garbage
	py_backend wrongtype wrongtype
	py_backend ugly ugly
} >>"$CONFIG"
start_droverd

# Every backend is known, and its driver is up before the query is timed.
wait_for 30 '[[ $(drover --json driver list 2>/dev/null | jq "[.drivers[] | select(.state == \"DRIVER_STATE_READY\")] | length") -ge 5 ]]' ||
	fail "the five drivers did not all become ready: $(drover driver list 2>&1)"

for round in 1 2; do
	start=$(date +%s%N)
	run 0 --json offer --limit 10000
	ms=$((($(date +%s%N) - start) / 1000000))
	((ms < 6000)) || fail "round $round: offers took $ms ms; the hung backend was not cut at its 1500 ms deadline"
	(($(jout '[.offers[] | select(.backend == "good")] | length') > 0)) || fail "round $round: no offers from the healthy backend"
	[[ $(jout '[.offers[] | select(.backend != "good")] | length') == 0 ]] ||
		fail "round $round: offers from a hostile backend: $(jout '[.offers[] | select(.backend != "good") | .backend] | unique')"
	[[ $(jout '.backends[] | select(.backend == "good") | .code') == OK ]] || fail "round $round: the healthy backend is not OK"
	[[ $(jout '.backends[] | select(.backend == "hung") | .code') == DEADLINE_EXCEEDED ]] ||
		fail "round $round: the hung backend is not DEADLINE_EXCEEDED"
	for b in garbage ugly; do
		c=$(jout --arg b "$b" '.backends[] | select(.backend == $b) | .code')
		[[ -n $c && $c != OK && $c != null ]] || fail "round $round: backend $b is not reported as failed (code '$c')"
	done
done

# droverd still answers everything else, and every driver is still there.
run 0 --json driver list
[[ $(jout '.drivers | length') -ge 5 ]] || fail "driver list lost drivers"
run 0 project list
alive "$DROVERD_PID" || fail "droverd died"

# Human output: the report of each hostile backend, with no control
# character but newline from the drivers' messages (ESC, BEL, C1 CSI).
run 0 offer
contains "$ERR" "backend ugly" "the ugly backend's report"
contains "$ERR" "boom" "the ugly backend's message"
all="$OUT$ERR"
if printf '%s' "$all" | LC_ALL=C grep -q $'[\x01-\x08\x0b-\x1f\x7f]'; then
	fail "a control character reached the terminal: $(printf '%s' "$all" | LC_ALL=C grep -n $'[\x01-\x08\x0b-\x1f\x7f]' | od -c | head -5)"
fi
if printf '%s' "$all" | grep -q $'\u009b' || printf '%s' "$all" | LC_ALL=C grep -q $'\x9b'; then
	fail "a C1 CSI reached the terminal"
fi
run 0 --json offer
printf '%s' "$OUT" | jq -e . >/dev/null || fail "--json output with the ugly message is not JSON"
log "ok"
