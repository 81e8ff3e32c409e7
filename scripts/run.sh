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

# The data directory droverd uses: the config's data_dir (./var in the
# shipped one), else droverd's default ./var; for the record below.
data=$(sed -n 's/^data_dir:[[:space:]]*//p' "$config" | head -1 | sed 's/[[:space:]]*#.*//; s/^["'\'']//; s/["'\'']$//')
data=${data:-./var}
[[ $data == /* ]] || data=$root/${data#./}

# Records that directory for this user, so that the drover CLI finds this
# server from any directory (see drover --help). Written here, not by
# droverd: droverd also runs in tests, containers and services, many at a
# time, and none of those must take over a user's CLI; `make run` is the one
# interactive start. $XDG_RUNTIME_DIR is per user and emptied at logout or
# reboot, as the server stops; without it, ~/.local/state. A config with its
# own `listen:` serves elsewhere, so nothing is recorded then.
if grep -q '^listen:' "$config"; then
	echo "run.sh: $config sets listen:, so no server is recorded for the CLI; use --server" >&2
else
	if [[ ${XDG_RUNTIME_DIR:-} == /* ]]; then
		record=$XDG_RUNTIME_DIR/drover/server
	else
		record=${HOME:?}/.local/state/drover/server
	fi
	mkdir -p "$(dirname "$record")"
	printf '%s\n' "$data" >"$record.tmp.$$"
	mv "$record.tmp.$$" "$record"
	echo "run.sh: recorded $data in $record: drover finds this server from any directory" >&2
fi

cli=$bin/drover
[[ $cli == /* ]] || cli=$root/$cli

cat >&2 <<HINT
------------------------------------------------------------------------
droverd is starting in the foreground (Ctrl-C stops it and its drivers).
Config: $config; store, admin token and API socket: $data
In a second terminal, from any directory:

  $cli driver list
  $cli offer --gpu H100
  $cli instance create --gpu H100 --name demo
  $cli instance list
  $cli instance terminate demo

Every command has --help; add --json for scripts.
------------------------------------------------------------------------
HINT
exec "$bin/droverd" --config "$config"
