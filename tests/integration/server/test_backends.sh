#!/usr/bin/env bash
# drover backend add/list/remove: the driver's diagnostics with field paths,
# several backends of one type, features from the driver, remove refused
# while an instance lives and allowed with --force (the instance stays known).
. "$(dirname "$0")/lib.sh"
need drover-driver-sim

config_header
cat >>"$CONFIG" <<YAML
drivers:
  dirs: [$BIN]
projects:
  - name: main
provisioning: {max_tries: 2, reconcile_interval_ms: 200}
YAML
start_droverd

run 0 backend add --name sim1 --type sim --config "{\"capacity\": 2, \"state_file\": \"$T/sim1.json\"}"
contains "$OUT" "added backend sim1" "backend add"

# An invalid config: refused (exit 1), with the field path, nothing added.
run 1 backend add --name bad --type sim --config '{"capacity": "lots"}'
contains "$ERR" "/capacity" "diagnostic of a bad config"
run 1 backend add --name bad --type sim --config '{"capacity": -3}'
contains "$ERR" "/capacity" "diagnostic of a negative capacity"
run 1 --json backend add --name bad --type sim --config '{"capacity": "lots"}'
[[ $(jout '[.diagnostics[] | select(.field_path == "/capacity")] | length') -ge 1 ]] ||
	fail "--json diagnostics of a bad config lack field_path /capacity"
run 0 backend add --name probe --type sim --config '{"capacity": 2}' --validate-only
contains "$OUT" "valid" "--validate-only of a good config"

# A type no driver serves: refused, naming the type.
run 1 backend add --name ghost --type nosuchtype --config '{}'
contains "$ERR" "nosuchtype" "unknown type"
# A name taken already.
run 1 backend add --name sim1 --type sim --config '{}'
contains "$ERR" "ALREADY_EXISTS" "duplicate backend"

# Several backends of the same type in one project.
run 0 backend add --name sim2 --type sim --config "{\"capacity\": 1, \"state_file\": \"$T/sim2.json\"}"
run 0 --json backend list
[[ $(jout '[.backends[] | select(.type == "sim")] | length') == 2 ]] || fail "expected two sim backends"
[[ $(jout '[.backends[] | select(.name == "bad" or .name == "ghost" or .name == "probe")] | length') == 0 ]] ||
	fail "a refused or validate-only backend was added"
jout '.backends[] | select(.name == "sim1") | .features[]' | grep -qx FEATURE_OFFERS ||
	fail "backend sim1 does not list FEATURE_OFFERS from the driver"
jout '.backends[] | select(.name == "sim1") | .features[]' | grep -qx FEATURE_CREATE_INSTANCE ||
	fail "backend sim1 does not list FEATURE_CREATE_INSTANCE"
run 0 backend list
contains "$OUT" "OFFERS" "backend list table"
contains "$OUT" "sim2" "backend list table"

# A live instance blocks removal...
run 0 --json instance create --backend sim1 --name keep --gpu H100
id=$(jout '.instance.id')
[[ -n $id && $id != null ]] || fail "instance create returned no id"
run 1 backend remove sim1
contains "$ERR" "FAILED_PRECONDITION" "remove with a live instance"
contains "$ERR" "sim1" "remove with a live instance"
run 0 --json backend list
[[ $(jout '[.backends[] | select(.name == "sim1")] | length') == 1 ]] || fail "a refused remove removed the backend"
# ...unless forced; the instance is not forgotten.
run 0 backend remove sim1 --force
run 0 --json backend list
[[ $(jout '[.backends[] | select(.name == "sim1")] | length') == 0 ]] || fail "remove --force left the backend"
run 0 --json instance list
[[ $(jout --arg id "$id" '[.instances[] | select(.id == $id)] | length') == 1 ]] ||
	fail "the live instance of a force-removed backend was forgotten"

run 0 backend remove sim2
run 1 backend remove sim2
contains "$ERR" "NOT_FOUND" "remove of a removed backend"

# Backends belong to projects.
run 0 project create p2
run 0 --json project list
[[ $(jout '[.projects[] | select(.name == "p2")] | length') == 1 ]] || fail "project p2 not listed"
# Every project has its creation time (it was always 0, shown as "-").
[[ $(jout '[.projects[] | select(.created_unix_ms <= 0)] | length') == 0 ]] ||
	fail "a project is listed without its creation time"
run 0 project list
[[ $(printf '%s\n' "$OUT" | awk '$1 == "p2" {print $NF}') =~ ^[0-9]{2}:[0-9]{2}:[0-9]{2}$ ]] ||
	fail "project list shows no creation time for p2"
run 0 --project p2 backend add --name sim1 --type sim --config '{"capacity": 1}'
run 0 --json backend list --project p2
[[ $(jout '[.backends[] | select(.name == "sim1" and .project == "p2")] | length') == 1 ]] ||
	fail "backend sim1 of project p2 not listed"
run 1 --project nosuch backend add --name x --type sim --config '{}'
contains "$ERR" "nosuch" "unknown project"
log "ok"
