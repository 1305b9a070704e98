#!/bin/sh
# `make bench`: Remora (plain and with idle resilience filters) vs HAProxy vs
# nginx, side by side.  See
# tests/bench/bench.py for the knobs (BENCH_SECONDS, BENCH_ROUNDS, ...) and
# docs/benchmarks.md for the method and the latest table.
cd "$(dirname "$0")/../.." || exit 1
for t in /usr/bin/wrk /usr/sbin/haproxy /usr/sbin/nginx /usr/bin/taskset; do
	if [ ! -x "$t" ]; then
		echo "bench: $t missing; run 'make deps'" >&2
		exit 1
	fi
done
exec /usr/bin/python3 tests/bench/bench.py "$@"
