#!/usr/bin/env bash
# The ssh driver's own behaviour against real sshd hosts, RPC by RPC
# (driver_call.py spawns it as droverd does): ValidateConfig's offline and
# connection checks with their field paths, GetOffers from probes (8 x H100
# from the fixture nvidia-smi, one bad host never failing the call, the
# cache), faults (host key mismatch, a host that drops mid-probe, a slow
# host inside and outside its deadline), claims with hostile values that
# must never reach a shell, idempotency, RESOURCE_EXHAUSTED, ListInstances
# by tag, terminate restoring authorized_keys, and two drivers racing for
# one host.
set -euo pipefail
. "$(dirname "$0")/sshd_hosts.sh"
sshd_hosts_require
BIN=${DROVER_BIN:?DROVER_BIN must name the build\'s bin directory}
HERE=$(cd "$(dirname "$0")" && pwd)
trap sshd_hosts_stop EXIT
fail() {
	echo "FAIL [test_driver]: $*" >&2
	[[ -f ${DLOG:-/nonexistent} ]] && tail -n 20 "$DLOG" >&2
	exit 1
}
log() { echo "[test_driver] $*" >&2; }

# Hosts: 0 GPU (and a jump host), 1 plain, 2 with passwordless sudo, 3 drops mid-probe, 4 answers its
# probe after 1.5 s.
sshd_hosts_start 5 gpu,jump "" sudo drop slow=1.5
T=$SSHH_DIR
DLOG=$T/driver.log
# Where an injected command would leave its mark: a path the host's user can write.
PWN=${SSHH_HOME[1]}/pwned
# A port nothing listens on: bind, note, close.
dead_port=$(sshh_free_port 127.0.0.1)

# mkconf FILE HOSTS_JSON [EXTRA_CONFIG_JSON [KEY_FILE]]
mkconf() {
	python3 - "$1" "$2" "${3:-{\}}" "${4:-$SSHH_KEY}" <<'PY'
import json, sys
cfg = {"hosts": json.loads(sys.argv[2])}
cfg.update(json.loads(sys.argv[3]))
json.dump({"config": cfg, "secrets": {"private_key": open(sys.argv[4]).read()}}, open(sys.argv[1], "w"))
PY
}
# dc CONFIG_FILE [DRIVER_ARGS...]: runs the calls on stdin against one driver process; answers on stdout.
dc() {
	/usr/bin/python3 "$HERE/driver_call.py" "$BIN/drover-driver-ssh" "$@" 2>>"$DLOG"
}
# nth N: the Nth answer line (1-based) of $ANS.
nth() { sed -n "${1}p" <<<"$ANS"; }
want_code() { # want_code N CODE WHAT
	local got
	got=$(nth "$1" | jq -r .code)
	[[ $got == "$2" ]] || fail "$3: answered $got, expected $2: $(nth "$1")"
}

good3=$(sshd_hosts_json 0 1 2)
mkconf "$T/good.json" "$good3" '{"placement": "cluster"}'

log "ValidateConfig, offline: field paths"
mkconf "$T/bad.json" "[{\"address\": \"127.0.0.1\", \"user\": \"u\", \"host_key\": \"-----BEGIN OPENSSH PRIVATE KEY-----\\nAAAA\\n-----END OPENSSH PRIVATE KEY-----\"},
 {\"address\": \"127.0.0.1\", \"port\": 70000, \"user\": \"u\", \"host_key\": \"${SSHH_HOSTKEY[0]}\"},
 {\"address\": \"\$(id)\", \"user\": \"u;x\", \"host_key\": \"SHA256:nope\"}]"
ANS=$(dc "$T/bad.json" <<<'{"method": "ValidateConfig", "request": {}}')
diags=$(nth 1 | jq -c '[.response.diagnostics[] | [.fieldPath, .summary]]')
for want in '["/hosts/1/port","value above maximum"]'; do
	[[ $diags == *"$want"* ]] || fail "ValidateConfig of a port 70000 lacks $want: $diags"
done
mkconf "$T/bad.json" "[{\"address\": \"127.0.0.1\", \"user\": \"u\", \"host_key\": \"-----BEGIN OPENSSH PRIVATE KEY-----\\nAAAA\\n-----END OPENSSH PRIVATE KEY-----\"},
 {\"address\": \"\$(id)\", \"user\": \"u;x\", \"host_key\": \"SHA256:nope\"}]"
ANS=$(dc "$T/bad.json" <<<'{"method": "ValidateConfig", "request": {}}')
diags=$(nth 1 | jq -c '[.response.diagnostics[] | [.fieldPath, .summary]]')
for want in '["/hosts/0/host_key","private key in config"]' '["/hosts/1/address","invalid address"]' \
	'["/hosts/1/user","invalid user"]' '["/hosts/1/host_key","invalid host_key"]'; do
	[[ $diags == *"$want"* ]] || fail "ValidateConfig lacks $want: $diags"
done
grep -q "BEGIN OPENSSH PRIVATE KEY" <<<"$ANS" && fail "a diagnostic repeats the pasted private key"
# A private_key in the config (not the secrets) is refused by name.
python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); c["config"]["private_key"]="x"; json.dump(c,open(sys.argv[2],"w"))' \
	"$T/good.json" "$T/pk.json"
ANS=$(dc "$T/pk.json" <<<'{"method": "ValidateConfig", "request": {}}')
[[ $(nth 1 | jq -c '[.response.diagnostics[] | [.fieldPath, .summary]]') == *'["/private_key","secret in config"]'* ]] ||
	fail "a private_key in the config is not refused at /private_key: $(nth 1)"

log "ValidateConfig with the secrets: a connection check per host"
ssh-keygen -q -t ed25519 -N '' -f "$T/stranger_key"
mkconf "$T/check.json" "[$(sshd_hosts_json 0 | tr -d '[]'),
 {\"address\": \"127.0.0.1\", \"port\": $dead_port, \"user\": \"u\", \"host_key\": \"${SSHH_HOSTKEY[0]}\"},
 {\"address\": \"${SSHH_ADDR[1]}\", \"port\": ${SSHH_PORT[1]}, \"user\": \"${SSHH_USER[1]}\", \"host_key\": \"${SSHH_HOSTKEY[2]}\"}]"
ANS=$(dc "$T/check.json" <<<'{"method": "ValidateConfig", "request": {}}')
diags=$(nth 1 | jq -c '[.response.diagnostics[] | [.fieldPath, .summary]]')
[[ $diags == '[["/hosts/1","unreachable"],["/hosts/2","host key mismatch"]]' ]] ||
	fail "ValidateConfig's connection checks: $diags"
got_fp=$(ssh-keygen -l -E sha256 -f "$T/host1/host_key.pub" | cut -d' ' -f2)
[[ $(nth 1 | jq -r '.response.diagnostics[1].detail') == *"$got_fp"* ]] ||
	fail "the host key mismatch does not show the fingerprint got ($got_fp): $(nth 1)"
mkconf "$T/stranger.json" "$(sshd_hosts_json 0)" '{}' "$T/stranger_key"
ANS=$(dc "$T/stranger.json" <<<'{"method": "ValidateConfig", "request": {}}')
[[ $(nth 1 | jq -c '[.response.diagnostics[] | [.fieldPath, .summary]]') == '[["/hosts/0","authentication refused"]]' ]] ||
	fail "a key the host refuses: $(nth 1)"
ANS=$(dc "$T/good.json" <<<'{"method": "ValidateConfig", "request": {}}')
[[ $(nth 1 | jq -r .response.valid) == true ]] || fail "the good config is not valid: $(nth 1)"
# require_sudo: host 2's user has passwordless sudo, hosts 0 and 1's have not (or sudo is not installed).
if command -v sudo >/dev/null; then
	ANS=$(dc "$T/good.json" <<<'{"method": "ValidateConfig", "request": {}, "config": {"require_sudo": true}}')
	[[ $(nth 1 | jq -c '[.response.diagnostics[] | [.fieldPath, .summary]]') == '[["/hosts/0","sudo missing"],["/hosts/1","sudo missing"]]' ]] ||
		fail "require_sudo: $(nth 1)"
fi

log "GetOffers: one offer per host, the GPU host's 8 x H100, the cache"
ANS=$(dc "$T/good.json" <<'CALLS'
{"method": "GetOffers", "request": {}}
{"method": "GetOffers", "request": {}}
{"method": "GetFeatures", "request": {}}
CALLS
)
want_code 1 OK "GetOffers"
[[ $(nth 1 | jq '.response.offers | length') == 3 ]] || fail "3 hosts, offers: $(nth 1)"
gpu=$(nth 1 | jq -c '[.response.offers[].resources.gpus // [] | .[]]')
[[ $gpu == '[{"name":"H100","memoryMib":"81559","vendor":"nvidia","count":8}]' ]] || fail "GPUs offered: $gpu"
[[ $(nth 1 | jq -r '[.response.offers[].availability] | unique | join(",")') == AVAILABILITY_AVAILABLE ]] ||
	fail "free hosts not AVAILABLE: $(nth 1)"
[[ $(nth 1 | jq -r '.response.offers[0].resources.cpuArch') == "$(uname -m)" ]] || fail "cpu arch: $(nth 1)"
# The probe's figures are this machine's (the hosts run on it): CPUs, MemTotal, the home's file system.
res=$(nth 1 | jq -c '.response.offers[0].resources | [.cpus, .memoryMib, .diskMib]')
want=$(jq -cn --argjson c "$(getconf _NPROCESSORS_ONLN)" \
	--arg m "$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024))" \
	--arg d "$(($(df -Pk "${SSHH_HOME[0]}" | awk 'NR == 2 {print $2}') / 1024))" '[$c, $m, $d]')
[[ $res == "$want" ]] || fail "probed [cpus, memory MiB, disk MiB] $res, this machine has $want"
[[ $(nth 1 | jq -r '.response.offers[0].region') == on-prem ]] || fail "default region: $(nth 1)"
warm=$(nth 2 | jq .ms)
log "GetOffers cold $(nth 1 | jq .ms) ms, warm $warm ms"
python3 -c "import sys; sys.exit(0 if float('$warm') < 200 else 1)" || fail "the cached GetOffers took $warm ms"
[[ $(nth 3 | jq -c .response.features) == *FEATURE_MULTINODE* ]] || fail "placement cluster: no MULTINODE: $(nth 3)"

log "GetOffers faults: mismatch, drop mid-probe, unreachable, slow inside and outside the deadline"
mkconf "$T/faults.json" "[$(sshd_hosts_json 0 3 4 | tr -d '[]'),
 {\"address\": \"${SSHH_ADDR[1]}\", \"port\": ${SSHH_PORT[1]}, \"user\": \"${SSHH_USER[1]}\", \"host_key\": \"${SSHH_HOSTKEY[2]}\"},
 {\"address\": \"127.0.0.1\", \"port\": $dead_port, \"user\": \"u\", \"host_key\": \"${SSHH_HOSTKEY[0]}\"}]" \
	'{"probe_timeout_s": 5}'
ANS=$(dc "$T/faults.json" <<<'{"method": "GetOffers", "request": {}}')
want_code 1 OK "GetOffers with four bad hosts of five"
types=$(nth 1 | jq -r '[.response.offers[].instanceType] | sort | join(" ")')
ms=$(nth 1 | jq .ms)
# The good host and the slow one (1.5 s, inside its 5 s) are offered; the others are not, and are logged.
[[ $(nth 1 | jq '.response.offers | length') == 2 ]] || fail "offers with bad hosts: $(nth 1)"
python3 -c "import sys; sys.exit(0 if 1400 <= float('$ms') < 4500 else 1)" || fail "the slow host's probe: $ms ms"
grep -q "host key mismatch" "$DLOG" || fail "the driver log does not say why the mismatched host is not offered"
grep -q "${SSHH_USER[3]}.*dropped\|${SSHH_USER[3]}.*unreachable" "$DLOG" ||
	fail "the driver log does not say why the dropping host is not offered"
# The slow host outside a 1 s probe deadline: the call still answers, in about that time.
mkconf "$T/slow.json" "$(sshd_hosts_json 0 4)" '{"probe_timeout_s": 1}'
ANS=$(dc "$T/slow.json" <<<'{"method": "GetOffers", "request": {}}')
want_code 1 OK "GetOffers with a host slower than its deadline"
ms=$(nth 1 | jq .ms)
[[ $(nth 1 | jq '.response.offers | length') == 1 ]] || fail "the slow host beyond its deadline was offered: $(nth 1)"
python3 -c "import sys; sys.exit(0 if float('$ms') < 1800 else 1)" || fail "the per-host deadline of 1 s took $ms ms"
# And a call deadline shorter than the probe's: answered by then, not after.
ANS=$(dc "$T/slow.json" <<<'{"method": "GetOffers", "request": {}, "config": {"probe_timeout_s": 30}, "timeout_ms": 800}')
ms=$(nth 1 | jq .ms)
python3 -c "import sys; sys.exit(0 if float('$ms') < 1300 else 1)" || fail "a 800 ms call deadline took $ms ms: $(nth 1)"

log "the connection pool: 16 calls at once (16 workers) to one host open at most 4 connections, and reuse them"
# Host 0's sshd logs at DEBUG3, so every login is in its log.
logins() { grep -c "Accepted publickey for ${SSHH_USER[0]}" "$T/host0/sshd.log" || true; }
mkconf "$T/pool.json" "$(sshd_hosts_json 0)"
before=$(logins)
ANS=$(dc "$T/pool.json" --workers 16 <<'CALLS'
{"method": "ListInstances", "request": {}, "parallel": 16}
{"method": "ListInstances", "request": {}, "parallel": 16}
CALLS
)
[[ $(nth 1 | jq -r '.codes | unique | join(",")') == OK && $(nth 2 | jq -r '.codes | unique | join(",")') == OK ]] ||
	fail "concurrent ListInstances: $ANS"
opened=$(($(logins) - before))
((opened >= 1 && opened <= 4)) || fail "32 calls to one host opened $opened connections; the cap is 4"

log "keep-alives on idle pooled connections, and the idle close"
# Host 0's sshd logs the SSH_MSG_IGNOREs it gets and a "Transferred:" line per connection that ends.
ignores() { grep -c "Received SSH2_MSG_IGNORE" "$T/host0/sshd.log" || true; }
closes() { grep -c "^Transferred:" "$T/host0/sshd.log" || true; }
i0=$(ignores) c0=$(closes)
# One call, then the driver idles 2 s: both counts are read then, while it still runs.
{
	echo '{"method": "ListInstances", "request": {}}'
	sleep 2
	echo "$(ignores) $(closes)" >"$T/ka.counts"
	echo '{"method": "ListInstances", "request": {}}'
} | DROVER_SSH_KEEPALIVE_MS=200 DROVER_SSH_IDLE_MS=1200 dc "$T/pool.json" >"$T/ka.out"
read -r i1 c1 <"$T/ka.counts"
((i1 > i0)) || fail "no keep-alive reached the host while its connection idled"
((c1 > c0)) || fail "the idle connection was not closed after DROVER_SSH_IDLE_MS"
[[ $(jq -r .code "$T/ka.out" | sort -u) == OK ]] || fail "calls around the idle close: $(cat "$T/ka.out")"

log "proxy_jump: host 2 through host 0"
jump="${SSHH_USER[0]}@${SSHH_ADDR[0]}:${SSHH_PORT[0]}"
via="{\"address\": \"${SSHH_ADDR[2]}\", \"port\": ${SSHH_PORT[2]}, \"user\": \"${SSHH_USER[2]}\", \"host_key\": \"${SSHH_HOSTKEY[2]}\", \"proxy_jump\": \"$jump\""
mkconf "$T/jump.json" "[$via, \"proxy_jump_host_key\": \"${SSHH_HOSTKEY[0]}\"}]"
mkconf "$T/jumpbad.json" "[$via, \"proxy_jump_host_key\": \"${SSHH_HOSTKEY[1]}\"}]"
mkconf "$T/jumpnokey.json" "[$via}]"
ANS=$(dc "$T/jump.json" <<<'{"method": "GetOffers", "request": {}}')
[[ $(nth 1 | jq -r '.response.offers[0].availability') == AVAILABILITY_AVAILABLE ]] || fail "GetOffers through the jump host: $(nth 1)"
grep -q "target ${SSHH_ADDR[2]} port ${SSHH_PORT[2]}" "$T/host0/sshd.log" ||
	fail "the jump host's sshd opened no channel to host 2: the driver went around it"
ANS=$(dc "$T/jumpbad.json" <<<'{"method": "ValidateConfig", "request": {}}')
[[ $(nth 1 | jq -c '[.response.diagnostics[] | [.fieldPath, .summary]]') == '[["/hosts/0","host key mismatch"]]' ]] ||
	fail "a jump host with another key: $(nth 1)"
[[ $(nth 1 | jq -r '.response.diagnostics[0].detail') == *"jump host"* ]] || fail "the mismatch does not name the jump host: $(nth 1)"
ANS=$(dc "$T/jumpnokey.json" <<<'{"method": "ValidateConfig", "request": {}}')
[[ $(nth 1 | jq -c '[.response.diagnostics[] | [.fieldPath, .summary]]') == '[["/hosts/0/proxy_jump_host_key","missing proxy_jump_host_key"]]' ]] ||
	fail "proxy_jump without its host key: $(nth 1)"

log "CreateInstance with hostile values; same key; another key; list; terminate"
ak_before=$(cat "$T/host1/home/.ssh/authorized_keys")
ssh-keygen -q -t ed25519 -N '' -C user@laptop -f "$T/user_key"
ukey=$(cat "$T/user_key.pub")
evil="\$(touch $PWN) \`touch $PWN\` '; touch $PWN; echo ' \"; touch $PWN; echo \" \$HOME \\\\ x
touch $PWN
"
mkconf "$T/one.json" "$(sshd_hosts_json 1)" \
	"{\"setup\": \"echo setup-ran-as-\$(id -un) > \\\"\$HOME/setup.out\\\"\", \"cleanup\": \"echo bye > \\\"\$HOME/cleanup.out\\\"\"}"
offer=$(jq -n --arg t "host-$(dc "$T/one.json" <<<'{"method": "GetOffers", "request": {}}' | jq -r '.response.offers[0].instanceType' | cut -d- -f2)" '{instanceType: $t}')
python3 - "$evil" "$ukey" "$offer" >"$T/create.calls" <<'PY'
import json, sys
evil, ukey, offer = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
def create(key, keys):
    return {"method": "CreateInstance", "request": {"offer": offer, "instance": {
        "name": "box " + evil + "\nline2", "project": "p;" + evil,
        "sshPublicKeys": keys, "idempotencyKey": key,
        "tags": {"drover-server": "t1", "evil" + evil: evil + "\n"}}}}
k1 = "key-1 " + evil + "\n"
print(json.dumps(create(k1, [ukey])))
print(json.dumps(create(k1, [ukey])))
print(json.dumps(create("key-2", [ukey])))
print(json.dumps(create("key-3", [ukey + " $(touch x)"])))
print(json.dumps(create("key-4", ["ssh-ed25519 AAAA\nevil"])))
print(json.dumps({"method": "ListInstances", "request": {"tags": {"drover-server": "t1"}}}))
print(json.dumps({"method": "ListInstances", "request": {"tags": {"drover-server": "other"}}}))
big = create("key-5", [ukey])
big["request"]["instance"]["name"] = "n" * 9000
print(json.dumps(big))
PY
ANS=$(dc "$T/one.json" <"$T/create.calls")
want_code 1 OK "CreateInstance with hostile name, project, tags and key"
id=$(nth 1 | jq -r .response.data.instanceId)
[[ $id =~ ^ssh-[0-9a-f]{12}-[0-9a-f]{8}$ ]] || fail "instance id '$id'"
want_code 2 OK "CreateInstance again with the same key"
[[ $(nth 2 | jq -r .response.data.instanceId) == "$id" ]] || fail "the same key made another instance: $(nth 2)"
want_code 3 RESOURCE_EXHAUSTED "CreateInstance with another key on a held host"
want_code 4 INVALID_ARGUMENT "a public key with a shell command in its comment"
want_code 5 INVALID_ARGUMENT "a public key with a newline"
[[ $(nth 6 | jq -r '.response.instances | length') == 1 && $(nth 6 | jq -r '.response.instances[0].data.instanceId') == "$id" ]] ||
	fail "ListInstances by tag: $(nth 6)"
[[ $(nth 7 | jq -r '.response.instances | length') == 0 ]] || fail "ListInstances by another tag value: $(nth 7)"
want_code 8 INVALID_ARGUMENT "a name that makes the claim longer than its limit"
d=$(nth 1 | jq -c .response.data)
[[ $(jq -r .hostname <<<"$d") == "${SSHH_ADDR[1]}" && $(jq -r .sshPort <<<"$d") == "${SSHH_PORT[1]}" &&
	$(jq -r .username <<<"$d") == "${SSHH_USER[1]}" && $(jq -r .internalIp <<<"$d") == "${SSHH_ADDR[1]}" &&
	$(jq -r .state <<<"$d") == INSTANCE_STATE_RUNNING ]] || fail "provisioning data: $d"
[[ ! -e $PWN && ! -e $T/host1/home/x ]] || fail "a hostile value ran as a command on the host"
python3 - "$T/host1/home/.drover/claim" "$evil" <<'PY' || fail "the claim on the host does not hold the values exactly"
import json, sys
c = json.loads(open(sys.argv[1]).read())
evil = sys.argv[2]
assert c["idempotency_key"] == "key-1 " + evil + "\n", c
assert c["name"] == "box " + evil + "\nline2", c
assert c["tags"]["evil" + evil] == evil + "\n", c
PY
grep -qxF "$ukey" "$T/host1/home/.ssh/authorized_keys" || fail "the instance's key is not in authorized_keys"
[[ $(cat "$T/host1/home/setup.out") == "setup-ran-as-${SSHH_USER[1]}" ]] || fail "the setup script did not run"
# The key given at create logs in, with the real OpenSSH client.
echo "[${SSHH_ADDR[1]}]:${SSHH_PORT[1]} ${SSHH_HOSTKEY[1]}" >"$T/known"
ussh() {
	ssh -i "$T/user_key" -p "${SSHH_PORT[1]}" -o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes \
		-o UserKnownHostsFile="$T/known" -o ConnectTimeout=10 "${SSHH_USER[1]}@${SSHH_ADDR[1]}" "$@"
}
ussh true || fail "ssh with the instance's key failed"

ANS=$(dc "$T/one.json" <<CALLS
{"method": "GetInstance", "request": {"instanceId": "$id"}}
{"method": "GetOffers", "request": {}}
{"method": "TerminateInstance", "request": {"instanceId": "$id"}}
{"method": "TerminateInstance", "request": {"instanceId": "$id"}}
{"method": "GetInstance", "request": {"instanceId": "$id"}}
{"method": "GetOffers", "request": {}}
{"method": "TerminateInstance", "request": {"instanceId": "ssh-000000000000-00000000"}}
{"method": "TerminateInstance", "request": {"instanceId": "\$(touch $PWN)"}}
CALLS
)
want_code 1 OK "GetInstance"
[[ $(nth 2 | jq -r '.response.offers[0].availability') == AVAILABILITY_NOT_AVAILABLE ]] ||
	fail "a claimed host is offered as available: $(nth 2)"
want_code 3 OK "TerminateInstance"
want_code 4 OK "TerminateInstance again"
want_code 5 NOT_FOUND "GetInstance after terminate"
[[ $(nth 6 | jq -r '.response.offers[0].availability') == AVAILABILITY_AVAILABLE ]] ||
	fail "the released host is not offered again: $(nth 6)"
want_code 7 OK "TerminateInstance of an unknown id"
want_code 8 OK "TerminateInstance of a hostile id"
[[ ! -e $T/host1/home/.drover/claim ]] || fail "the claim is still on the host"
[[ $(cat "$T/host1/home/.ssh/authorized_keys") == "$ak_before" ]] || fail "authorized_keys is not as before the instance"
[[ $(cat "$T/host1/home/cleanup.out") == bye ]] || fail "the cleanup script did not run"
if ussh true 2>/dev/null; then
	fail "the instance's key still logs in after terminate"
fi
[[ ! -e $PWN ]] || fail "a hostile value ran as a command on the host"

log "two drivers race for one host: exactly one wins, five times"
for round in 1 2 3 4 5; do
	racers=()
	for k in a b; do
		jq -cn --argjson o "$offer" --arg k "race-$round-$k" \
			'{method: "CreateInstance", request: {offer: $o, instance: {name: "r", idempotencyKey: $k}}}' \
			>"$T/race.$k.in"
		dc "$T/one.json" <"$T/race.$k.in" >"$T/race.$k" &
		racers+=($!)
	done
	# Only the racers: a bare wait would wait for the sshd hosts too.
	wait "${racers[@]}"
	codes=$(cat "$T/race.a" "$T/race.b" | jq -r .code | sort | tr '\n' ' ')
	[[ $codes == "OK RESOURCE_EXHAUSTED " ]] || fail "race $round: $codes"
	winner=$(cat "$T/race.a" "$T/race.b" | jq -r 'select(.code == "OK") | .response.data.instanceId')
	jq -cn --arg id "$winner" '{method: "TerminateInstance", request: {instanceId: $id}}' | dc "$T/one.json" >/dev/null
done

log "a changed host key is refused at a later connection of the same driver, not only the first"
# One driver process, fed through a fifo, so that the host changes between its two calls.
mkfifo "$T/rekey.in"
dc "$T/one.json" <"$T/rekey.in" >"$T/rekey.out" &
dcpid=$!
exec 7>"$T/rekey.in"
echo '{"method": "ListInstances", "request": {}}' >&7
for ((i = 0; i < 200; i++)); do
	[[ -s $T/rekey.out ]] && break
	sleep 0.05
done
# The pooled connection dies with the old sshd; the next call must connect again.
sshd_hosts_rekey 1
echo '{"method": "ListInstances", "request": {}}' >&7
exec 7>&-
wait "$dcpid"
ANS=$(cat "$T/rekey.out")
want_code 1 OK "ListInstances before the host key changed"
want_code 2 UNAVAILABLE "ListInstances after the host key changed"
[[ $(nth 2 | jq -r .message) == *"host key mismatch"*"$(ssh-keygen -l -E sha256 -f "$T/host1/host_key.pub" | cut -d' ' -f2)"* ]] ||
	fail "the changed key is not named: $(nth 2)"

# The private key never shows in the driver's log.
grep -q "$(sed -n 2p "$SSHH_KEY")" "$DLOG" && fail "the private key is in the driver log"
echo "test_driver: ok"
