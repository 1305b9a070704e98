#!/bin/sh
# run-one.sh BIN CORPUS SECONDS: run a libFuzzer target over a scratch copy of
# its seed corpus (the committed corpus stays as it is).  A crash is saved
# under tests/fuzz/ as crash-* (add it to the corpus as a regression seed).
#
# The exploration is random but reproducible: libFuzzer's -seed is $FUZZ_SEED,
# or else derived from the UTC date (YYYYMMDD: one seed a day, the same in CI
# and on a workstation that day).  On a failure the seed, the command that
# reruns it and each artifact (crash/leak/timeout/oom input) as base64 are
# printed, so a CI log alone is enough to reproduce the finding
# (docs/security.md, "Reproducing a fuzz finding from a CI log").
bin=$1; corpus=$2; secs=$3
seed=${FUZZ_SEED:-$(date -u +%Y%m%d)}
name=$(basename "$bin" _fuzz)
work=$(mktemp -d /tmp/remora-fuzz.XXXXXX)
arts=$(mktemp -d /tmp/remora-fuzz-art.XXXXXX)
cp "$corpus"/* "$work"/ 2>/dev/null
dict=tests/fuzz/$name.dict
[ -f "$dict" ] && set -- -dict="$dict" || set --
"$bin" "$@" -seed="$seed" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
	-print_final_stats=0 -artifact_prefix="$arts/" "$work" > "$work.log" 2>&1
rc=$?
if [ $rc != 0 ]; then
	tail -n 40 "$work.log"
	echo "fuzz $name: FAILED with -seed=$seed (exit $rc) over $secs s"
	echo "fuzz $name: rerun: FUZZ_SEED=$seed sh tests/fuzz/run-one.sh $bin $corpus $secs"
	for a in "$arts"/*; do
		[ -f "$a" ] || continue
		base=$(basename "$a")
		cp "$a" tests/fuzz/ 2>/dev/null
		size=$(wc -c < "$a")
		echo "fuzz $name: artifact $base ($size bytes), saved as tests/fuzz/$base; base64:"
		echo "----- BEGIN $base -----"
		if [ "$size" -le 65536 ]; then
			base64 < "$a"
		else
			head -c 65536 "$a" | base64
			echo "(cut: the first 64 KiB of $size bytes)"
		fi
		echo "----- END $base -----"
		echo "fuzz $name: reproduce: put the lines between the markers in /tmp/$base.b64, then" \
			"base64 -d /tmp/$base.b64 > /tmp/$base && $bin /tmp/$base"
	done
fi
rm -rf "$work" "$work.log" "$arts"
exit $rc
