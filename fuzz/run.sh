#!/usr/bin/env bash
# Runs one libFuzzer target: first every input of its committed seed corpus
# (so that a reproducer committed there stays fixed), then fuzzing for
# SECONDS. New inputs go to WORK (a temporary directory unless given), never
# into the committed corpus; a crash is written to WORK/crash-* and ends the
# run with a non-zero status.
#   run.sh TARGET_BINARY SEED_DIR SECONDS [WORK] [libFuzzer flags...]
set -euo pipefail
if (($# < 3)); then
	echo "usage: $0 TARGET_BINARY SEED_DIR SECONDS [WORK] [libFuzzer flags...]" >&2
	exit 2
fi
bin=$1 seeds=$2 seconds=$3
shift 3
if (($# > 0)) && [[ $1 != -* ]]; then
	work=$1
	shift
	mkdir -p "$work"
else
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
fi
name=$(basename "$bin")
# -rss_limit_mb and -timeout turn runaway memory or time into findings; the
# limits are far above what one input of -max_len bytes may cost.
"$bin" -max_total_time="$seconds" -rss_limit_mb=1024 -timeout=10 -max_len=65536 \
	-print_final_stats=1 -artifact_prefix="$work/" "$@" "$work" "$seeds" 2>"$work/$name.log" || {
	rc=$?
	tail -n 60 "$work/$name.log" >&2
	ls "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-* 2>/dev/null >&2 || true
	echo "$name: libFuzzer failed (status $rc); log: $work/$name.log" >&2
	trap - EXIT
	exit 1
}
grep -E '^stat::number_of_executed_units|^stat::new_units_added|^stat::peak_rss_mb' "$work/$name.log" |
	sed "s/^/$name: /"
