#!/usr/bin/python3
"""Where the memory and the main thread's time go when N EDS clusters (one
endpoint each) arrive over ADS: the measurements behind docs/xds.md, *Scale*.

  python3 tests/bench/xds_profile.py massif [N] [sotw|delta]
      Remora under valgrind massif; once every cluster is warm (and 1 s
      idle) a detailed snapshot is taken through vgdb and summarised: heap
      bytes per cluster by allocation site (the top of each stack that is
      Remora's own code).  Default N = 2000.
  python3 tests/bench/xds_profile.py perf [N] [sotw|delta]
      perf record of Remora's main thread from the push until every cluster
      is warm; prints `perf report` (self time, top symbols).  Default
      N = 10000.
  python3 tests/bench/xds_profile.py callgrind [N] [sotw|delta]
      Remora under callgrind with instrumentation switched on from the push
      until every cluster is warm; prints callgrind_annotate (self and
      inclusive).  Default N = 10000 (slow: ~1 min).

REMORA_BIN (default build/remora, the release build); PROFILE_KEEP=1 keeps
the work directory (massif.out, perf.data)."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness  # noqa: E402
from test_xds import CDS, EDS, ControlPlane, cla, eds_cluster, last_request, xds_bootstrap  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def slow_cluster(name):
    """An EDS cluster whose endpoints may take 10 min (under valgrind the
    default 15 s initial_fetch_timeout would fire during the push)."""
    c = eds_cluster(name)
    c["eds_cluster_config"]["eds_config"]["initial_fetch_timeout"] = {"seconds": 600}
    return c


def push(cp, n, delta, r):
    """The full set: n ClusterLoadAssignments then n Clusters; returns once
    Remora is ready (every cluster warm)."""
    cp.set("eds", "1", [cla(f"c{i}", [10000 + i % 1000]) for i in range(n)])
    cp.set("cds", "1", [slow_cluster(f"c{i}") for i in range(n)])
    r.wait_ready(timeout=1200)


def start(cp, work, delta, wrapper=None, log_level="warning"):
    b = xds_bootstrap(harness.free_port(), cp.grpc_port, fetch_timeout={"seconds": 600},
                      api_type="AGGREGATED_DELTA_GRPC" if delta else "GRPC")
    if wrapper is not None:
        os.environ["REMORA_WRAPPER"] = wrapper
    r = harness.Remora(work, b, log_level=log_level, drain_time_s=1)
    cp.set("lds", "0", [])
    r.start(wait_ready=False, timeout=120)
    harness.wait_until(lambda: last_request(cp, CDS), 120)
    time.sleep(0.5)
    os.environ.pop("REMORA_WRAPPER", None)
    return r


# Frames that are not the interesting allocation site (skipped when
# attributing a leaf's bytes to a site): allocators and library internals.
GENERIC = re.compile(r"^(x?malloc|x?calloc|x?realloc|xstrn?dup|xasprintf|strn?dup|posix_memalign|"
                     r"aligned_alloc|jsonp?_|json_|hashtable_|dump_|do_dump|protobuf_c_|"
                     r"evbuffer_|event_|v?asprintf|scope_alloc|put_str|\?\?\?|__)")


def massif_summary(path, n):
    """Bytes per cluster by allocation site from a detailed massif snapshot:
    each leaf of the allocation tree is attributed to the first frame (from
    the allocator outwards) that is not generic, with the two frames above
    it for context."""
    lines = open(path).read().splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("heap_tree="))
    total = int(next(line for line in lines if line.startswith("mem_heap_B=")).split("=")[1])
    extra = int(next(line for line in lines if line.startswith("mem_heap_extra_B=")).split("=")[1])
    stack = []
    by = {}
    for line in lines[i + 1:]:
        m = re.match(r"^( *)n(\d+): (\d+) (.*)$", line)
        if not m:
            break
        depth, nch, nbytes, desc = len(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4)
        desc = re.sub(r"^0x[0-9A-F]+: ", "", desc)
        stack = stack[:depth]
        stack.append(desc)
        if nch:
            continue
        frames = stack[1:]
        k = next((j for j, f in enumerate(frames) if not GENERIC.match(f)), None)
        if k is None:
            key = " < ".join(frames[:3]) or "(other)"
        else:
            key = " < ".join(frames[k:k + 3])
            if k:
                key = frames[k - 1].split(" (")[0] + " @ " + key
        by[key] = by.get(key, 0) + nbytes
    print(f"heap in use: {total} B + {extra} B malloc overhead = "
          f"{(total + extra) / n:.0f} B per cluster with its endpoint")
    for key, b in sorted(by.items(), key=lambda x: -x[1])[:45]:
        if b * 200 < total:
            break
        print(f"{b / n:7.0f} B  {key[:190]}")


def run_massif(n, delta):
    cp = ControlPlane()
    work = tempfile.mkdtemp(prefix="remora-xds-massif.")
    mout = os.path.join(work, "massif.out")
    snap = os.path.join(work, "snapshot.out")
    r = start(cp, work, delta, wrapper=f"valgrind --tool=massif --vgdb=yes "
              f"--massif-out-file={mout} --threshold=0.01 --detailed-freq=1000000")
    try:
        rss0 = r.rss_kb()
        push(cp, n, delta, r)
        time.sleep(1.0)
        subprocess.run(["vgdb", f"--pid={r.pid}", "detailed_snapshot", snap], check=True,
                       capture_output=True, timeout=120)
        rss1 = r.rss_kb()
        print(f"N = {n} ({'delta' if delta else 'SotW'}), massif; RSS (under valgrind) "
              f"{rss0} -> {rss1} kB")
        massif_summary(snap, n)
    finally:
        r.stop(check=False, timeout=60)
        cp.stop()
        if not os.environ.get("PROFILE_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("kept", work)


def run_perf(n, delta):
    cp = ControlPlane()
    work = tempfile.mkdtemp(prefix="remora-xds-perf.")
    data = os.path.join(work, "perf.data")
    r = start(cp, work, delta)
    try:
        perf = subprocess.Popen(["perf", "record", "-F", "2000", "-g", "-t", str(r.pid), "-o", data],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        push(cp, n, delta, r)
        time.sleep(0.2)
        perf.send_signal(2)
        perf.wait(timeout=60)
        rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio",
                              "--percent-limit", "0.7", "-g", "none", "--sort", "dso,symbol"],
                             capture_output=True, text=True).stdout
        print(f"N = {n} ({'delta' if delta else 'SotW'}), perf of the main thread, self time")
        print("\n".join(line for line in rep.splitlines() if line and not line.startswith("#")))
        rep = subprocess.run(["perf", "report", "-i", data, "--children", "--stdio",
                              "--percent-limit", "3", "-g", "none", "--sort", "symbol"],
                             capture_output=True, text=True).stdout
        print("inclusive (children):")
        print("\n".join(line for line in rep.splitlines() if line and not line.startswith("#")))
    finally:
        r.stop(check=False)
        cp.stop()
        if not os.environ.get("PROFILE_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("kept", work)


def run_callgrind(n, delta):
    cp = ControlPlane()
    work = tempfile.mkdtemp(prefix="remora-xds-callgrind.")
    out = os.path.join(work, "callgrind.out")
    r = start(cp, work, delta, wrapper=f"valgrind --tool=callgrind --instr-atstart=no "
              f"--callgrind-out-file={out}")
    try:
        subprocess.run(["callgrind_control", "-i", "on", str(r.pid)], check=True,
                       capture_output=True, timeout=60)
        push(cp, n, delta, r)
        subprocess.run(["callgrind_control", "-i", "off", str(r.pid)], check=True,
                       capture_output=True, timeout=60)
        subprocess.run(["callgrind_control", "-d", str(r.pid)], check=True,
                       capture_output=True, timeout=120)
        dumps = sorted(f for f in os.listdir(work) if f.startswith("callgrind.out"))
        path = os.path.join(work, dumps[-1])
        print(f"N = {n} ({'delta' if delta else 'SotW'}), callgrind from the push until ready")
        for incl in ("no", "yes"):
            rep = subprocess.run(["callgrind_annotate", f"--inclusive={incl}", "--threshold=99",
                                  path], capture_output=True, text=True).stdout
            print(f"--- inclusive={incl}")
            body = rep.split("file:function", 1)[-1].splitlines()
            print("\n".join(line[:160] for line in body[:45 if incl == "no" else 70]))
    finally:
        r.stop(check=False, timeout=60)
        cp.stop()
        if not os.environ.get("PROFILE_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("kept", work)


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "massif"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else (2000 if mode == "massif" else 10000)
    delta = (sys.argv[3] if len(sys.argv) > 3 else "sotw") == "delta"
    os.environ.setdefault("REMORA_BIN", os.path.join(ROOT, "build", "remora"))
    if mode == "massif":
        run_massif(n, delta)
    elif mode == "perf":
        run_perf(n, delta)
    elif mode == "callgrind":
        run_callgrind(n, delta)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
