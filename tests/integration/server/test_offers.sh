#!/usr/bin/env bash
# Offers across 3 sim backends, one slowed past the server's offers deadline
# and one failing every call: the offers of the healthy one come back in
# time, sorted and filtered, and both problems are reported beside them.
. "$(dirname "$0")/lib.sh"
need drover-driver-sim

config_header
cat >>"$CONFIG" <<YAML
drivers:
  dirs: [$BIN]
  offers_timeout_ms: 1000
projects:
  - name: main
    backends:
      - name: good
        type: sim
        config: {state_file: $T/good.json}
      - name: slow
        type: sim
        config: {latency_ms: 6000, state_file: $T/slow.json}
      - name: broken
        type: sim
        config: {error_rate: 1.0, state_file: $T/broken.json}
YAML
start_droverd

start=$(date +%s%N)
run 0 --json offer --gpu H100
ms=$((($(date +%s%N) - start) / 1000000))
((ms < 4000)) || fail "offers took $ms ms; the slow backend was not cut at the 1000 ms deadline"
n=$(jout '.offers | length')
((n > 0)) || fail "no offers from the healthy backend"
[[ $(jout '[.offers[] | select(.backend != "good")] | length') == 0 ]] || fail "offers from a failing backend"
[[ $(jout '.backends[] | select(.backend == "slow") | .code') == DEADLINE_EXCEEDED ]] ||
	fail "the slow backend is not reported as DEADLINE_EXCEEDED"
bc=$(jout '.backends[] | select(.backend == "broken") | .code')
[[ -n $bc && $bc != OK && $bc != null ]] || fail "the failing backend is not reported (code '$bc')"
[[ $(jout '.backends[] | select(.backend == "good") | .code') == OK ]] || fail "the good backend is not OK"
# Sorted by price, and every offer has an H100.
jout '[.offers[].offer.price_per_hour] | . == sort' | grep -qx true || fail "offers are not sorted by price"
[[ $(jout '[.offers[] | select([.offer.resources.gpus[].name | ascii_downcase] | index("h100") | not)] | length') == 0 ]] ||
	fail "an offer without an H100 passed the --gpu H100 filter"

# Human output: the table, and both problems on stderr.
run 0 offer --gpu H100
contains "$OUT" "PRICE/H" "offer table"
contains "$OUT" "good" "offer table"
contains "$ERR" "backend slow" "slow backend report"
contains "$ERR" "DEADLINE_EXCEEDED" "slow backend report"
contains "$ERR" "backend broken" "failing backend report"

# Filters and limits reach the server.
run 0 --json offer --gpu H100 --limit 2
[[ $(jout '.offers | length') == 2 ]] || fail "--limit 2 did not give 2 offers"
(($(jout '.total_offers') >= 2)) || fail "total_offers below the shown count"
cheapest=$(jout '.offers[0].offer.price_per_hour')
run 0 --json offer --max-price "$cheapest"
[[ $(jout --argjson p "$cheapest" '[.offers[] | select(.offer.price_per_hour > $p)] | length') == 0 ]] ||
	fail "--max-price let a dearer offer through"
run 0 --json offer --cpus 64 --memory 256GB:
[[ $(jout '[.offers[] | select(.offer.resources.cpus < 64 or .offer.resources.memory_mib < 262144)] | length') == 0 ]] ||
	fail "--cpus/--memory minimums not applied"
run 0 --json offer --spot
[[ $(jout '[.offers[] | select(.offer.resources.spot != true)] | length') == 0 ]] || fail "--spot returned on-demand offers"
log "ok"
