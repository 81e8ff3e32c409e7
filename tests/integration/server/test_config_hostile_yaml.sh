#!/usr/bin/env bash
# droverd --config with hostile YAML (issue 12): an alias cycle and 20,000
# nested lists crashed it with SIGSEGV and no message, an alias bomb took
# gigabytes. Each must now be refused at once: exit status 1, an error naming
# the file, the line and the field, and bounded memory and time.
. "$(dirname "$0")/lib.sh"

# refused FILE WANT: droverd --config FILE exits 1 within 10 s with WANT on stderr.
refused() {
	capture timeout 10 "$BIN/droverd" --config "$1" --data-dir "$T/data-$RANDOM"
	[[ $RC == 1 ]] || fail "droverd --config $(basename "$1") exited $RC, expected 1 (124: timeout, >128: signal)"
	contains "$ERR" "$2" "droverd --config $(basename "$1")"
}

backend="projects:
  - name: main
    backends:
      - name: a
        type: sim"

printf '%s\n        config: &c {x: *c}\n' "$backend" >"$T/cycle.yaml"
refused "$T/cycle.yaml" "$T/cycle.yaml:6: projects[0].backends[0].config.x: an alias names a node that contains it (a cycle)"

{
	printf '%s\n        config: {x: ' "$backend"
	head -c 20000 /dev/zero | tr '\0' '['
	head -c 20000 /dev/zero | tr '\0' ']'
	printf '}\n'
} >"$T/deep.yaml"
refused "$T/deep.yaml" "$T/deep.yaml:6: projects[0].backends[0].config.x[0]"
contains "$ERR" "nested more than 64 levels deep" "deep.yaml"

{
	printf '%s\n        config:\n          a0: &a0 [lol]\n' "$backend"
	for i in 1 2 3 4 5 6 7 8 9; do
		p=$((i - 1))
		printf '          a%d: &a%d [*a%d,*a%d,*a%d,*a%d,*a%d,*a%d,*a%d,*a%d,*a%d,*a%d]\n' \
			"$i" "$i" "$p" "$p" "$p" "$p" "$p" "$p" "$p" "$p" "$p" "$p"
	done
} >"$T/bomb.yaml"
# 1 GB of address space is far more than droverd needs to refuse the file, and
# far less than expanding it would take.
capture bash -c "ulimit -v 1048576; exec timeout 10 '$BIN/droverd' --config '$T/bomb.yaml' --data-dir '$T/data-bomb'"
[[ $RC == 1 ]] || fail "droverd --config bomb.yaml exited $RC, expected 1"
contains "$ERR" "nodes (an alias counts as a copy of what it names)" "bomb.yaml"
log "ok"
