#!/usr/bin/env bash
# Instance creation falls back when the cheapest offer has no capacity: the
# backend sorted first ("a-empty", capacity 0) refuses with
# RESOURCE_EXHAUSTED, the same offer on "b-full" succeeds, and every attempt
# is recorded and shown. With nothing to fall back to, the create fails
# (exit 1) with its attempts.
# The first create asks for --spot-policy auto: the cheapest offers, tried
# first, are spot ones, and the CLI asks for on-demand ones by default.
. "$(dirname "$0")/lib.sh"
need drover-driver-sim

config_header
cat >>"$CONFIG" <<YAML
drivers:
  dirs: [$BIN]
projects:
  - name: main
    backends:
      - name: a-empty
        type: sim
        config: {capacity: 0, state_file: $T/a.json}
      - name: b-full
        type: sim
        config: {capacity: 4, state_file: $T/b.json}
provisioning: {max_tries: 3, reconcile_interval_ms: 200}
YAML
start_droverd

run 0 --json instance create --gpu H100:1 --spot-policy auto --name fb --max-tries 3
[[ $(jout '.instance.backend') == b-full ]] || fail "the instance was not made on b-full"
st=$(jout '.instance.status')
[[ $st == INSTANCE_STATUS_PROVISIONING || $st == INSTANCE_STATUS_RUNNING ]] || fail "status $st after a successful attempt"
n=$(jout '.instance.attempts | length')
((n >= 2)) || fail "expected at least 2 attempts, got $n"
[[ $(jout '.instance.attempts[0].backend') == a-empty ]] || fail "the first attempt was not on a-empty"
[[ $(jout '.instance.attempts[0].code') == RESOURCE_EXHAUSTED ]] || fail "the first attempt did not fail with RESOURCE_EXHAUSTED"
[[ $(jout '.instance.attempts[-1].code') == OK ]] || fail "the last attempt is not OK"
[[ $(jout '.instance.attempts[-1].backend') == b-full ]] || fail "the last attempt is not on b-full"

run 0 instance show fb
contains "$OUT" "RESOURCE_EXHAUSTED" "instance show attempts"
contains "$OUT" "a-empty" "instance show attempts"
contains "$OUT" "b-full" "instance show attempts"

# The instance's events, by name as by id (a name matched no event and listed
# nothing); an unknown instance is NOT_FOUND, not an empty list.
run 0 --json instance show fb
fb_id=$(jout '.instance.id')
run 0 --json event list --instance fb
(($(jout '.events | length') > 0)) || fail "event list --instance NAME lists no events"
[[ $(jout "[.events[] | select(.instance_id != \"$fb_id\")] | length") == 0 ]] ||
	fail "event list --instance fb lists events of another instance"
run 0 --json event list --instance "$fb_id"
(($(jout '.events | length') > 0)) || fail "event list --instance ID lists no events"
run 1 event list --instance no-such-instance
contains "$ERR" "NOT_FOUND" "event list --instance of an unknown instance"
# An after id above INT64_MAX read as -1 in the store, i.e. every event.
run 0 --json event list --all --after 18446744073709551615
[[ $(jout '.events | length') == 0 ]] || fail "event list --after UINT64_MAX lists events"

# Only the empty backend: every try fails, the instance is FAILED, exit 1.
run 1 --json instance create --gpu H100:1 --name nope --backend a-empty --max-tries 2
[[ $(jout '.instance.status') == INSTANCE_STATUS_FAILED ]] || fail "an instance with no capacity anywhere is not FAILED"
[[ $(jout '.instance.attempts | length') == 2 ]] || fail "--max-tries 2 did not make 2 attempts"
[[ $(jout '[.instance.attempts[] | select(.code != "RESOURCE_EXHAUSTED")] | length') == 0 ]] ||
	fail "attempts on a-empty did not all fail with RESOURCE_EXHAUSTED"
[[ -n $(jout '.instance.last_error') ]] || fail "a FAILED instance has no last_error"

# Nothing matches at all: refused, nothing recorded.
run 1 instance create --gpu H100:1 --max-price 0.0001 --name cheap
contains "$ERR" "RESOURCE_EXHAUSTED" "no matching offer"
run 0 --json instance list
[[ $(jout '[.instances[] | select(.name == "cheap")] | length') == 0 ]] || fail "a create with no offer recorded an instance"
log "ok"
