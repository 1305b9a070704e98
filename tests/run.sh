#!/bin/sh
# Runs every unit test binary and the integration suite against the
# sanitizer build, then prints one summary line: "N passed, N failed[, N skipped]".
# ONLY=unit|integration restricts the run.  PYTEST_ARGS are passed to pytest.
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/asan}
export REMORA_BIN="$PWD/$BUILD/remora"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1:quarantine_size_mb=16}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
passed=0; failed=0; skipped=0
log=$(mktemp -d /tmp/remora-test.XXXXXX)

if [ "${ONLY:-unit}" = unit ] || [ -z "$ONLY" ]; then
	for t in $(find "$BUILD/tests" -type f -perm -u+x 2>/dev/null | sort); do
		name=${t#"$BUILD/tests/"}
		"$t" > "$log/unit.out" 2> "$log/unit.err"
		rc=$?
		p=$(grep -c '^ok - ' "$log/unit.out"); f=$(grep -c '^not ok - ' "$log/unit.out")
		if [ "$rc" != 0 ] && [ "$f" = 0 ]; then
			# crashed or a sanitizer fired outside a check: count as a failure
			f=$((f + 1))
			echo "not ok - $name exited with status $rc"
		fi
		echo "unit $name: $p passed, $f failed"
		if [ "$f" != 0 ]; then grep '^not ok' "$log/unit.out"; tail -n 40 "$log/unit.err"; fi
		passed=$((passed + p)); failed=$((failed + f))
	done
fi

# Each libFuzzer target runs briefly over its seed corpus (longer: make fuzz).
# The seed is fixed for the whole run (FUZZ_SEED, default the UTC date) and
# printed, so a finding can be replayed (docs/security.md).
if [ "${ONLY:-fuzz}" = fuzz ] || [ -z "$ONLY" ]; then
	export FUZZ_SEED="${FUZZ_SEED:-$(date -u +%Y%m%d)}"
	[ -n "$(find build/fuzz -maxdepth 1 -type f -name '*_fuzz' 2>/dev/null)" ] &&
		echo "fuzz smoke: libFuzzer -seed=$FUZZ_SEED, ${FUZZ_SECONDS:-5} s a target (FUZZ_SEED=N to choose)"
	for f in $(find build/fuzz -maxdepth 1 -type f -name '*_fuzz' 2>/dev/null | sort); do
		n=$(basename "$f" _fuzz)
		if sh tests/fuzz/run-one.sh "$f" "tests/fuzz/corpus/$n" "${FUZZ_SECONDS:-5}"; then
			echo "ok - fuzz $n"; passed=$((passed + 1))
		else
			echo "not ok - fuzz $n"; failed=$((failed + 1))
		fi
	done
fi

if [ "${ONLY:-integration}" = integration ] || [ -z "$ONLY" ]; then
	if [ -d tests/integration ] && ls tests/integration/test_*.py >/dev/null 2>&1; then
		/usr/bin/python3 -m pytest -q -rfEs -p no:cacheprovider --junitxml="$log/junit.xml" \
			tests/integration $PYTEST_ARGS
		counts=$(/usr/bin/python3 - "$log/junit.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
try:
    r = ET.parse(sys.argv[1]).getroot()
except Exception:
    print("0 1 0"); sys.exit()
suites = [r] if r.tag == "testsuite" else list(r)
t = sum(int(s.get("tests", 0)) for s in suites)
f = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
s = sum(int(x.get("skipped", 0)) for x in suites)
print(t - f - s, f, s)
PY
)
		set -- $counts
		passed=$((passed + $1)); failed=$((failed + $2)); skipped=$((skipped + $3))
	fi
fi
rm -rf "$log"
if [ "$skipped" != 0 ]; then
	echo "$passed passed, $failed failed, $skipped skipped"
else
	echo "$passed passed, $failed failed"
fi
[ "$failed" = 0 ]
