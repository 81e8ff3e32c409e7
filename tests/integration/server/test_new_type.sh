#!/usr/bin/env bash
# The point of the design: a driver of a type the server has never seen is a
# new binary in a driver directory. A copy of the sim driver named
# drover-driver-brandnew gets a backend of type "brandnew" created and used
# (offers, an instance) with no migration and no rebuild.
#
# Type mismatch: the copy still reports type "sim" from GetInfo. The server
# keys a driver by its file name ("brandnew"), which is what backends name,
# and shows the reported type beside it (Driver.reported_type).
. "$(dirname "$0")/lib.sh"
need drover-driver-sim

mkdir -p "$T/drivers"
cp "$BIN/drover-driver-sim" "$T/drivers/drover-driver-brandnew"

config_header
cat >>"$CONFIG" <<YAML
drivers:
  dirs: [$T/drivers, $T/no-such-dir]
projects:
  - name: main
YAML
start_droverd
# A directory that is not there (a typo) is said at start; it was a debug line.
grep -q "WARN .*driver directory $T/no-such-dir (drivers.dirs): No such file or directory" "$LOG" ||
	fail "the missing driver directory is not reported"

db=$(ls "$DATA"/*.db "$DATA"/*.sqlite* 2>/dev/null | grep -v -- '-wal$\|-shm$' | head -1 || true)
[[ -n $db ]] || fail "no sqlite store in $DATA"
version_before=$(sqlite3 "$db" 'PRAGMA user_version')

run 0 --json driver list
[[ $(jout '[.drivers[] | select(.type == "brandnew")] | length') == 1 ]] || fail "no driver of type brandnew"

run 0 backend add --name fresh --type brandnew --config "{\"state_file\": \"$T/fresh.json\"}"
run 0 --json backend list
[[ $(jout '.backends[] | select(.name == "fresh") | .type') == brandnew ]] || fail "backend fresh is not of type brandnew"
run 0 --json offer --gpu H100
[[ $(jout '.backends[] | select(.backend == "fresh") | .code') == OK ]] || fail "offers from the brandnew backend failed"
(($(jout '[.offers[] | select(.backend == "fresh")] | length') > 0)) || fail "no offers from the brandnew backend"
run 0 --json instance create --backend fresh --gpu H100 --name novel
[[ $(jout '.instance.backend_type') == brandnew ]] || fail "the instance does not record its backend type brandnew"
run 0 --json driver list
[[ $(jout '.drivers[] | select(.type == "brandnew") | .state') == DRIVER_STATE_READY ]] || fail "driver brandnew is not READY"
[[ $(jout '.drivers[] | select(.type == "brandnew") | .reported_type') == sim ]] ||
	fail "the GetInfo type of the copied driver is not recorded"

# No migration happened and nothing in the schema knows type names.
[[ $(sqlite3 "$db" 'PRAGMA user_version') == "$version_before" ]] || fail "adding a new type changed the schema version"
schema=$(sqlite3 "$db" .schema)
[[ ${schema,,} != *brandnew* && ${schema,,} != *"'sim'"* ]] || fail "the schema names backend types"
sqlite3 "$db" "SELECT sql FROM sqlite_master WHERE sql LIKE '%type%'" | grep -iqE '(^|[^_a-z])check *\(' &&
	fail "the schema has a CHECK on a type column"
log "ok"
