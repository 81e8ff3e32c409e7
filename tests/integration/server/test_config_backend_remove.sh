#!/usr/bin/env bash
# Removing a backend that droverd's config file defines works, and says that
# the next start adds it again (it used to look permanent); one added through
# the API says nothing of the kind. After a restart the config's is back.
. "$(dirname "$0")/lib.sh"
need drover-driver-sim

config_header
cat >>"$CONFIG" <<YAML
drivers:
  dirs: [$BIN]
projects:
  - name: main
    backends:
      - name: fromcfg
        type: sim
        config: {state_file: $T/sim.json}
YAML
start_droverd
run 0 backend add --name fromapi --type sim --config "{\"state_file\": \"$T/sim2.json\"}"

run 0 --json backend remove fromcfg
[[ $(jout '.from_config') == true ]] || fail "--json backend remove of a config backend: from_config is not true"
run 0 backend remove fromapi
[[ $ERR != *"config file"* ]] || fail "removing an API backend mentions the config file: $ERR"
stop_droverd
start_droverd
run 0 --json backend list
[[ $(jout '[.backends[] | select(.name == "fromcfg")] | length') == 1 ]] ||
	fail "the config's backend did not come back at the next start"
run 0 backend remove fromcfg
contains "$ERR" "note: backend fromcfg is defined in droverd's config file" "backend remove of a config backend"
log "ok"
