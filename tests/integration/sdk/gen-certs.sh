#!/bin/sh
# Writes throwaway mutual-TLS material for the sdk tests into DIR:
#   ca.pem ca.key              test CA
#   server.pem server.key      driver certificate for 127.0.0.1 / localhost, signed by the test CA
#   client.pem client.key      host (client) certificate signed by the test CA
#   rogue-ca.pem rogue-ca.key  an unrelated CA
#   rogue.pem rogue.key        client certificate signed by the unrelated CA
# P-256 keys: generation takes well under a second.
set -eu
case "${1:-}" in
--help | -h | "")
	echo "usage: $0 DIR   (writes test CA, driver and client certificates into DIR)"
	[ -n "${1:-}" ] && exit 0
	exit 2
	;;
esac
mkdir -p "$1"
cd "$1"
umask 077

key() { openssl ecparam -name prime256v1 -genkey -noout -out "$1.key"; }

ca() { # name subject
	key "$1"
	openssl req -x509 -new -key "$1.key" -subj "/CN=$2" -days 1 -sha256 \
		-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign -out "$1.pem"
}

leaf() { # name subject ca extensions
	key "$1"
	openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr"
	printf '%s\n' "$4" >"$1.ext"
	openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3.key" -CAcreateserial -days 1 -sha256 \
		-extfile "$1.ext" -out "$1.pem" 2>/dev/null
	rm -f "$1.csr" "$1.ext" "$3.srl"
}

ca ca "sdk test CA"
ca rogue-ca "sdk rogue CA"
leaf server "sdk test driver" ca "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth"
leaf client "sdk test host" ca "extendedKeyUsage=clientAuth"
leaf rogue "sdk rogue host" rogue-ca "extendedKeyUsage=clientAuth"
