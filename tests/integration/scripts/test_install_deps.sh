#!/usr/bin/env bash
# scripts/install-deps.sh is idempotent and calls apt-get only for what is
# missing. It runs with a PATH of fakes: dpkg-query answers from a small
# package database in the temp directory, apt-get "installs" into it and logs
# its arguments, sudo logs and runs its command, id says who we are.
set -euo pipefail
SRC=${DROVER_SRC:?DROVER_SRC must name the source tree}
SCRIPT=$SRC/scripts/install-deps.sh
T=$(mktemp -d "${TMPDIR:-/tmp}/drover-test_install_deps.XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() {
	echo "FAIL [test_install_deps]: $*" >&2
	[[ -f $T/err ]] && sed 's/^/  stderr: /' "$T/err" >&2
	[[ -f $T/log ]] && sed 's/^/  log: /' "$T/log" >&2
	exit 1
}

mkdir "$T/bin" "$T/bare"
# db lines: "<package> <want>" (want: install or hold), one per architecture.
cat >"$T/bin/dpkg-query" <<'SH'
#!/bin/bash
fmt=
for a in "$@"; do [[ $a == -f* ]] && fmt=${a#-f} && fmt=${fmt#=}; done # -f=FMT, as dpkg-query takes it
pkg=${@: -1}
found=0
while read -r p want; do
	[[ $p == "$pkg" ]] || continue
	found=1
	f=${fmt//'${Status}'/"$want ok installed"}
	f=${f//'${db:Status-Status}'/installed}
	printf '%b' "$f"
done <"$FAKE_DB"
((found)) || { echo "dpkg-query: no packages found matching $pkg" >&2; exit 1; }
SH
cat >"$T/bin/apt-get" <<'SH'
#!/bin/bash
echo "apt-get $*" >>"$FAKE_LOG"
if [[ $1 == install ]]; then
	for a in "$@"; do [[ $a == -* || $a == install ]] || echo "$a install" >>"$FAKE_DB"; done
fi
SH
cat >"$T/bin/sudo" <<'SH'
#!/bin/bash
echo "sudo $1" >>"$FAKE_LOG"
exec "$@"
SH
cat >"$T/bin/id" <<'SH'
#!/bin/bash
echo "$FAKE_UID"
SH
chmod +x "$T/bin"/*
ln -s "$(command -v grep)" "$T/bin/grep"
ln -s "$(command -v grep)" "$T/bare/grep"

# The script's own list, so the test follows it.
mapfile -t ALL < <(sed -n '/^PACKAGES=(/,/^)/p' "$SCRIPT" | sed '1d;$d' | grep -v '^[[:space:]]*#' | tr -s ' \t' '\n' | grep .)
((${#ALL[@]} > 10)) || fail "could not read PACKAGES from $SCRIPT"

# run EXPECTED_RC PATH UID: the script with the fakes; stderr in $T/err.
run() {
	local want=$1 path=$2 uid=$3 rc=0
	FAKE_DB=$T/db FAKE_LOG=$T/log FAKE_UID=$uid PATH=$path /bin/bash "$SCRIPT" >"$T/out" 2>"$T/err" || rc=$?
	((rc == want)) || fail "exit status $rc, expected $want"
}
# db_with_all_but PKG...: every package installed except these; one held, one for two architectures.
db_with_all_but() {
	: >"$T/db"
	local p skip
	for p in "${ALL[@]}"; do
		for skip in "$@"; do [[ $p == "$skip" ]] && continue 2; done
		echo "$p install" >>"$T/db"
	done
	sed -i 's/^libssl-dev install$/libssl-dev install\nlibssl-dev install/; s/^libgrpc-dev install$/libgrpc-dev hold/' "$T/db"
}

# Everything there (a held package and a two-architecture one included): no apt-get at all.
db_with_all_but
: >"$T/log"
run 0 "$T/bin" 0
[[ ! -s $T/log ]] || fail "apt-get ran although every package is installed"
[[ ! -s $T/err && ! -s $T/out ]] || fail "the script said something although every package is installed"

# Two missing, as root: one update, one install of exactly those two; a second run does nothing.
db_with_all_but jq cmake
run 0 "$T/bin" 0
printf 'apt-get update -qq\napt-get install -y -qq --no-install-recommends cmake jq\n' | cmp -s - "$T/log" ||
	fail "apt-get was not called for exactly cmake and jq"
grep -q "installing cmake jq" "$T/err" || fail "the script did not say what it installs"
: >"$T/log"
run 0 "$T/bin" 0
[[ ! -s $T/log ]] || fail "a second run called apt-get again"

# Not root, with sudo: the same calls through sudo.
db_with_all_but jq
run 0 "$T/bin" 1000
printf 'sudo apt-get\napt-get update -qq\nsudo apt-get\napt-get install -y -qq --no-install-recommends jq\n' |
	cmp -s - "$T/log" || fail "not root: apt-get was not run through sudo for jq alone"

# Not root, no sudo: a clear refusal naming what is missing, not "sudo: command not found".
db_with_all_but jq
: >"$T/log"
mv "$T/bin/sudo" "$T/sudo.off"
run 1 "$T/bin" 1000
grep -q "missing packages: jq" "$T/err" || fail "not root without sudo: the missing package is not named"
grep -q "as root" "$T/err" || fail "not root without sudo: no hint to run as root"
! grep -q "command not found" "$T/err" || fail "not root without sudo: a bare 'command not found'"
[[ ! -s $T/log ]] || fail "apt-get ran without root and without sudo"
mv "$T/sudo.off" "$T/bin/sudo"

# Not Debian (no dpkg-query, no apt-get): says so and lists what to install.
run 1 "$T/bare" 0
grep -q "Debian 12" "$T/err" || fail "without dpkg-query/apt-get: no word of what the script is for"
grep -q "libjansson-dev" "$T/err" || fail "without dpkg-query/apt-get: the package list is not shown"
echo "[test_install_deps] ok" >&2
