#!/usr/bin/env bash
# `drover driver show TYPE` prints the driver's version, features and the
# fields of its config schema; `drover driver list` puts the last error of a
# driver that crashed or is backing off on a line of its own.
. "$(dirname "$0")/lib.sh"
need drover-driver-sim fixture-driver-hs-early-exit

config_header
cat >>"$CONFIG" <<YAML
drivers:
  dirs: [$BIN]
  commands:
    - type: crashy
      path: $BIN/fixture-driver-hs-early-exit
  restart_backoff_ms: 200
projects:
  - name: main
    backends:
      - name: sim
        type: sim
        config: {state_file: $T/sim.json}
      # A driver is started for the backends that need it.
      - name: doomed
        type: crashy
YAML
start_droverd

# driver show: the info, and the config fields with type, default and description.
run 0 driver show sim
contains "$OUT" "version:      0.1.0" "driver show sim"
contains "$OUT" "CREATE_INSTANCE" "driver show sim: features"
contains "$OUT" "Simulated cloud" "driver show sim: description"
grep -Eq '^ +capacity +integer +4 +no +Live instances' <<<"$OUT" || fail "driver show sim: no capacity row with type, default and description: $OUT"
grep -Eq '^ +api_key +string ' <<<"$OUT" || fail "driver show sim: no secrets row: $OUT"
run 0 --json driver show sim
jout '.config_schema_json | fromjson | .properties.capacity.default' | grep -qx 4 ||
	fail "the API's Driver message does not carry the config schema"
run 1 driver show nope
contains "$ERR" "no driver of type 'nope'" "driver show of an unknown type"
contains "$ERR" "sim" "driver show of an unknown type lists the known ones"
run 2 driver show
contains "$ERR" "missing TYPE" "driver show without a type"

# driver list: the crash-looping driver's error, under the table on a line of its own.
wait_for 20 '[[ $(drover --json driver list | jq -r ".drivers[] | select(.type == \"crashy\") | .state") == DRIVER_STATE_BACKOFF ]]' ||
	fail "driver crashy never went to backoff"
run 0 driver list
grep -Eq '^driver crashy: backoff after [0-9]+ restart\(s\)' <<<"$OUT" || fail "no line for the backing-off driver: $OUT"
grep -A1 '^driver crashy:' <<<"$OUT" | grep -q 'last error (.*): .*exited with status 1 before its handshake' ||
	fail "the backing-off driver's line has no last error: $OUT"
! grep -q '^driver sim:' <<<"$OUT" || fail "a healthy driver got an error line: $OUT"
# A ready driver that crashed once keeps its last error in view.
pid=$(driver_pid sim)
kill -9 "$pid"
wait_for 20 '[[ $(drover --json driver list | jq -r ".drivers[] | select(.type == \"sim\") | \"\(.state) \(.restarts)\"") == "DRIVER_STATE_READY 1" ]]' ||
	fail "driver sim was not restarted"
run 0 driver list
grep -A1 '^driver sim: ready after 1 restart(s)' <<<"$OUT" | grep -q "killed by signal 9" ||
	fail "the crashed-and-restarted driver has no line with its last error: $OUT"
run 0 offer --gpu H100 --limit 1
log "ok"
