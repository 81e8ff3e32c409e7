#!/usr/bin/env bash
# The ssh driver end to end under a real droverd, with config/examples/ssh.yaml
# (its hosts and key replaced by this test's sshd hosts): `drover instance
# create --name box` claims a host, the key given at create logs in with the
# real ssh client, after terminate it does not and the host is offered
# again. Then faults: kill -9 of droverd in the middle of a create (exactly
# one claim, found again by its key) and two droverds racing for one host
# (exactly one wins).
. "$(dirname "$0")/../server/lib.sh"
. "$(dirname "$0")/sshd_hosts.sh"
sshd_hosts_require
need drover-driver-ssh
trap 'rc=$?; sshd_hosts_stop; (exit $rc); cleanup' EXIT

sshd_hosts_start 2 gpu ""
ssh-keygen -q -t ed25519 -N '' -C user@laptop -f "$T/user_key"

# ssh.yaml with this test's hosts, data dir and key; `setup` made slow ($1 seconds) for the crash test.
write_config() {
	local data=$1 sock=$2 setup_sleep=${3:-0}
	python3 - "$SRC/config/examples/ssh.yaml" "$SSHH_KEY" "$BIN" "$data" "$sock" "$setup_sleep" \
		"${SSHH_ADDR[0]}" "${SSHH_PORT[0]}" "${SSHH_USER[0]}" "${SSHH_HOSTKEY[0]}" \
		"${SSHH_ADDR[1]}" "${SSHH_PORT[1]}" "${SSHH_USER[1]}" "${SSHH_HOSTKEY[1]}" <<'PY'
import re, sys
src, key, bindir, data, sock, sleep = sys.argv[1:7]
hosts = [sys.argv[7:11], sys.argv[11:15]]
out, skip = [], False
for line in open(src):
    if skip:
        if "-----END" in line:
            skip = False
        continue
    m = re.match(r"(\s*)- \{address: (192\.0\.2\.1[01]),", line)
    if m:
        a, p, u, k = hosts[int(m.group(2)[-1])]
        line = '%s- {address: %s, port: %s, user: %s, host_key: "%s"}\n' % (m.group(1), a, p, u, k)
    elif line.startswith("listen:"):
        line = "listen: {unix: %s}\n" % sock
    elif line.startswith("data_dir:"):
        line = "data_dir: %s\n" % data
    elif line.strip().startswith("dirs: [./build/bin]"):
        line = line.replace("./build/bin", bindir)
    elif line.strip().startswith("reconcile_interval_ms"):
        line = line.replace("1000", "200")
    elif re.match(r"\s*echo \"claimed by drover", line):
        line = line.rstrip("\n") + "; sleep %s\n" % sleep
    elif "-----BEGIN OPENSSH PRIVATE KEY-----" in line:
        indent = line[: len(line) - len(line.lstrip())]
        out.extend(indent + l + "\n" for l in open(key).read().splitlines())
        skip = True
        continue
    out.append(line)
sys.stdout.write("".join(out))
PY
}
mkdir -p "$DATA"
write_config "$DATA" "$DATA/droverd.sock" >"$CONFIG"
grep -q "address: 192.0.2" "$CONFIG" && fail "the example's hosts were not all replaced: $(cat "$CONFIG")"
start_droverd

echo "[${SSHH_ADDR[0]}]:${SSHH_PORT[0]} ${SSHH_HOSTKEY[0]}" >"$T/known"
echo "[${SSHH_ADDR[1]}]:${SSHH_PORT[1]} ${SSHH_HOSTKEY[1]}" >>"$T/known"
ussh() { # ussh PORT USER@ADDR: the user's real ssh with the key given at create
	ssh -i "$T/user_key" -p "$1" -o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes \
		-o UserKnownHostsFile="$T/known" -o ConnectTimeout=10 "$2" true
}

run 0 --json offer --gpu H100:8
[[ $(jout '[.offers[] | select(.backend == "fleet")] | length') == 1 ]] || fail "no 8 x H100 offer from the fleet: $OUT"

log "create box on the GPU host"
run 0 --json instance create --name box --gpu H100:8 --ssh-key "@$T/user_key.pub" --wait
[[ $(jout .instance.status) == INSTANCE_STATUS_RUNNING ]] || fail "box is not running: $OUT"
host=$(jout .instance.provisioning_data.hostname)
port=$(jout .instance.provisioning_data.ssh_port)
user=$(jout .instance.provisioning_data.username)
[[ $host == "${SSHH_ADDR[0]}" && $port == "${SSHH_PORT[0]}" && $user == "${SSHH_USER[0]}" ]] ||
	fail "box's address is $user@$host:$port, the GPU host is ${SSHH_USER[0]}@${SSHH_ADDR[0]}:${SSHH_PORT[0]}"
[[ -f ${SSHH_HOME[0]}/.drover/claim ]] || fail "no claim on the GPU host"
ussh "$port" "$user@$host" || fail "ssh -i <the key given at create> -p $port $user@$host true failed"
run 0 --json offer --gpu H100:8
[[ $(jout '[.offers[] | select(.backend == "fleet")][0].offer.availability') == AVAILABILITY_NOT_AVAILABLE ]] ||
	fail "the claimed host is still offered as available: $OUT"

log "terminate box"
run 0 instance terminate box --wait
if ussh "$port" "$user@$host" 2>/dev/null; then
	fail "the key still logs in after terminate"
fi
[[ ! -e ${SSHH_HOME[0]}/.drover/claim ]] || fail "the claim is still on the host after terminate"
run 0 --json offer --gpu H100:8
[[ $(jout '[.offers[] | select(.backend == "fleet")][0].offer.availability') == AVAILABILITY_AVAILABLE ]] ||
	fail "the host is not offered again: $OUT"

log "kill -9 of droverd in the middle of a create"
stop_droverd
write_config "$DATA" "$DATA/droverd.sock" 3 >"$CONFIG"
start_droverd
drover instance create --gpu H100:8 --name crashy >"$T/create.out" 2>"$T/create.err" &
create_pid=$!
BG_PIDS+=($create_pid)
# The claim is on the host and the setup script is still running: now.
wait_for 20 "[[ -f ${SSHH_HOME[0]}/.drover/claim ]]" || fail "the create never claimed the host"
kill -KILL "$DROVERD_PID"
wait "$DROVERD_PID" 2>/dev/null || true
DROVERD_PID=
wait "$create_pid" 2>/dev/null || true
# The scripts on the host ignore the dropped connection: the claim stays, whole.
key_before=$(jq -r .idempotency_key "${SSHH_HOME[0]}/.drover/claim") || fail "the claim is gone or torn after the kill"
id_before=$(jq -r .instance_id "${SSHH_HOME[0]}/.drover/claim")
start_droverd
wait_for 40 "drover --json instance list 2>/dev/null | jq -e '.instances[] | select(.name == \"crashy\" and .status == \"INSTANCE_STATUS_RUNNING\")' >/dev/null" ||
	{
		run any --json instance list
		fail "after the restart crashy never became RUNNING: $OUT"
	}
run 0 --json instance show crashy
[[ $(jout .instance.provisioning_data.instance_id) == "$id_before" ]] ||
	fail "droverd's crashy is $(jout .instance.provisioning_data.instance_id), the host's claim $id_before"
claims() { # the number of claims on the hosts
	local n=0 i
	for i in 0 1; do
		[[ -f ${SSHH_HOME[i]}/.drover/claim ]] && n=$((n + 1))
	done
	echo "$n"
}
claims=$(claims)
[[ $claims == 1 ]] || fail "$claims claims on the hosts after the crash, expected exactly 1"
[[ $(jq -r .idempotency_key "${SSHH_HOME[0]}/.drover/claim") == "$key_before" ]] || fail "the claim changed hands"
# Found by its key: the restarted droverd's create with the same key met the claim (held) and took it
# over (the keys put back: the second round trip), rather than making another.
grep -q "instance $id_before holds host .*(2 SSH round trips)" "$LOG" ||
	fail "the restarted droverd did not find the claim by its idempotency key"

run 0 instance terminate crashy --wait
stop_droverd

log "two droverds race for one host"
cfg2=$T/droverd2.yaml
write_config "$DATA" "$DATA/droverd.sock" >"$CONFIG"
mkdir -p "$T/data2"
write_config "$T/data2" "$T/data2/droverd.sock" >"$cfg2"
start_droverd
"$BIN/droverd" --config "$cfg2" >>"$T/droverd2.log" 2>&1 &
d2=$!
BG_PIDS+=($d2)
drover2() { "$BIN/drover" --server "unix:$T/data2/droverd.sock" --token-file "$T/data2/admin.token" "$@"; }
wait_for 15 "drover2 project list >/dev/null 2>&1" || fail "the second droverd did not start"
drover --json instance create --name r1 --gpu H100:8 --max-tries 1 >"$T/r1.out" 2>&1 &
p1=$!
drover2 --json instance create --name r2 --gpu H100:8 --max-tries 1 >"$T/r2.out" 2>&1 &
p2=$!
rc1=0 rc2=0
wait "$p1" || rc1=$?
wait "$p2" || rc2=$?
[[ "$rc1 $rc2" == "0 1" || "$rc1 $rc2" == "1 0" ]] ||
	fail "racing creates exited $rc1 and $rc2; exactly one must win: $(cat "$T/r1.out" "$T/r2.out")"
loser=$T/r2.out
((rc1 == 0)) || loser=$T/r1.out
grep -q RESOURCE_EXHAUSTED "$loser" || fail "the loser did not fail with RESOURCE_EXHAUSTED: $(cat "$loser")"
[[ $(claims) == 1 ]] || fail "not exactly one claim after the race"
kill -TERM "$d2"
wait "$d2" 2>/dev/null || true
log "ok"
