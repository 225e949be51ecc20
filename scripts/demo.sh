#!/bin/sh
# make demo: run the example agents on the sample data in examples/data.
set -eu
BUILD=${1:-build}
EDDY="$BUILD/eddy"
OUT=$(mktemp -d "${TMPDIR:-/tmp}/eddy-demo.XXXXXX")

echo "== order_triage (C): examples/order_triage.c over examples/data/orders.jsonl"
echo "   $EDDY run $BUILD/examples/order_triage.so --input examples/data/orders.jsonl \\"
echo "       --output $OUT/decisions.jsonl --key customer --state $OUT/state"
"$EDDY" run "$BUILD/examples/order_triage.so" --input examples/data/orders.jsonl \
    --output "$OUT/decisions.jsonl" --key customer --state "$OUT/state"
echo "-- first decisions:"
head -n 5 "$OUT/decisions.jsonl"
echo "-- decisions by kind:"
sed -n 's/.*"decision":"\([a-z]*\)".*/\1/p' "$OUT/decisions.jsonl" | sort | uniq -c
echo "-- lines that could not be used (dead letters):"
cat "$OUT/decisions.jsonl.dead.jsonl"
echo "-- run it again: the state says everything is done, nothing is repeated:"
"$EDDY" run "$BUILD/examples/order_triage.so" --input examples/data/orders.jsonl \
    --output "$OUT/decisions.jsonl" --key customer --state "$OUT/state"
echo "-- what the state holds for customer c007:"
"$EDDY" inspect --state "$OUT/state" --key c007 | sed -n '1,12p'

# An eddy built without Python says so on the second line of --version.
if ! "$EDDY" --version | grep -qx "Python agents: yes"; then
    echo
    echo "== review_agent (Python) left out: this eddy was built without Python"
elif [ -f examples/review_agent.py ] &&
    "$EDDY" run examples/review_agent.py --input examples/data/reviews.jsonl \
        --output "$OUT/reviews.jsonl" --quiet 2>/dev/null; then
    echo
    echo "== review_agent (Python): examples/review_agent.py over examples/data/reviews.jsonl"
    "$EDDY" run examples/review_agent.py --input examples/data/reviews.jsonl \
        --output "$OUT/reviews.jsonl"
    head -n 5 "$OUT/reviews.jsonl"
fi
echo
echo "outputs are in $OUT"
