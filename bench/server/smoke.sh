#!/bin/sh
# bench-smoke for drover-bench-server: --quick runs to the end, exits 0
# (every row was measured), prints all six rows with a verdict and writes
# JSON with six rows. The figures are not checked: a timed test on a shared
# machine flakes.
set -u
bench=$1
json=$2
out=$("$bench" --quick --json "$json") || { echo "$out"; echo "smoke: drover-bench-server exited non-zero"; exit 1; }
echo "$out"
for row in "1 +GetOffers 16x1000" "2 +create\+terminate" "3a +droverd RSS idle" "3b +droverd RSS, " "3c +droverd, " "4 +60 MB hostile"; do
	echo "$out" | grep -Eq "^$row.*(PASS|FAIL)\$" || { echo "smoke: row '$row' missing or without a verdict"; exit 1; }
done
n=$(grep -c '"verdict"' "$json")
[ "$n" = 6 ] || { echo "smoke: $json has $n rows, not 6"; exit 1; }
echo "smoke: ok"
