#!/bin/bash
# cpu-budget.sh [CPU_SECONDS] [target...]: the long fuzz campaign.  Runs each
# libFuzzer target (build/fuzz/<target>_fuzz, `make fuzz-bins`) over a scratch
# copy of its seed corpus until the fuzzer process itself has used
# CPU_SECONDS of CPU time (utime + stime from /proc, default 600 = the
# 10 CPU-minutes of issue 10), so a loaded machine does not shorten the run.
# Prints one line per target: executions, CPU seconds, wall seconds and the
# number of crash/leak/timeout artifacts (saved under build/fuzz/artifacts/).
cpu=${1:-600}; shift
targets=("$@")
[ ${#targets[@]} -eq 0 ] && for f in build/fuzz/*_fuzz; do targets+=("$(basename "$f" _fuzz)"); done
tck=$(getconf CLK_TCK)
rc=0
for n in "${targets[@]}"; do
	bin=build/fuzz/${n}_fuzz
	[ -x "$bin" ] || { echo "$n: $bin missing (make fuzz-bins)"; rc=1; continue; }
	work=$(mktemp -d /tmp/remora-fuzz-$n.XXXXXX)
	cp tests/fuzz/corpus/"$n"/* "$work"/ 2>/dev/null
	mkdir -p build/fuzz/artifacts/"$n"
	start=$(date +%s)
	dict=(); [ -f tests/fuzz/"$n".dict ] && dict=(-dict=tests/fuzz/"$n".dict)
	"$bin" "${dict[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix=build/fuzz/artifacts/"$n"/ "$work" > "$work.log" 2>&1 &
	pid=$!
	used=0
	while kill -0 $pid 2>/dev/null; do
		used=$(awk -v t="$tck" '{printf "%d", ($14 + $15) / t}' /proc/$pid/stat 2>/dev/null || echo "$used")
		[ "$used" -ge "$cpu" ] && { kill -INT $pid; break; }
		sleep 5
	done
	wait $pid
	execs=$(sed -n 's/^stat::number_of_executed_units: //p' "$work.log")
	arts=$(ls build/fuzz/artifacts/"$n" | wc -l)
	echo "$n: ${execs:-?} executions, ${used} CPU s, $(( $(date +%s) - start )) s wall, $arts artifacts"
	[ "$arts" -eq 0 ] || { tail -n 30 "$work.log"; rc=1; }
	rm -rf "$work" "$work.log"
done
exit $rc
