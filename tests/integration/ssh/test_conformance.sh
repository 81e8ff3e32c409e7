#!/usr/bin/env bash
# drover-conformance against the ssh driver with three real sshd hosts: one
# with the fixture nvidia-smi (8 x H100), its host_key from the driver's own
# `keyscan`; one given by its SHA256 fingerprint (ssh-keygen -l); one by its
# public key line.
set -euo pipefail
. "$(dirname "$0")/sshd_hosts.sh"
sshd_hosts_require
BIN=${DROVER_BIN:?DROVER_BIN must name the build\'s bin directory}
trap sshd_hosts_stop EXIT
fail() {
	echo "FAIL [test_conformance]: $*" >&2
	exit 1
}

sshd_hosts_start 3 gpu "" ""
scanned=$("$BIN/drover-driver-ssh" keyscan "${SSHH_ADDR[0]}:${SSHH_PORT[0]}") || fail "keyscan failed"
[[ $scanned == "${SSHH_HOSTKEY[0]}" ]] || fail "keyscan printed '$scanned', the host's key is '${SSHH_HOSTKEY[0]}'"
SSHH_HOSTKEY[0]=$scanned
SSHH_HOSTKEY[1]=$(ssh-keygen -l -E sha256 -f "$SSHH_DIR/host1/host_key.pub" | cut -d' ' -f2)
[[ ${SSHH_HOSTKEY[1]} == SHA256:* ]] || fail "ssh-keygen -l printed '${SSHH_HOSTKEY[1]}'"

conf=$SSHH_DIR/conformance.json
python3 - "$SSHH_KEY" "$(sshd_hosts_json)" >"$conf" <<'PY'
import json, sys
print(json.dumps({
    "config": {"hosts": json.loads(sys.argv[2]), "placement": "cluster"},
    "secrets": {"private_key": open(sys.argv[1]).read()},
    "params": {
        "offer_requirements": {"cpus": {"min": 1}},
        "name_prefix": "conf-",
        "call_timeout_ms": 20000,
        "handshake_timeout_ms": 5000,
        "short_deadline_ms": 100,
        "recovery_ms": 1000,
        "shutdown_grace_ms": 3000,
        "invalid_config_field": {"probe_ttl_s": -1},
    },
}))
PY
out=$SSHH_DIR/conformance.out
rc=0
"$BIN/drover-conformance" --config "$conf" --driver "$BIN/drover-driver-ssh" >"$out" 2>&1 || rc=$?
grep -E '^(PASS|FAIL|SKIP)|passed' "$out"
((rc == 0)) || fail "drover-conformance exited $rc; its output: $(tail -n 40 "$out")"
for c in instances.lifecycle instances.idempotent_create instances.key_reuse instances.list config.valid_accepted; do
	grep -q "^PASS $c" "$out" || fail "check $c did not pass"
done
echo "test_conformance: ok"
