#!/usr/bin/env bash
# The CLI guides a new user: on-demand unless spot is asked for, an ARCH
# column, a suggestion for a misspelt GPU name, the filter that emptied a
# query, a project without backends named as such.
. "$(dirname "$0")/lib.sh"
need drover-driver-sim

config_header
cat >>"$CONFIG" <<YAML
drivers:
  dirs: [$BIN]
projects:
  - name: main
    backends:
      - name: simmy
        type: sim
        config: {state_file: $T/sim.json}
  - name: empty
YAML
start_droverd

# On-demand by default, in offers and in creates; spot only when asked.
run 0 --json offer --all
[[ $(jout '[.offers[] | select(.offer.resources.spot == true)] | length') == 0 ]] ||
	fail "drover offer without --spot listed spot offers"
run 0 --json offer --all --spot-policy auto
(($(jout '[.offers[] | select(.offer.resources.spot == true)] | length') > 0)) ||
	fail "--spot-policy auto listed no spot offer (the sim has some)"
run 0 --json offer --all --spot
[[ $(jout '[.offers[] | select(.offer.resources.spot != true)] | length') == 0 ]] ||
	fail "--spot listed on-demand offers"
run 2 offer --spot-policy sometimes
contains "$ERR" "spot-policy" "bad --spot-policy"
run 0 --json instance create --gpu H100 --name od
[[ $(jout '.instance.offer.resources.spot') != true ]] || fail "instance create --gpu H100 made a spot machine"
[[ $(jout '.instance.status') == INSTANCE_STATUS_RUNNING ]] || fail "instance od is not running: $OUT"
run 0 --json instance create --gpu H100 --spot --name sp
[[ $(jout '.instance.offer.resources.spot') == true ]] || fail "instance create --spot made an on-demand machine"

# The ARCH column, in offers and instances.
run 0 offer --gpu H100 --limit 3
head -1 <<<"$OUT" | grep -q ' ARCH ' || fail "no ARCH column in drover offer: $OUT"
grep -Eq ' (x86_64|arm64) ' <<<"$(sed -n 2p <<<"$OUT")" || fail "no architecture in the first offer row: $OUT"
run 0 instance list
head -1 <<<"$OUT" | grep -q ' ARCH ' || fail "no ARCH column in instance list: $OUT"
grep '^[^ ]* *od ' <<<"$OUT" | grep -Eq ' (x86_64|arm64) ' || fail "no architecture in instance od's row: $OUT"

# A misspelt GPU name: a suggestion from what the backends offer, exit 2.
run 2 offer --gpu H1OO
contains "$ERR" "no GPU named H1OO; did you mean H100?" "offer --gpu H1OO"
run 2 instance create --gpu H1OO --name typo
contains "$ERR" "no GPU named H1OO; did you mean H100?" "instance create --gpu H1OO"
# The filter that emptied the result is named.
run 0 offer --gpu H100 --max-price 0.01
contains "$OUT" "no offers match" "offer table of an empty query"
contains "$ERR" "--max-price emptied the result" "empty result by --max-price"
run 0 offer --gpu H100 --region nowhere-1
contains "$ERR" "--region emptied the result" "empty result by --region"
run 1 instance create --cpus 100000
contains "$ERR" "--cpus emptied the result" "create emptied by --cpus"

# A project without backends says so and shows how to add one.
run 0 offer --project empty
contains "$ERR" "project empty has no backends" "offer in an empty project"
contains "$ERR" "drover backend add" "offer in an empty project"
run 1 instance create --project empty
contains "$ERR" "project empty has no backends" "create in an empty project"
log "ok"
