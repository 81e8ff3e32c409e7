#!/usr/bin/env bash
# Hostile GetOffers answers (docs/PROTOCOL.md §12.1-12.2) beside a healthy
# sim backend: a 60 MB answer and a 25,000-offer answer each fail only their
# own backend, with the limit named, and droverd's peak RSS stays within
# about twice the 16 MiB cap; offers with bad prices, empty or over-long or
# non-UTF-8 text, GiB for MiB, GPU memory implausible for a known GPU, or
# another backend's type are dropped (and
# counted) or stamped; `instance create --cpus 1` never lands on a bad
# offer; a driver's own `limits:` entry overrides drivers.limits; a remote
# (TCP) driver's answer is bounded the same way; and pages of the merged
# answer add up to the whole.
. "$(dirname "$0")/lib.sh"
need drover-driver-sim fixture-driver-broken-sdk

# A remote driver with the huge-offers fault, reached over loopback TCP.
"$BIN/fixture-driver-broken-sdk" --fault huge-offers --listen 127.0.0.1:0 --insecure >"$T/far.out" 2>"$T/far.err" &
BG_PIDS+=($!)
wait_for 10 "grep -q '|' '$T/far.out'" || fail "the remote hostile driver printed no address: $(cat "$T/far.err")"
far=$(cut -d'|' -f4 <"$T/far.out" | head -n 1)

broken() { # broken TYPE FAULT: a drivers.commands entry
	echo "    - {type: $1, path: $BIN/fixture-driver-broken-sdk, args: [--fault, $2]}"
}
config_header
{
	cat <<YAML
drivers:
  dirs: [$BIN]
  offers_timeout_ms: 20000
  commands:
YAML
	broken huge huge-offers
	broken many too-many-offers
	broken prices bad-prices
	broken fields bad-fields
	broken longs long-strings
	broken utf8 bad-utf8
	broken liar claims-other-backend
	broken gpus offer-gpu-implausible
	echo "    - {type: many-ok, path: $BIN/fixture-driver-broken-sdk, args: [--fault, too-many-offers], limits: {offers: 30000}}"
	cat <<YAML
  remote:
    - {type: far, address: $far, insecure: true}
projects:
  - name: main
    backends:
      - {name: good, type: sim, config: {state_file: $T/good.json}}
      - {name: prices, type: prices, config: {project: p}}
      - {name: fields, type: fields, config: {project: p}}
      - {name: longs, type: longs, config: {project: p}}
      - {name: utf8, type: utf8, config: {project: p}}
      - {name: liar, type: liar, config: {project: p}}
      - {name: gpus, type: gpus, config: {project: p}}
  - name: flood
    backends:
      - {name: good, type: sim, config: {state_file: $T/flood-good.json}}
      - {name: huge, type: huge, config: {project: p, huge_offers_bytes: 60000000}}
      - {name: many, type: many, config: {project: p}}
  - name: override
    backends:
      - {name: many-ok, type: many-ok, config: {project: p}}
  - name: far
    backends:
      - {name: good, type: sim, config: {state_file: $T/far-good.json}}
      - {name: far, type: far, config: {project: p, huge_offers_bytes: 60000000}}
YAML
} >>"$CONFIG"
start_droverd

status_kb() { awk -v k="$1:" '$1 == k {print $2}' /proc/"$DROVERD_PID"/status; }
# Resets droverd's peak RSS (VmHWM) to its current RSS.
reset_peak() { echo 5 >/proc/"$DROVERD_PID"/clear_refs; }

# ---- bad offers: dropped, counted, stamped; the healthy backend unharmed ----
run 0 --json offer --all
good=$(jout '[.offers[] | select(.backend == "good")] | length')
((good > 0)) || fail "no offers from the healthy sim backend"
for b in prices fields longs utf8; do
	[[ $(jout --arg b "$b" '.backends[] | select(.backend == $b) | .code') == OK ]] ||
		fail "backend $b: a backend with some bad offers still answered OK"
	bad=$(jout --arg b "$b" '.backends[] | select(.backend == $b) | .bad_offers // 0')
	((bad > 0)) || fail "backend $b: no bad offers counted"
done
[[ $(jout '.backends[] | select(.backend == "prices") | .bad_offers') == 7 ]] ||
	fail "bad-prices: expected all 7 bad prices (-5, 0, 5e-324, NaN, inf, -inf, 1e9) dropped"
[[ $(jout '[.offers[] | select(.offer.instance_type | startswith("bad.price"))] | length') == 0 ]] ||
	fail "an offer with a bad price was listed"
[[ $(jout '[.offers[] | select((.offer.instance_type // "") == "" or (.offer.region // "") == "")] | length') == 0 ]] ||
	fail "an offer with an empty instance type or region was listed"
[[ $(jout '[.offers[] | select((.offer.instance_type | length) > 128 or (.offer.region | length) > 128)] | length') == 0 ]] ||
	fail "an offer with an over-long string was listed"
[[ $(jout '[.offers[] | .offer.resources.gpus[]? | select(.memory_mib | tonumber < 1024)] | length') == 0 ]] ||
	fail "an offer with GPU memory in GiB was listed"
# Every GPU offer of backend gpus claims 16,384 MiB for an L4, A100 or MI300X: within any GPU's
# bounds, implausible for those by the known-GPU table. Its CPU offers are good and listed.
(($(jout '.backends[] | select(.backend == "gpus") | .bad_offers // 0') > 0)) ||
	fail "backend gpus: no offer with GPU memory implausible for its known GPU was dropped"
[[ $(jout '[.offers[] | select(.backend == "gpus") | .offer.resources.gpus[]?] | length') == 0 ]] ||
	fail "an offer with GPU memory implausible for its known GPU was listed"
(($(jout '[.offers[] | select(.backend == "gpus")] | length') > 0)) || fail "backend gpus: its CPU offers were lost"
[[ $(jout '[.offers[] | select(.backend == "liar" and .offer.backend_type != "liar")] | length') == 0 ]] ||
	fail "an offer of backend liar kept the backend_type its driver claimed"
(($(jout '[.offers[] | select(.backend == "liar")] | length') > 0)) || fail "the liar's (good) offers were lost"
for b in utf8 longs; do
	((($(jout --arg b "$b" '[.offers[] | select(.backend == $b)] | length') > 0))) ||
		fail "backend $b: its good offers were lost with the bad ones"
done
run 0 event list
contains "$OUT" "offers.dropped" "the warning event about dropped offers"
n_events=$(grep -c "offers.dropped.*prices\|prices.*offers.dropped" <<<"$OUT" || true)
run 0 offer
run 0 event list
[[ $(grep -c "offers.dropped.*prices\|prices.*offers.dropped" <<<"$OUT" || true) == "$n_events" ]] ||
	fail "a second query within the minute raised a second offers.dropped event for backend prices"

# ---- paging: the default shows 50 and says how many more; pages add up ----
run 0 --json offer --all
total=$(jout '.offers | length')
((total > 50)) || fail "too few offers ($total) to test paging"
all_types=$(jout '[.offers[] | .backend + "/" + .offer.instance_type + "/" + .offer.region + "/" + (.offer.price_per_hour | tostring)] | join(",")')
run 0 offer
contains "$OUT" "$((total - 50)) more: --limit N or --all" "the default 50 and its hint"
[[ $(grep -v 'more: --limit' <<<"$OUT" | grep -c '^[0-9]') == 50 ]] || fail "drover offer printed other than 50 rows"
# Pages of 7 through the API must give the same offers as one --all.
run 0 --json offer --limit 120
[[ $(jout '.offers | length') == 120 ]] || fail "--limit 120 gave other than 120 offers"
first120=$(jout '[.offers[] | .backend + "/" + .offer.instance_type + "/" + .offer.region + "/" + (.offer.price_per_hour | tostring)] | join(",")')
[[ ${all_types:0:${#first120}} == "$first120" ]] || fail "the first 120 offers across pages differ from --all's"

# ---- instance create never picks a bad offer ----
run 0 --json instance create --cpus 1 --name cheap
price=$(jout '.instance.offer.price_per_hour')
backend=$(jout '.instance.backend')
[[ $backend != prices && $backend != fields ]] || fail "instance create picked backend $backend's offer"
awk -v p="$price" 'BEGIN { exit !(p >= 0.000001 && p < 10000) }' || fail "instance create picked a price of $price"

# ---- floods: limits named, healthy offers arrive, RSS bounded ----
run 0 driver list
contains "$OUT" "huge" "driver list"
reset_peak
idle_kb=$(status_kb VmRSS)
run 0 --json --project flood offer --all
[[ $(jout '.backends[] | select(.backend == "good") | .code') == OK ]] || fail "flood: the healthy backend failed"
(($(jout '[.offers[] | select(.backend == "good")] | length') > 0)) || fail "flood: no healthy offers"
[[ $(jout '[.offers[] | select(.backend == "huge" or .backend == "many")] | length') == 0 ]] || fail "flood: offers of a flooding backend"
msg=$(jout '.backends[] | select(.backend == "huge") | .message')
contains "$msg" "16 MiB" "the huge answer's failure"
contains "$msg" "drivers.limits.offers_answer_bytes" "the huge answer's failure"
msg=$(jout '.backends[] | select(.backend == "many") | .message')
contains "$msg" "more than 20000 offers" "the 25,000-offer answer's failure"
contains "$msg" "drivers.limits.offers" "the 25,000-offer answer's failure"
hwm_kb=$(status_kb VmHWM)
log "droverd RSS $((idle_kb / 1024)) MiB before, peak $((hwm_kb / 1024)) MiB after a 60 MB answer (cap 16 MiB)"
# The quota allows twice the cap; 44 MiB leaves room for the healthy answer and gRPC's own
# bookkeeping, and is still far below what an unbounded answer costs (about 60 MiB when gRPC
# buffers it whole, 340 MiB when it is unpacked).
(((hwm_kb - idle_kb) < 44 * 1024)) ||
	fail "a 60 MB answer raised droverd's peak RSS by $(((hwm_kb - idle_kb) / 1024)) MiB (cap 16 MiB, allowed ~2x)"

# A driver's own limits: (here offers: 30000) win over drivers.limits.
run 0 --json --project override offer --limit 1
[[ $(jout '.backends[] | select(.backend == "many-ok") | .code') == OK ]] ||
	fail "a driver whose own limits: allow 30,000 offers failed its 25,000"
[[ $(jout '.backends[] | select(.backend == "many-ok") | .offer_count') == 25000 ]] ||
	fail "a driver whose own limits: allow 30,000 offers did not deliver its 25,000"

# The same over TCP, from a driver droverd did not spawn.
reset_peak
idle_kb=$(status_kb VmRSS)
run 0 --json --project far offer --all
(($(jout '[.offers[] | select(.backend == "good")] | length') > 0)) || fail "far: no healthy offers"
msg=$(jout '.backends[] | select(.backend == "far") | .message')
contains "$msg" "drivers.limits.offers_answer_bytes" "the remote huge answer's failure"
hwm_kb=$(status_kb VmHWM)
log "droverd RSS $((idle_kb / 1024)) MiB before, peak $((hwm_kb / 1024)) MiB after a remote 60 MB answer"
(((hwm_kb - idle_kb) < 44 * 1024)) ||
	fail "a remote 60 MB answer raised droverd's peak RSS by $(((hwm_kb - idle_kb) / 1024)) MiB"
run 0 driver list
contains "$OUT" "huge" "driver list after the flood"
log "ok"
