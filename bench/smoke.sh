#!/bin/sh
# bench-smoke: drover-bench --quick runs to the end, exits 0 (every row was
# measured), prints all eight rows with a verdict and writes JSON with eight
# rows. The figures are not checked: a timed test on a shared machine flakes.
set -u
bench=$1
json=$2
out=$("$bench" --quick --json "$json") || { echo "$out"; echo "smoke: drover-bench exited non-zero"; exit 1; }
echo "$out"
for row in "1 +GetFeatures latency" "2 +GetFeatures calls/s" "3 +GetOffers" "4 +spawn" "5 +idle driver RSS" \
	"6 +py sdk: spawn" "7 +py sdk: calls/s" "8 +py sdk: idle RSS"; do
	echo "$out" | grep -Eq "^$row.*(PASS|FAIL)\$" || { echo "smoke: row '$row' missing or without a verdict"; exit 1; }
done
n=$(grep -c '"measure"' "$json")
[ "$n" = 8 ] || { echo "smoke: $json has $n rows, not 8"; exit 1; }
echo "smoke: ok"
