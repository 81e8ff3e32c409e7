#!/usr/bin/env bash
# The ssh driver's rows of `make bench`, against real sshd hosts on loopback
# (tests/integration/ssh/sshd_hosts.sh; needs root and openssh-server, else
# one SKIP line):
#   - GetOffers over 20 hosts, cold (a fresh driver, nothing cached), against
#     the slowest single host's probe (each host alone, cold); target <= 1.5x;
#   - GetOffers warm (cached), p50 and p99 of 200 calls; target p50 <= 2 ms;
#   - create -> running: the SSH round trips CreateInstance made (target <= 3)
#     and its time.
# Times are the client's (driver_call.py, a Python gRPC client), so they
# include its own overhead. The hosts share this machine's cores with the
# driver, unlike real hosts.
set -euo pipefail
BUILD=${1:-build}
BIN=$(cd "$BUILD/bin" && pwd)
SRC=$(cd "$(dirname "$0")/../.." && pwd)
export DROVER_BIN=$BIN
N=${SSH_BENCH_HOSTS:-20}
if [[ $(id -u) != 0 || ! -x /usr/sbin/sshd || ! -x $BIN/drover-driver-ssh ]]; then
	echo "ssh driver bench: SKIP (needs root, /usr/sbin/sshd and $BIN/drover-driver-ssh)"
	exit 0
fi
. "$SRC/tests/integration/ssh/sshd_hosts.sh"
trap sshd_hosts_stop EXIT
specs=(gpu)
sshd_hosts_start "$N" "${specs[@]}" >/dev/null
T=$SSHH_DIR
DC="/usr/bin/python3 $SRC/tests/integration/ssh/driver_call.py $BIN/drover-driver-ssh"

mkconf() { # mkconf FILE HOSTS_JSON
	python3 - "$1" "$2" "$SSHH_KEY" <<'PY'
import json, sys
json.dump({"config": {"hosts": json.loads(sys.argv[2])}, "secrets": {"private_key": open(sys.argv[3]).read()}},
          open(sys.argv[1], "w"))
PY
}

slowest=0
for ((i = 0; i < N; i++)); do
	mkconf "$T/one$i.json" "$(sshd_hosts_json "$i")"
	ms=$($DC "$T/one$i.json" <<<'{"method": "GetOffers", "request": {}}' 2>>"$T/driver.log" | jq -r .ms)
	slowest=$(python3 -c "print(max($slowest, $ms))")
done
mkconf "$T/all.json" "$(sshd_hosts_json)"
python3 -c 'import json
print(json.dumps({"method": "GetOffers", "request": {}}))
for _ in range(200): print(json.dumps({"method": "GetOffers", "request": {}}))' >"$T/offers.calls"
$DC "$T/all.json" <"$T/offers.calls" 2>>"$T/driver.log" >"$T/offers.out"
read -r cold n_offers cold_cpu < <(head -n 1 "$T/offers.out" | jq -r '"\(.ms) \(.response.offers | length) \(.driver_cpu_ms)"')
read -r p50 p99 < <(tail -n +2 "$T/offers.out" | jq -s -r '[.[].ms] | sort | "\(.[length / 2 | floor]) \(.[(length * 0.99) | floor])"')

mkconf "$T/c.json" "$(sshd_hosts_json 0)"
cat >"$T/create.calls" <<CALLS
{"method": "GetOffers", "request": {}}
CALLS
type=$($DC "$T/c.json" <"$T/create.calls" 2>>"$T/driver.log" | jq -r '.response.offers[0].instanceType')
jq -cn --arg t "$type" '{method: "CreateInstance", request: {offer: {instanceType: $t}, instance: {name: "bench", idempotencyKey: "bench-1"}}}' >"$T/create.calls"
echo '{"method": "ListInstances", "request": {}}' >>"$T/create.calls"
$DC "$T/c.json" <"$T/create.calls" 2>"$T/create.log" >"$T/create.out"
create_ms=$(head -n 1 "$T/create.out" | jq -r .ms)
trips=$(sed -n 's/.*(\([0-9]*\) SSH round trips).*/\1/p' "$T/create.log")
id=$(head -n 1 "$T/create.out" | jq -r .response.data.instanceId)
jq -cn --arg id "$id" '{method: "TerminateInstance", request: {instanceId: $id}}' | $DC "$T/c.json" >/dev/null 2>&1

ratio=$(python3 -c "print(round($cold / $slowest, 2))")
verdict() { python3 -c "import sys; print('ok' if $1 else 'MISSED')"; }
echo
echo "ssh driver, $(nproc) CPUs, $N sshd hosts on loopback, load average $(cut -d' ' -f1 /proc/loadavg):"
printf '  %-44s %s\n' "GetOffers cold, $N hosts ($n_offers offers)" \
	"$cold ms = ${ratio}x the slowest single host's cold probe ($slowest ms); target <= 1.5x: $(verdict "$ratio <= 1.5")"
printf '  %-44s %s\n' "" "(the driver's own CPU until then, start-up included: $cold_cpu ms; the rest is the hosts' sshd and shells on the same cores)"
printf '  %-44s %s\n' "GetOffers warm (cached), 200 calls" "p50 $p50 ms, p99 $p99 ms; target p50 <= 2 ms: $(verdict "$p50 <= 2")"
printf '  %-44s %s\n' "CreateInstance -> running" "${trips:-?} SSH round trips, $create_ms ms; target <= 3: $(verdict "${trips:-99} <= 3")"
