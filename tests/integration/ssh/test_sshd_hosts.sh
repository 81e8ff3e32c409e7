#!/usr/bin/env bash
# The ssh tests' hosts themselves: three real sshd processes on distinct
# loopback addresses, each with its own host key and login user, reached by
# the real OpenSSH client with strict host key checking; the GPU host's
# nvidia-smi answers in the real tool's format; stop removes users and all.
set -euo pipefail
. "$(dirname "$0")/sshd_hosts.sh"
sshd_hosts_require
trap sshd_hosts_stop EXIT
fail() {
	echo "FAIL [test_sshd_hosts]: $*" >&2
	exit 1
}

sshd_hosts_start 3 gpu "" ""
known=$SSHH_DIR/known_hosts
for i in 0 1 2; do
	echo "[${SSHH_ADDR[i]}]:${SSHH_PORT[i]} ${SSHH_HOSTKEY[i]}" >>"$known"
done
ssh_to() {
	local i=$1
	shift
	ssh -i "$SSHH_KEY" -p "${SSHH_PORT[i]}" -o BatchMode=yes -o StrictHostKeyChecking=yes \
		-o UserKnownHostsFile="$known" -o ConnectTimeout=10 "${SSHH_USER[i]}@${SSHH_ADDR[i]}" "$@"
}
for i in 0 1 2; do
	got=$(ssh_to "$i" 'id -un; echo "$HOME"') || fail "ssh to host $i (${SSHH_ADDR[i]}) failed"
	[[ $got == "${SSHH_USER[i]}"$'\n'"${SSHH_HOME[i]}" ]] || fail "host $i answered '$got'"
done
[[ ${SSHH_ADDR[0]} != "${SSHH_ADDR[1]}" && ${SSHH_HOSTKEY[0]} != "${SSHH_HOSTKEY[1]}" ]] ||
	fail "hosts 0 and 1 share an address or a host key"
gpus=$(ssh_to 0 nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits)
[[ $(grep -c '^NVIDIA H100 80GB HBM3, 81559$' <<<"$gpus") == 8 ]] || fail "host 0's nvidia-smi printed '$gpus'"
if ssh_to 1 'command -v nvidia-smi' >/dev/null; then
	fail "host 1 has an nvidia-smi on its PATH"
fi
# A host key other than the one known is refused by the real client too.
sed -i "1s|.*|[${SSHH_ADDR[0]}]:${SSHH_PORT[0]} ${SSHH_HOSTKEY[1]}|" "$known"
if ssh_to 0 true 2>/dev/null; then
	fail "ssh accepted host 0 with host 1's key in known_hosts"
fi
users=("${SSHH_USER[@]}")
sshd_hosts_stop
trap - EXIT
for u in "${users[@]}"; do
	if id "$u" >/dev/null 2>&1; then
		fail "user $u still exists after sshd_hosts_stop"
	fi
done
echo "test_sshd_hosts: ok"
