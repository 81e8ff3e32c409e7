#!/usr/bin/env bash
# docker-compose.yml is valid for Debian's docker-compose (no engine needed),
# and wires what the newcomer's path promises: droverd plus a sim driver in
# standalone mutual-TLS mode, droverd configured to reach it by address, both
# images on Debian 12.
. "$(dirname "$0")/lib.sh"

command -v docker-compose >/dev/null || fail "docker-compose is not installed (scripts/install-deps.sh installs it)"
cd "$SRC"

docker-compose -f docker-compose.yml config -q || fail "docker-compose config -q rejected docker-compose.yml"

# The validator itself must be able to say no: a broken copy is refused.
sed 's/^services:/servicez:/' docker-compose.yml >"$T/broken.yml"
if docker-compose -f "$T/broken.yml" config -q 2>/dev/null; then
	fail "docker-compose accepted a file without services: the check proves nothing"
fi

cfg=$(docker-compose -f docker-compose.yml config)
for svc in droverd sim-driver; do
	printf '%s\n' "$cfg" | grep -q "^  $svc:" || fail "no service $svc in docker-compose.yml"
done
sim=$(printf '%s\n' "$cfg" | sed -n '/^  sim-driver:/,/^  [a-z]/p')
for flag in --listen 0.0.0.0:4100 --tls-cert --tls-key --client-ca; do
	printf '%s\n' "$sim" | grep -q -- "- $flag" || fail "service sim-driver does not run with $flag"
done

# droverd's config in the image uses the sim driver by address, with client certificates.
y=docker/droverd.yaml
/usr/bin/python3 - "$y" <<'PY' || fail "$y does not configure the remote sim driver"
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
r = c["drivers"]["remote"]
assert any(d["address"] == "sim-driver:4100" and d["type"] == "sim" and d["ca"] and d["cert"] and d["key"]
           for d in r), r
assert c["projects"][0]["backends"][0]["type"] == "sim"
PY

# Every stage of the Dockerfile starts from Debian 12.
froms=$(grep -E '^FROM ' docker/Dockerfile | grep -v ' AS build$' | awk '{print $2}' | sort -u)
grep -q '^FROM debian:12 AS build' docker/Dockerfile || fail "the build stage is not debian:12"
for f in $froms; do
	[[ $f == debian:12 || $f == runtime ]] || fail "docker/Dockerfile has a stage FROM $f (not Debian 12)"
done

# The build context leaves out build trees and ./var (droverd's secret.key and
# admin.token), as the builder Debian's docker-compose uses computes it: it
# reads only <context>/.dockerignore.
mkdir -p "$T/ctx/var" "$T/ctx/build" "$T/ctx/build-asan" "$T/ctx/.git" "$T/ctx/docker" "$T/ctx/src"
[[ -f .dockerignore ]] && cp .dockerignore "$T/ctx/"
touch "$T/ctx/var/secret.key" "$T/ctx/var/admin.token" "$T/ctx/build/droverd" "$T/ctx/build-asan/droverd" \
	"$T/ctx/.git/config" "$T/ctx/src/main.c" "$T/ctx/docker/Dockerfile"
/usr/bin/python3 - "$T/ctx" <<'PY' || fail "the docker build context would carry ./var or build trees (no .dockerignore at the root?)"
import os, sys
from docker.utils.build import exclude_paths
ctx = sys.argv[1]
ign = os.path.join(ctx, ".dockerignore")
pats = [l.strip() for l in open(ign).read().splitlines()] if os.path.exists(ign) else []
sent = exclude_paths(ctx, [p for p in pats if p and p[0] != "#"], dockerfile="docker/Dockerfile")
leaked = sorted(p for p in sent if p.split("/")[0] in ("var", "build", "build-asan", ".git"))
assert not leaked, leaked
assert "src/main.c" in sent and "docker/Dockerfile" in sent, sent
PY

# The certificates the services expect are the ones gen-certs.sh makes.
"$SRC/scripts/gen-certs.sh" "$T/certs" 2>/dev/null
for f in ca.pem driver.pem driver-key.pem client.pem client-key.pem; do
	[[ -f $T/certs/$f ]] || fail "gen-certs.sh did not make $f"
	grep -q "/certs/$f" docker-compose.yml docker/droverd.yaml || fail "nothing uses /certs/$f"
done
# The certs service's command, run here on a temp directory (as root, like
# the container): the services' keys go to uid 10001, the CA's key stays
# root's and 0600 (the volume is mounted in both service containers); a
# second run keeps the certificates.
if [[ $(id -u) == 0 ]]; then
	ep=$(/usr/bin/python3 -c 'import yaml; print(yaml.safe_load(open("docker-compose.yml"))["services"]["certs"]["entrypoint"][-1])')
	[[ $ep == *gen-certs.sh* ]] || fail "no certs entrypoint in docker-compose.yml"
	mkdir -p "$T/epbin" "$T/certs-ep"
	ln -s "$SRC/scripts/gen-certs.sh" "$T/epbin/gen-certs.sh"
	PATH=$T/epbin:$PATH /bin/sh -c "${ep//\/certs/$T/certs-ep}" 2>/dev/null || fail "the certs entrypoint failed: $ep"
	[[ $(stat -c %u:%a "$T/certs-ep/ca-key.pem") == 0:600 ]] ||
		fail "the CA key is $(stat -c %u:%a "$T/certs-ep/ca-key.pem") (uid:mode), not root's 0600"
	for f in driver-key.pem client-key.pem; do
		[[ $(stat -c %u:%a "$T/certs-ep/$f") == 10001:600 ]] || fail "$f is not uid 10001's 0600"
	done
	sum=$(md5sum "$T/certs-ep/ca.pem")
	chown 10001 "$T/certs-ep/ca-key.pem" # as left by the earlier entrypoint
	PATH=$T/epbin:$PATH /bin/sh -c "${ep//\/certs/$T/certs-ep}" 2>/dev/null || fail "the certs entrypoint failed on a second run"
	[[ $(md5sum "$T/certs-ep/ca.pem") == "$sum" ]] || fail "a second run replaced the certificates"
	[[ $(stat -c %u "$T/certs-ep/ca-key.pem") == 0 ]] || fail "a second run left the CA key with uid 10001"
fi

# droverd itself accepts docker/droverd.yaml (paths moved into the temp dir):
# it starts, knows the remote sim driver by its compose address, and syncs
# the backend. The name sim-driver does not resolve here, so the driver is
# simply not ready.
need droverd drover
mkdir -p "$DATA"
sed -e "s|/var/lib/drover/|$DATA/|g; s|/var/lib/drover\$|$DATA|; s|data_dir: /var/lib/drover|data_dir: $DATA|" \
	-e "s|/certs/|$T/certs/|g" docker/droverd.yaml >"$CONFIG"
grep -q "$T/certs/client.pem" "$CONFIG" || fail "docker/droverd.yaml does not use /certs/client.pem"
start_droverd
run 0 --json driver list
[[ $(jout '[.drivers[] | select(.type == "sim" and .kind == "DRIVER_KIND_REMOTE" and .address == "sim-driver:4100")] | length') == 1 ]] ||
	fail "droverd with docker/droverd.yaml does not know the remote sim driver at sim-driver:4100"
run 0 --json backend list
[[ $(jout '[.backends[] | select(.project == "main" and .type == "sim")] | length') == 1 ]] ||
	fail "droverd with docker/droverd.yaml has no sim backend in project main"
log "ok"
