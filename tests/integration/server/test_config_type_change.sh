#!/usr/bin/env bash
# A config backend whose type changes between two starts while it has a live
# instance: the instance keeps its old config, secrets and driver, and is
# still terminated by it. Before, the backend was replaced in place and the
# termination went to the new type's driver, which answered UNIMPLEMENTED
# for ever: a machine drover could no longer stop.
. "$(dirname "$0")/lib.sh"
need drover-driver-sim drover-driver-example

write_config() { # write_config TYPE CONFIG
	config_header
	cat >>"$CONFIG" <<YAML
drivers:
  dirs: [$BIN]
projects:
  - name: main
    backends:
      - name: b
        type: $1
        config: $2
        secrets: {$3}
provisioning: {reconcile_interval_ms: 200}
YAML
}

write_config sim "{state_file: $T/sim.json}" "api_key: k-$(openssl rand -hex 6)"
start_droverd
run 0 --json instance create --backend b --cpus 1 --name keep
[[ $(jout '.instance.backend_type') == sim ]] || fail "the instance was not made by the sim driver"
stop_droverd

write_config example "{}" ""
start_droverd
grep -q "backend main/b changes type from sim to example with 1 live instance" "$LOG" ||
	fail "the type change with a live instance is not reported"
run 0 --json backend list
[[ $(jout '.backends[] | select(.name == "b") | .type') == example ]] || fail "backend b did not become type example"
run 0 --timeout 20 --json instance terminate keep --wait
[[ $(jout '.instance.status') == INSTANCE_STATUS_TERMINATED ]] ||
	fail "the instance of the old type was not terminated: $(jout '.instance.last_error')"
run 0 --json event list --instance keep
[[ $(jout '[.events[] | select(.kind == "instance.terminated" and .backend == "b")] | length') == 1 ]] ||
	fail "no instance.terminated event: the driver did not confirm the termination"
log "ok"
