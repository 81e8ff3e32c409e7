#!/usr/bin/env bash
# A provider engineer's path with the Python driver SDK, from a fresh venv:
# pip install the SDK (offline, Debian's python3-grpcio seen through
# --system-site-packages), scaffold a driver with `python3 -m drover_driver
# new`, pip install it, check it with drover-conformance through its own
# pytest test, and run it under droverd from a driver directory: droverd
# clears the environment, so the entry point must find its Python and the SDK
# by itself (no PYTHONPATH). A healthy sim backend runs beside it.
. "$(dirname "$0")/lib.sh"
need drover-driver-sim drover-conformance

venv=$T/venv
/usr/bin/python3 -m venv --system-site-packages "$venv" || fail "cannot make a venv with /usr/bin/python3"
pip_install() {
	# The SDK's build tree goes under $T, not into the source checkout.
	capture env DROVER_PY_BUILD_DIR="$T/pybuild" "$venv/bin/python" -m pip install -q --no-index \
		--no-build-isolation --disable-pip-version-check "$1"
	[[ $RC == 0 ]] || fail "pip install $1 failed: $ERR"
}
pip_install "$SRC/driver-sdk/python"

mkdir -p "$T/src"
capture "$venv/bin/python" -m drover_driver new acmecloud --dir "$T/src/acmecloud"
[[ $RC == 0 ]] || fail "drover_driver new failed: $ERR"
pip_install "$T/src/acmecloud"
entry=$venv/bin/drover-driver-acmecloud
[[ $(head -1 "$entry") == "#!$venv/bin/python"* ]] || fail "the entry point does not pin the venv's Python: $(head -1 "$entry")"

# The scaffolded test runs the harness; without it, it is skipped and says why.
capture env -C "$T/src/acmecloud" PATH=/usr/bin:/bin DROVER_CONFORMANCE="$BIN/drover-conformance" \
	PYTHONDONTWRITEBYTECODE=1 "$venv/bin/python" -m pytest -q -p no:cacheprovider tests
[[ $RC == 0 && $OUT == *"1 passed"* ]] || fail "the scaffolded driver's conformance test failed: $OUT"
capture env -C "$T/src/acmecloud" PATH=/usr/bin:/bin PYTHONDONTWRITEBYTECODE=1 \
	"$venv/bin/python" -m pytest -q -rs -p no:cacheprovider tests
[[ $RC == 0 && $OUT == *"1 skipped"* && $OUT == *"drover-conformance not found"* ]] ||
	fail "without the harness the test is not skipped with its reason: $OUT"

# A driver directory holds a copy of the entry point, run with no environment.
mkdir -p "$T/drivers"
cp "$entry" "$T/drivers/drover-driver-acmecloud"
capture env -i "$T/drivers/drover-driver-acmecloud" --version
[[ $RC == 0 && $OUT == "acmecloud 0.1.0 (drover protocol 1)" ]] || fail "the copied entry point does not run: $OUT $ERR"

config_header
cat >>"$CONFIG" <<YAML
drivers:
  dirs: [$T/drivers]
  commands:
    - {type: sim, path: $BIN/drover-driver-sim}
projects:
  - name: main
    backends:
      - {name: acme, type: acmecloud, config: {regions: [acmecloud-west-1]}}
      - {name: healthy, type: sim, config: {state_file: $T/sim.json}}
YAML
start_droverd
run 0 --json offer --all
[[ $(jout '.backends[] | select(.backend == "acme") | .code') == OK ]] || fail "offers from the Python driver failed"
[[ $(jout '[.offers[] | select(.backend == "acme") | .offer.region] | unique | join(",")') == acmecloud-west-1 ]] ||
	fail "the Python driver did not apply its config"
[[ $(jout '.backends[] | select(.backend == "healthy") | .code') == OK ]] || fail "the sim backend beside it failed"
run 0 --json driver list
[[ $(jout '.drivers[] | select(.type == "acmecloud") | .state') == DRIVER_STATE_READY ]] || fail "acmecloud is not READY"
log "ok"
