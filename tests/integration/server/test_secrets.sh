#!/usr/bin/env bash
# Secrets never appear in droverd's log (drivers' stderr included), in any
# CLI output, or in clear in the store; the admin token never appears in the
# log. Secrets come from the config file, --secret and --secret-file, and go
# through every path that touches a backend: sync, add, invalid add, list,
# offers, instance create/show/terminate, events.
. "$(dirname "$0")/lib.sh"
need drover-driver-sim

S1="cfg-secret-$(openssl rand -hex 12)"
S2="cli-secret-$(openssl rand -hex 12)"
S3="file-secret-$(openssl rand -hex 12)"
printf '%s\n' "$S3" >"$T/s3"

config_header
cat >>"$CONFIG" <<YAML
log_level: debug
drivers:
  dirs: [$BIN]
projects:
  - name: main
    backends:
      - name: fromcfg
        type: sim
        config: {state_file: $T/a.json}
        secrets: {api_key: $S1}
provisioning: {reconcile_interval_ms: 200}
YAML
start_droverd

run 0 backend add --name fromcli --type sim --config "{\"state_file\": \"$T/b.json\"}" --secret "api_key=$S2"
run 0 backend add --name fromfile --type sim --config "{\"state_file\": \"$T/c.json\"}" --secret-file "api_key=$T/s3"
# Refused adds must not echo the secret either: a bad config, an unknown secret name.
run 1 backend add --name invalid --type sim --config '{"capacity": "many"}' --secret "api_key=$S2"
run 1 backend add --name invalid2 --type sim --config '{}' --secret "nosuchsecret=$S3"
contains "$ERR" "/secrets/nosuchsecret" "unknown secret diagnostic"
run 0 backend list
contains "$OUT" "api_key" "backend list shows secret names"
run 0 --json backend list
for b in fromcfg fromcli fromfile; do
	jout --arg b "$b" '.backends[] | select(.name == $b) | .secret_names[]' | grep -qx api_key ||
		fail "secret name api_key of backend $b not listed"
done
run 0 --json offer --gpu H100
run 0 offer --gpu H100
run 0 --json instance create --backend fromcfg --gpu H100 --name s1
run 0 --json instance create --backend fromcli --gpu H100 --name s2
run 0 instance show s1
run 0 --json instance list
run 0 instance terminate s2
run 0 event list --all
run 0 --json event list --all
run 0 driver list
run 0 --json driver list

token=$(cat "$DATA/admin.token")
stop_droverd

for s in "$S1" "$S2" "$S3"; do
	if grep -qF -- "$s" "$LOG"; then
		grep -nF -- "$s" "$LOG" | head -3 >&2
		fail "a secret appears in droverd's log"
	fi
	grep -qF -- "$s" "$CLI_LOG" && fail "a secret appears in CLI output"
	# Encrypted at rest: not in clear in any file of the data directory.
	if grep -rqF -D skip -- "$s" "$DATA"; then
		fail "a secret is stored in clear in $(grep -rlF -D skip -- "$s" "$DATA" | head -1)"
	fi
done
grep -qF -- "$token" "$LOG" && fail "the admin token appears in droverd's log"
grep -qF -- "$token" "$CLI_LOG" && fail "the admin token appears in CLI output"
# The test can fail: the secret did reach the server (the names are listed).
grep -q api_key "$CLI_LOG" || fail "the CLI log does not hold the listings this test greps"
[[ $(stat -c %a "$DATA/admin.token") == 600 ]] || fail "the admin token file is not 0600"
log "ok"
