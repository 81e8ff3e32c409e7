# Shared helpers of the server integration tests: a private temp directory, a
# real droverd started from a config the test writes, the real drover CLI,
# and a cleanup that stops every process the test started (droverd, the
# drivers it spawned, standalone drivers) even when the test fails.
#
# Sourced by test_*.sh, which CTest runs with DROVER_BIN (the build's bin
# directory) and DROVER_SRC (the source tree) in the environment.
set -euo pipefail

BIN=${DROVER_BIN:?DROVER_BIN must name the build\'s bin directory}
SRC=${DROVER_SRC:?DROVER_SRC must name the source tree}
TEST_NAME=$(basename "$0" .sh)
T=$(mktemp -d "${TMPDIR:-/tmp}/drover-$TEST_NAME.XXXXXX")
DATA=$T/data
CONFIG=$T/droverd.yaml
LOG=$T/droverd.log
CLI_LOG=$T/cli.log # every CLI output of the test, for the secret greps
DROVERD_PID=
BG_PIDS=()   # standalone processes the test started
SEEN_PIDS=() # driver pids seen while droverd ran, killed at cleanup if still alive
OUT=
ERR=
RC=0

log() { echo "[$TEST_NAME] $*" >&2; }

dump_logs() {
	if [[ -s $LOG ]]; then
		echo "---- last lines of droverd's log ($LOG) ----" >&2
		tail -n 60 "$LOG" >&2 || true
	fi
}

fail() {
	echo "FAIL [$TEST_NAME]: $*" >&2
	if [[ -n $OUT || -n $ERR ]]; then
		echo "---- last CLI stdout ----" >&2
		printf '%s\n' "$OUT" | tail -n 40 >&2
		echo "---- last CLI stderr ----" >&2
		printf '%s\n' "$ERR" | tail -n 20 >&2
	fi
	dump_logs
	exit 1
}

# The pids of every descendant of $1, from /proc (children of each thread).
descendants() {
	local p kids k
	for p in "$@"; do
		kids=$(cat /proc/"$p"/task/*/children 2>/dev/null || true)
		for k in $kids; do
			echo "$k"
			descendants "$k"
		done
	done
}

alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }

# Waits up to $2 tenths of a second for pid $1 to go away.
wait_gone() {
	local i
	for ((i = 0; i < $2; i++)); do
		alive "$1" || return 0
		sleep 0.1
	done
	return 1
}

stop_droverd() {
	[[ -n $DROVERD_PID ]] || return 0
	local kids
	kids=$(descendants "$DROVERD_PID")
	SEEN_PIDS+=($kids)
	kill -TERM "$DROVERD_PID" 2>/dev/null || true
	if ! wait_gone "$DROVERD_PID" 100; then
		log "droverd did not stop within 10 s of SIGTERM; killing it"
		kill -KILL "$DROVERD_PID" 2>/dev/null || true
	fi
	wait "$DROVERD_PID" 2>/dev/null || true
	DROVERD_PID=
}

cleanup() {
	local rc=$?
	set +e
	stop_droverd
	local p
	for p in "${BG_PIDS[@]}" "${SEEN_PIDS[@]}"; do
		if alive "$p"; then
			kill -KILL "$p" 2>/dev/null
		fi
	done
	for p in "${BG_PIDS[@]}"; do
		wait "$p" 2>/dev/null
	done
	if ((rc != 0)) && [[ -z ${KEEP_TMP:-} ]]; then
		log "failed (exit $rc); set KEEP_TMP=1 to keep $T"
	fi
	if [[ -z ${KEEP_TMP:-} ]]; then
		rm -rf "$T"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need() {
	local f
	for f in "$@"; do
		[[ -x $BIN/$f ]] || fail "$BIN/$f is not built (this test needs it)"
	done
}

# Writes the config header every test shares; the test appends drivers: and projects:.
config_header() {
	mkdir -p "$DATA"
	cat >"$CONFIG" <<YAML
listen: {unix: $DATA/droverd.sock}
data_dir: $DATA
YAML
}

# Starts droverd on $CONFIG and waits until its API answers.
start_droverd() {
	need droverd drover
	"$BIN/droverd" --config "$CONFIG" >>"$LOG" 2>&1 &
	DROVERD_PID=$!
	local i
	for ((i = 0; i < 150; i++)); do
		if ! alive "$DROVERD_PID"; then
			wait "$DROVERD_PID" 2>/dev/null && rc=0 || rc=$?
			DROVERD_PID=
			fail "droverd exited (status $rc) before serving its API"
		fi
		if [[ -S $DATA/droverd.sock && -s $DATA/admin.token ]] &&
			"$BIN/drover" --server "unix:$DATA/droverd.sock" --token-file "$DATA/admin.token" project list \
				>/dev/null 2>&1; then
			return 0
		fi
		sleep 0.1
	done
	fail "droverd did not serve its API within 15 s"
}

# The real CLI pointed at this test's droverd.
drover() {
	"$BIN/drover" --server "unix:$DATA/droverd.sock" --token-file "$DATA/admin.token" "$@"
}

# capture CMD ARGS...: runs CMD without failing the test, keeps its exit
# status in $RC, stdout in $OUT (and $T/.out), stderr in $ERR (and $T/.err).
capture() {
	set +e
	"$@" >"$T/.out" 2>"$T/.err"
	RC=$?
	set -e
	OUT=$(cat "$T/.out")
	ERR=$(cat "$T/.err")
}

# run EXPECTED_EXIT ARGS...: runs the CLI, keeps stdout in $OUT and stderr in
# $ERR, and fails the test unless it exits with EXPECTED_EXIT ("any" skips the check).
run() {
	local want=$1
	shift
	capture drover "$@"
	# Outputs only: the command line may carry a secret on purpose (--secret).
	cat "$T/.out" "$T/.err" >>"$CLI_LOG"
	if [[ $want != any && $RC != "$want" ]]; then
		fail "drover $* exited $RC, expected $want"
	fi
}

# jq over $OUT; fails the test when $OUT is not JSON.
jout() {
	printf '%s' "$OUT" | jq -r "$@" || fail "cannot read the CLI's JSON output with jq $*"
}

contains() { # contains HAYSTACK NEEDLE WHAT
	[[ $1 == *"$2"* ]] || fail "$3: expected to find '$2'"
}

# Waits up to $1 seconds for the shell condition $2 to hold.
wait_for() {
	local secs=$1 cond=$2 i
	for ((i = 0; i < secs * 10; i++)); do
		if eval "$cond"; then
			return 0
		fi
		sleep 0.1
	done
	return 1
}

# The pid of the spawned driver of type $1, from `drover driver list --json`.
driver_pid() {
	drover --json driver list | jq -r --arg t "$1" '[.drivers[] | select(.type == $t)][0].pid // 0'
}

# Prints that pid once the driver is up, waiting up to 15 s: droverd's API
# answers before the drivers it spawns are. Fails (status 1) past that.
wait_driver_pid() {
	local p i
	for ((i = 0; i < 150; i++)); do
		p=$(driver_pid "$1")
		if [[ $p =~ ^[0-9]+$ ]] && ((p > 0)); then
			echo "$p"
			return 0
		fi
		sleep 0.1
	done
	return 1
}

# Starts another droverd on data directory $1 (config, store, socket, log
# there) with one sim backend; its pid in OTHER_PID, stopped at cleanup.
start_other_droverd() {
	local d=$1
	mkdir -p "$d"
	cat >"$d/droverd.yaml" <<YAML
listen: {unix: $d/droverd.sock}
data_dir: $d
drivers: {dirs: [$BIN]}
projects:
  - name: main
    backends:
      - {name: sim, type: sim, config: {state_file: $d/sim.json}, secrets: {api_key: other-secret-1234}}
YAML
	"$BIN/droverd" --config "$d/droverd.yaml" >>"$d/droverd.log" 2>&1 &
	OTHER_PID=$!
	BG_PIDS+=("$OTHER_PID")
}

# The CLI pointed at the droverd on data directory $1.
other_drover() {
	local d=$1
	shift
	"$BIN/drover" --server "unix:$d/droverd.sock" --token-file "$d/admin.token" "$@"
}

# Waits until the sim driver of the droverd on data directory $1 is ready;
# its socket path in SIM_SOCK, its pid in SIM_PID.
wait_other_sim() {
	local line
	wait_for 15 "line=\$(other_drover '$1' --json driver list 2>/dev/null | jq -r '.drivers[] | select(.type == \"sim\" and .state == \"DRIVER_STATE_READY\") | \"\(.address) \(.pid)\"'); [[ \$line == unix:* ]]" ||
		fail "the sim driver of the droverd on $1 did not start"
	read -r SIM_SOCK SIM_PID <<<"$line"
	SIM_SOCK=${SIM_SOCK#unix:}
}
