#!/usr/bin/env bash
# The API's doors: the unix socket is 0600; every call needs the bearer token
# (a wrong or missing one is UNAUTHENTICATED, exit 1); over TCP the API is
# TLS and, with a client CA configured, wants a client certificate of that CA.
. "$(dirname "$0")/lib.sh"
need drover-driver-sim

"$SRC/scripts/gen-certs.sh" "$T/good" 2>/dev/null
"$SRC/scripts/gen-certs.sh" "$T/bad" 2>/dev/null
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

mkdir -p "$DATA"
cat >"$CONFIG" <<YAML
listen:
  unix: $DATA/droverd.sock
  tcp: {address: 127.0.0.1:$port, cert: $T/good/driver.pem, key: $T/good/driver-key.pem, client_ca: $T/good/ca.pem}
data_dir: $DATA
drivers:
  dirs: [$BIN]
projects:
  - name: main
    backends:
      - {name: sim, type: sim, config: {state_file: $T/sim.json}}
YAML
start_droverd

[[ $(stat -c %a "$DATA/droverd.sock") == 600 ]] || fail "the API socket is not 0600"
[[ $(stat -c %a "$DATA/admin.token") == 600 ]] || fail "the admin token file is not 0600"

# The token: a wrong one and an empty-looking one are refused.
printf 'not-the-token\n' >"$T/wrong.token"
capture "$BIN/drover" --server "unix:$DATA/droverd.sock" --token-file "$T/wrong.token" driver list
[[ $RC == 1 ]] || fail "a wrong token: exit $RC, expected 1"
grep -q UNAUTHENTICATED "$T/.err" || fail "a wrong token is not reported as UNAUTHENTICATED"
grep -q not-the-token "$T/.err" && fail "the CLI printed the token it sent"

tcp() { # tcp EXPECTED ARGS...: the CLI over TCP+TLS
	local want=$1
	shift
	capture "$BIN/drover" --server "127.0.0.1:$port" --token-file "$DATA/admin.token" "$@"
	[[ $RC == "$want" ]] || fail "drover over TCP ($*) exited $RC, expected $want"
}

tcp 0 --ca-file "$T/good/ca.pem" --cert-file "$T/good/client.pem" --key-file "$T/good/client-key.pem" --json offer --gpu H100
(($(printf '%s' "$OUT" | jq '.offers | length') > 0)) || fail "no offers over TCP+TLS"
# No client certificate, or one from another CA: refused.
tcp 1 --ca-file "$T/good/ca.pem" driver list
tcp 1 --ca-file "$T/good/ca.pem" --cert-file "$T/bad/client.pem" --key-file "$T/bad/client-key.pem" driver list
# A server certificate the CLI does not trust: refused.
tcp 1 --ca-file "$T/bad/ca.pem" --cert-file "$T/good/client.pem" --key-file "$T/good/client-key.pem" driver list
# Plain TCP to a TLS port gets nothing either.
tcp 1 driver list
# Usage errors of the TLS flags.
tcp 2 --cert-file "$T/good/client.pem" driver list
tcp 2 --ca-file "$T/good/ca.pem" --cert-file "$T/good/client.pem" driver list
log "ok"
