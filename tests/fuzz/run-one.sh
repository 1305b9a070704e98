#!/bin/sh
# run-one.sh BIN CORPUS SECONDS: run a libFuzzer target over a scratch copy of
# its seed corpus (the committed corpus stays as it is).  A crash is saved
# under tests/fuzz/ as crash-* (add it to the corpus as a regression seed).
bin=$1; corpus=$2; secs=$3
work=$(mktemp -d /tmp/remora-fuzz.XXXXXX)
cp "$corpus"/* "$work"/ 2>/dev/null
dict=tests/fuzz/$(basename "$bin" _fuzz).dict
[ -f "$dict" ] && set -- -dict="$dict" || set --
"$bin" "$@" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=0 \
	-artifact_prefix=tests/fuzz/ "$work" > "$work.log" 2>&1
rc=$?
if [ $rc != 0 ]; then
	tail -n 40 "$work.log"
fi
rm -rf "$work" "$work.log"
exit $rc
