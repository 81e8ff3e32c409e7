#!/usr/bin/env bash
# The CLI without a server: --help everywhere, usage errors exit 2 naming the
# culprit, an unreachable server exits 3, and gen-certs.sh makes a working
# chain with private keys 0600.
. "$(dirname "$0")/lib.sh"
need drover

cli() { # cli EXPECTED ARGS...: the CLI pointed at a server that is not there
	local want=$1
	shift
	capture "$BIN/drover" --server "unix:$T/nothing.sock" --token-file "$T/none.token" "$@"
	[[ $RC == "$want" ]] || fail "drover $* exited $RC, expected $want"
}

cli 0 --help
contains "$OUT" "Exit codes" "drover --help"
contains "$OUT" "3  cannot reach the server" "drover --help"
for c in driver project backend offer instance event; do
	cli 0 "$c" --help
	contains "$OUT" "Usage: drover $c" "drover $c --help"
done
cli 0 offer --help
contains "$OUT" "--gpu NAME[:COUNT]" "drover offer --help"
contains "$OUT" "--spot-auto" "drover offer --help"

cli 2 event list --limit 0
contains "$ERR" "--limit 0: expected a positive integer" "event list --limit 0"

cli 0 --version
[[ $OUT =~ ^drover\ [0-9]+\.[0-9]+\.[0-9]+$ ]] || fail "drover --version printed '$OUT'"

# A bad server address from the environment is named as such, not as --server.
capture env DROVER_SERVER=bogus "$BIN/drover" --token-file "$T/none.token" project list
[[ $RC == 2 ]] || fail "DROVER_SERVER=bogus exited $RC, expected 2"
contains "$ERR" "\$DROVER_SERVER bogus: expected unix:PATH or HOST:PORT" "bad \$DROVER_SERVER"
capture env DROVER_SERVER=bogus "$BIN/drover" --server bogus2 --token-file "$T/none.token" project list
contains "$ERR" "--server bogus2: expected" "--server over \$DROVER_SERVER"

cli 2
cli 2 frobnicate
contains "$ERR" "unknown command 'frobnicate'" "unknown command"
cli 2 --timeout x driver list
contains "$ERR" "--timeout x" "bad --timeout"
cli 2 offer --gpu H100:many
contains "$ERR" "H100:many" "bad --gpu"
cli 2 offer --gpu-memory 80GB:40GB
contains "$ERR" "minimum above its maximum" "inverted range"
cli 2 offer --memory 12furlongs
contains "$ERR" "unknown unit" "bad unit"
cli 2 offer --max-price -1
contains "$ERR" "--max-price" "negative price"
cli 2 offer --feature TELEPORT
contains "$ERR" "unknown feature 'TELEPORT'" "unknown feature"
cli 2 offer --spot --on-demand
cli 2 backend add --name x
contains "$ERR" "--name and --type are required" "backend add without type"
cli 2 backend add --name x --type sim --config '{"capacity": 2'
contains "$ERR" "not valid JSON" "bad JSON"
cli 2 backend add --name x --type sim --config '[1]'
contains "$ERR" "JSON object" "non-object JSON"
cli 2 backend remove x --all
contains "$ERR" "--all belongs to 'backend list'" "backend remove --all"
cli 2 backend add --name x --type sim --force
contains "$ERR" "--force belongs to 'backend remove'" "backend add --force"
cli 2 backend add --name x --type sim --secret novalue
contains "$ERR" "KEY=VALUE" "secret without ="
# A directory opens but does not read: it was taken for an empty file (an empty
# secret went to the server; the config file failed as "not valid JSON").
cli 2 backend add --name x --type sim --secret-file "api_key=$T"
contains "$ERR" "cannot read $T: Is a directory" "--secret-file DIR"
cli 2 backend add --name x --type sim --config-file "$T"
contains "$ERR" "cannot read $T: Is a directory" "--config-file DIR"
: >"$T/empty.secret"
cli 2 backend add --name x --type sim --secret-file "api_key=$T/empty.secret"
contains "$ERR" "$T/empty.secret is empty" "--secret-file with an empty file"
# A port above 65535 was taken modulo 65536 by getaddrinfo(): 99999 reached 34463.
capture "$BIN/drover" --server 127.0.0.1:99999 driver list
[[ $RC == 2 ]] || fail "--server with port 99999: exit $RC, expected 2"
contains "$ERR" "port must be a number from 1 to 65535" "--server 127.0.0.1:99999"
# An empty --project is the API's "every project"; it listed all projects' instances.
cli 2 --project "" instance list
contains "$ERR" "--project: empty project name" "empty global --project"
cli 2 instance list --project ""
contains "$ERR" "--project: empty project name" "empty --project after the command"
# An empty key, or a private key file, went to the driver as an SSH key.
cli 2 instance create --cpus 1 --ssh-key ""
contains "$ERR" "empty key" "--ssh-key ''"
printf -- '-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n' >"$T/id_test"
cli 2 instance create --cpus 1 --ssh-key "@$T/id_test"
contains "$ERR" "this is a private key" "--ssh-key @PRIVATE_KEY"
cli 2 instance show
cli 2 instance list --gpu H100
contains "$ERR" "belong to 'instance create'" "create flag on list"
cli 2 instance list --status sleeping
contains "$ERR" "--status sleeping" "bad status"
# Options of another subcommand were ignored (create --status made a machine).
cli 2 instance create --cpus 1 --status running
contains "$ERR" "--status and --all belong to 'instance list'" "create --status"
cli 2 instance show x --all
contains "$ERR" "--status and --all belong to 'instance list'" "show --all"
cli 2 instance list --wait
contains "$ERR" "--wait belongs to" "list --wait"
cli 2 instance show x --wait
contains "$ERR" "--wait belongs to" "show --wait"

# Valid commands, but nothing listens: exit 3, naming the address.
cli 3 driver list
contains "$ERR" "cannot reach droverd at unix:$T/nothing.sock" "unreachable unix socket"
# --timeout after the command, as the instance help suggests, was an unknown option (2).
cli 3 instance terminate x --wait --timeout 5
cli 2 instance terminate x --wait --timeout soon
contains "$ERR" "--timeout soon: expected whole seconds" "bad --timeout after the command"
cli 3 offer --gpu H100:1 --gpu-memory 40GB: --cpus 8 --memory 64GB --spot-auto --region us-east-1
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
capture "$BIN/drover" --server "127.0.0.1:$port" driver list
[[ $RC == 3 ]] || fail "unreachable TCP server: exit $RC, expected 3"
grep -q "127.0.0.1:$port" "$T/.err" || fail "the unreachable TCP address is not named"

# A socket that accepts but a missing token file: a usage problem (2), named.
/usr/bin/python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(8); time.sleep(30)' "$T/listen.sock" &
BG_PIDS+=($!)
wait_for 5 "[[ -S $T/listen.sock ]]" || fail "helper socket did not appear"
capture "$BIN/drover" --server "unix:$T/listen.sock" --token-file "$T/missing.token" driver list
[[ $RC == 2 ]] || fail "missing token file: exit $RC, expected 2"
grep -q "$T/missing.token" "$T/.err" || fail "the missing token file is not named"
capture "$BIN/drover" --server "unix:$T/listen.sock" --token-file "$T" driver list
[[ $RC == 2 ]] || fail "token file that is a directory: exit $RC, expected 2"
contains "$ERR" "cannot read the token file $T: Is a directory" "--token-file DIR"
# An unreadable --ca-file is a local file problem (2), not an unreachable server (3).
echo 0123abcd >"$T/some.token"
capture "$BIN/drover" --server "unix:$T/listen.sock" --token-file "$T/some.token" --ca-file "$T/no-ca.pem" driver list
[[ $RC == 2 ]] || fail "missing --ca-file: exit $RC, expected 2"
contains "$ERR" "$T/no-ca.pem" "missing --ca-file"

# gen-certs.sh: a chain that verifies, SANs for the compose service, private keys 0600.
"$SRC/scripts/gen-certs.sh" "$T/certs" 2>/dev/null
openssl verify -CAfile "$T/certs/ca.pem" "$T/certs/driver.pem" "$T/certs/client.pem" >/dev/null ||
	fail "gen-certs.sh certificates do not verify against its CA"
san=$(openssl x509 -in "$T/certs/driver.pem" -noout -ext subjectAltName)
for n in DNS:sim-driver DNS:localhost "IP Address:127.0.0.1"; do
	contains "$san" "$n" "driver certificate SANs"
done
for k in ca-key.pem driver-key.pem client-key.pem; do
	[[ $(stat -c %a "$T/certs/$k") == 600 ]] || fail "$k is not 0600"
done
"$SRC/scripts/gen-certs.sh" 2>/dev/null && fail "gen-certs.sh without OUTDIR succeeded"
# A bad DAYS is refused before anything is touched: one openssl cannot count
# (99999999999999999999) once went on and replaced the CA key before openssl
# refused, leaving the existing ca.pem without its key.
sum=$(cat "$T/certs"/*.pem | md5sum)
for d in 99999999999999999999 36501 0 -5 1e3; do
	capture "$SRC/scripts/gen-certs.sh" "$T/certs" "$d"
	[[ $RC == 2 ]] || fail "gen-certs.sh with DAYS '$d': exit $RC, expected 2"
	contains "$ERR" "DAYS" "gen-certs.sh with DAYS '$d'"
done
[[ $(cat "$T/certs"/*.pem | md5sum) == "$sum" ]] || fail "a refused gen-certs.sh run changed the existing files"
# Leading zeros are decimal, not bash's octal ("08" was an arithmetic error, then an openssl one).
"$SRC/scripts/gen-certs.sh" "$T/certs-08" 08 2>/dev/null || fail "gen-certs.sh with DAYS 08 failed"
# openssl failing half-way (here: at the first x509 signing) leaves OUTDIR as it was.
mkdir -p "$T/fake-openssl"
cat >"$T/fake-openssl/openssl" <<SH
#!/bin/bash
[[ \$1 == x509 ]] && { echo "openssl: simulated failure" >&2; exit 1; }
exec $(command -v openssl) "\$@"
SH
chmod +x "$T/fake-openssl/openssl"
PATH=$T/fake-openssl:$PATH capture "$SRC/scripts/gen-certs.sh" "$T/certs"
[[ $RC != 0 ]] || fail "gen-certs.sh succeeded although openssl failed"
[[ $(cat "$T/certs"/*.pem | md5sum) == "$sum" ]] || fail "a gen-certs.sh run that failed half-way changed the existing files"
log "ok"
