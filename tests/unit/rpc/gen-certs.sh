#!/bin/sh
# Makes throwaway certificates for mutual-TLS tests in DIR (created if needed):
#   ca.pem/ca.key              the test CA
#   server.pem/server.key      server cert, SAN IP:127.0.0.1 and DNS:localhost
#   client.pem/client.key      client cert signed by the test CA
#   other-ca.pem/other-ca.key  an unrelated CA
#   other-client.pem/.key      client cert signed by the unrelated CA
# EC P-256 keys keep generation fast. Usage: gen-certs.sh DIR
set -eu
if [ $# -ne 1 ] || [ "$1" = "--help" ] || [ "$1" = "-h" ]; then
	echo "usage: $0 DIR   (writes test CA, server and client certificates into DIR)" >&2
	[ $# -eq 1 ] && exit 0
	exit 2
fi
dir=$1
mkdir -p "$dir"
cd "$dir"
umask 077

newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

mkca() { # name cn
	newkey "$1.key"
	openssl req -x509 -new -key "$1.key" -subj "/CN=$2" -days 2 -sha256 \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
		-out "$1.pem"
}

mkcert() { # name cn ca extfile-lines
	newkey "$1.key"
	openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr"
	printf '%s\n' "$4" > "$1.ext"
	openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3.key" -CAcreateserial -days 2 -sha256 \
		-extfile "$1.ext" -out "$1.pem" 2>/dev/null
	rm -f "$1.csr" "$1.ext"
}

mkca ca "drover test CA"
mkca other-ca "drover other CA"
mkcert server "drover test server" ca \
	"subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth
keyUsage=critical,digitalSignature"
mkcert client "drover test client" ca \
	"extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature"
mkcert other-client "drover other client" other-ca \
	"extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature"
rm -f ./*.srl
