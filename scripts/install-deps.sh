#!/usr/bin/env bash
# Installs every Debian 12 package drover needs to build, run and test.
# Idempotent: calls apt-get only for packages that are missing.
set -euo pipefail

PACKAGES=(
	build-essential cmake ninja-build pkg-config clang-format
	libgrpc-dev protobuf-c-compiler libprotobuf-c-dev
	libuv1-dev libsqlite3-dev libcmocka-dev libyaml-dev libjansson-dev libssl-dev
	openssl sqlite3 procps jq
	# the ssh driver, and the real OpenSSH servers and client its tests use
	libssh-dev openssh-server openssh-client sudo
	# the Python driver SDK (driver-sdk/python, built offline with pip into a venv), its
	# proto→Python generation, its tests, and the benchmark's Python baseline
	python3 python3-grpcio python3-protobuf protobuf-compiler protobuf-compiler-grpc
	python3-pip python3-venv python3-setuptools python3-wheel python3-pytest
	# the fuzz targets (make fuzz, make test-fuzz): clang and its libFuzzer runtime
	clang libclang-rt-14-dev
	# validating docker-compose.yml without an engine
	docker-compose
)

if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
	echo "install-deps: dpkg-query or apt-get not found: this script is for Debian 12; install the" >&2
	echo "install-deps: equivalents of these Debian packages yourself: ${PACKAGES[*]}" >&2
	exit 1
fi

# The package's state alone ("installed"), not the selection in front of it:
# a package on hold ("hold ok installed") is installed too. One line per
# architecture it is known for; grep reads them all (no SIGPIPE under pipefail).
missing=()
for p in "${PACKAGES[@]}"; do
	if ! dpkg-query -W -f='${db:Status-Status}\n' "$p" 2>/dev/null | grep -x installed >/dev/null; then
		missing+=("$p")
	fi
done

if ((${#missing[@]} == 0)); then
	exit 0
fi

SUDO=
if [[ $(id -u) != 0 ]]; then
	if ! command -v sudo >/dev/null; then
		echo "install-deps: missing packages: ${missing[*]}" >&2
		echo "install-deps: run this script as root (or install sudo) to install them" >&2
		exit 1
	fi
	SUDO=sudo
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
