#!/usr/bin/env bash
# Makes the certificates for mutual TLS between droverd and a remote driver:
#   ca.pem, ca-key.pem           a private CA (the key stays with the operator)
#   driver.pem, driver-key.pem   the driver's server certificate, valid for the
#                                names sim-driver and localhost and 127.0.0.1
#   client.pem, client-key.pem   droverd's client certificate
# Usage: scripts/gen-certs.sh OUTDIR [DAYS]
# Private keys are written 0600, in a directory made 0700 if it is new.
# Existing files in OUTDIR are replaced, all at once at the end: a run that
# fails leaves them as they were.
set -euo pipefail

usage() {
	sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
}

case "${1:-}" in
-h | --help)
	usage
	exit 0
	;;
"")
	usage >&2
	echo "gen-certs.sh: missing OUTDIR" >&2
	exit 2
	;;
esac
out=$1
days=${2:-825}
# Decimal (bash reads "08" as octal), and what openssl can count.
if ! [[ $days =~ ^0*[1-9][0-9]{0,4}$ ]] || ((10#$days > 36500)); then
	echo "gen-certs.sh: DAYS must be a whole number of days from 1 to 36500, got '$days'" >&2
	exit 2
fi
days=$((10#$days))
command -v openssl >/dev/null || {
	echo "gen-certs.sh: openssl is not installed (apt-get install openssl)" >&2
	exit 1
}

umask 077
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Everything is made here first and moved into OUTDIR only once all of it exists.
final=$out
out=$tmp/out
mkdir "$out"

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# The CA.
key "$out/ca-key.pem"
openssl req -x509 -new -key "$out/ca-key.pem" -sha256 -days "$days" -subj "/CN=drover test CA $(date +%s%N)" \
	-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
	-out "$out/ca.pem"

# sign NAME CN EXTENSIONS: a key and a certificate signed by the CA.
sign() {
	local name=$1 cn=$2 ext=$3
	key "$out/$name-key.pem"
	openssl req -new -key "$out/$name-key.pem" -subj "/CN=$cn" -out "$tmp/$name.csr"
	printf '%s\n' "$ext" >"$tmp/$name.ext"
	openssl x509 -req -in "$tmp/$name.csr" -CA "$out/ca.pem" -CAkey "$out/ca-key.pem" -CAcreateserial \
		-CAserial "$tmp/ca.srl" -days "$days" -sha256 -extfile "$tmp/$name.ext" -out "$out/$name.pem" 2>/dev/null
}

sign driver sim-driver "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:sim-driver,DNS:localhost,IP:127.0.0.1"

sign client droverd "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"

chmod 0600 "$out"/*-key.pem
chmod 0644 "$out/ca.pem" "$out/driver.pem" "$out/client.pem"
mv -f "$out"/*.pem "$final"/
echo "gen-certs.sh: wrote ca.pem, driver.pem, driver-key.pem, client.pem, client-key.pem to $final" >&2
