#!/bin/sh
# make bench [QUICK=1]: run the benchmark suite (bench/bench.py) against the
# build directory $1, in mode $2 (quick or full); further arguments go to the
# driver (for example --only W3). Prints one table and writes
# bench/results/latest.json.
set -e
BUILD=${1:-build}
MODE=${2:-full}
[ $# -gt 0 ] && shift
[ $# -gt 0 ] && shift
HERE=$(cd "$(dirname "$0")/.." && pwd)
exec /usr/bin/python3 "$HERE/bench/bench.py" --build "$BUILD" --mode "$MODE" "$@"
