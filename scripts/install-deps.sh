#!/usr/bin/env bash
# Installs every Debian 12 package drover needs to build, run and test.
# Idempotent: calls apt-get only for packages that are missing.
set -euo pipefail

PACKAGES=(
	build-essential cmake ninja-build pkg-config clang-format
	libgrpc-dev protobuf-c-compiler libprotobuf-c-dev
	libuv1-dev libsqlite3-dev libcmocka-dev libyaml-dev libjansson-dev libssl-dev
	openssl sqlite3 procps jq
	# the Python driver, the benchmark's Python baseline and the proto→Python generation
	python3 python3-grpcio python3-protobuf protobuf-compiler protobuf-compiler-grpc
	# validating docker-compose.yml without an engine
	docker-compose
)

missing=()
for p in "${PACKAGES[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done

if ((${#missing[@]} == 0)); then
	exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
SUDO=
if [[ $(id -u) != 0 ]]; then
	SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
