#!/usr/bin/env bash
# A store made by an earlier release opens, migrates in place, and serves the
# same listings. tests/fixtures/store/schema4/ holds a schema 4 data directory
# (made by make-schema4.sh there with the binaries of commit dbfb75f) and what
# that release's CLI printed for it: `instance list --all --json`,
# `event list --all --json` and `backend list --all --json`.
#
# One row changes legitimately: lied-to is terminating on a backend whose
# driver is missing, so droverd tries TerminateInstance again as soon as it
# starts and with backoff after; each try rewrites its updated_unix_ms,
# termination_tries and last_error (which counts the tries), and once the
# fixture is older than the 10-minute termination window its first try after
# the start raises termination_unconfirmed. Those four fields of that row are
# compared apart (the error's words, not its count);
# the events the tries add come after the stored ones and are left out. Every
# other field of every row is compared as it was.
. "$(dirname "$0")/lib.sh"
need drover-driver-sim
FIX=$SRC/tests/fixtures/store/schema4

mkdir -p "$DATA"
cp "$FIX/drover.db" "$FIX/secret.key" "$DATA/"
chmod 600 "$DATA/drover.db" "$DATA/secret.key"
sed "s|@DATA@|$DATA|g; s|@BIN@|$BIN|g" "$SRC/tests/fixtures/store/droverd.yaml" >"$CONFIG"
start_droverd
version=$(sqlite3 "$DATA/drover.db" 'PRAGMA user_version')
want=$(sed -n 's/^#define SRV_STORE_SCHEMA_VERSION \([0-9]*\)$/\1/p' "$SRC/server/src/srv_store.h")
[[ $version == "$want" ]] || fail "the store is at schema $version after opening, expected $want"
((version > 4)) || fail "the fixture was not migrated (schema $version)"

wait_for 20 "drover --json instance show --project other lied-to | jq -e '.instance.last_error | test(\"no driver for backend type\")' >/dev/null" ||
	fail "lied-to was not looked at by droverd"

# The fields of lied-to that droverd's tries rewrite.
moving='(.instances[] | select(.name == "lied-to")) |= del(.updated_unix_ms, .termination_tries, .last_error, .termination_unconfirmed)'
same() { # same WHAT FILE JQ: the CLI's $OUT and the fixture's FILE agree after JQ
	local got want
	got=$(printf '%s' "$OUT" | jq -S "$3") || fail "$1: cannot read the CLI's JSON"
	want=$(jq -S "$3" "$FIX/$2")
	[[ $got == "$want" ]] || fail "$1 differs from the fixture's: $(diff <(echo "$want") <(echo "$got") | head -40)"
}

run 0 --json instance list --all
same "instance list --all --json" instances.json "$moving"
[[ $(jout '.instances | length') == 5 ]] || fail "expected the fixture's 5 instances: $OUT"
for s in RUNNING TERMINATED FAILED TERMINATING; do
	[[ $(jout "[.instances[] | select(.status == \"INSTANCE_STATUS_$s\")] | length") -ge 1 ]] ||
		fail "no $s instance in the listing"
done
run 0 --json instance show --project other lied-to
contains "$(jout '.instance.last_error')" "TerminateInstance failed" "lied-to's last error"
[[ $(jout '.instance.termination_tries') -ge 1 ]] || fail "lied-to's termination tries: $OUT"

last=$(jq '.events[-1].id' "$FIX/events.json")
run 0 --json event list --all --limit 1000
same "event list --all --json" events.json ".events |= map(select(.id <= $last))"

run 0 --json backend list --all
same "backend list --all --json" backends.json .

# The store keeps working: a create on the config file's sim, and one on
# a-full, whose secret sealed by the earlier release opens for the call and
# which refuses for capacity, as it did.
run 0 --json instance create --cpus 2 --backend sim --name after-migration --wait
[[ $(jout '.instance.status') == INSTANCE_STATUS_RUNNING ]] || fail "after-migration is $(jout '.instance.status')"
run any --json instance create --cpus 2 --backend a-full --name refused-again --max-tries 1 --wait
run 0 --json instance show refused-again
contains "$(jout '.instance.last_error')" "RESOURCE_EXHAUSTED: no capacity" "refused-again's last error"
log "ok"
