#!/usr/bin/env bash
# Starts droverd in the foreground with the shipped config (config/droverd.yaml:
# store and API socket in ./var, drivers from ./build/bin, a project `main`
# with one sim backend). Called by `make run` as: scripts/run.sh BUILD_DIR
set -euo pipefail

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
	sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'
	exit 0
fi
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${1:-build}
config=${DROVER_CONFIG:-config/droverd.yaml}
bin=$build/bin

if [[ ! -x $bin/droverd ]]; then
	# The server is not built (yet): show that the driver side works on its own.
	sim=$bin/drover-driver-sim
	if [[ ! -x $sim ]]; then
		echo "run.sh: neither $bin/droverd nor $sim is built; run 'make build' first" >&2
		exit 1
	fi
	echo "run.sh: $bin/droverd is not built yet; running the sim driver standalone instead," >&2
	echo "run.sh: on 127.0.0.1:4100 (plain gRPC, loopback only). Stop it with Ctrl-C." >&2
	if [[ -x $bin/drover-conformance ]]; then
		echo "run.sh: calling it with $bin/drover-conformance --address 127.0.0.1:4100 --insecure in 1 s" >&2
		(sleep 1 && "$bin/drover-conformance" --address 127.0.0.1:4100 --insecure || true) &
	fi
	exec "$sim" --listen 127.0.0.1:4100
fi

if [[ ! -f $config ]]; then
	echo "run.sh: config file $config not found (set DROVER_CONFIG)" >&2
	exit 1
fi

cat >&2 <<HINT
------------------------------------------------------------------------
droverd is starting in the foreground (Ctrl-C stops it and its drivers).
Config: $config; store, admin token and API socket: ./var
In a second terminal, from $root:

  $bin/drover driver list
  $bin/drover offer --gpu H100
  $bin/drover instance create --gpu H100 --name demo
  $bin/drover instance list
  $bin/drover instance terminate demo

Every command has --help; add --json for scripts.
------------------------------------------------------------------------
HINT
exec "$bin/droverd" --config "$config"
