#!/usr/bin/env python3
"""milter-rss.py: peak resident memory (VmHWM) of ringmx while 50 sessions
send 10 MB messages (10^7 octets) at once through --milter (the libmilter
filter tests/milter/rmx_testmilter, accepting all), for each ringmx binary
named, the binaries alternating, same filter, defaults otherwise (2
workers, durable). Also MB/s accepted and the messages streamed to a
segment of their own (the gateway's stop line). Run from the source tree
after `ninja -C build`:

    python3 bench/milter-rss.py [--runs N] [--messages M] BINARY...

e.g. python3 bench/milter-rss.py /tmp/rmx-main/build/ringmx build/ringmx"""
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
os.environ.setdefault("RINGMX", os.path.join(ROOT, "build", "ringmx"))
import it_milter  # noqa: E402
import rmx  # noqa: E402

BENCH = os.path.join(ROOT, "build", "bench", "ringmx-bench")
it_milter.TESTMILTER = os.path.join(ROOT, "build", "tests", "rmx_testmilter")


def hwm_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def run(binary, spec, messages):
    gw = rmx.Gateway("--milter", spec, "--max-sessions", "1000", "--client-max-sessions", "0")
    gw.argv[0] = binary
    with gw:
        t0 = time.time()
        r = subprocess.run([BENCH, "--server", f"127.0.0.1:{gw.port}", "--sessions", "50",
                            "--messages", str(messages), "--size", "10000000", "--timeout",
                            "120", "--no-progress"], capture_output=True, text=True,
                           timeout=600)
        secs = time.time() - t0
        peak = hwm_mb(gw.proc.pid)
        gw.stop()
        streamed = sum(int(n) for n in re.findall(
            r"(\d+) messages streamed to a segment of their own", gw.log()))
    out = r.stdout + r.stderr
    m = re.search(r"messages\s+(\d+) ok", out)
    n = int(m.group(1)) if m else 0
    if n != messages:
        print(out[-2000:])
    return peak, n * 10.0 / secs, n, streamed


def main():
    args = sys.argv[1:]
    runs, messages = 1, 50
    while args and args[0].startswith("--"):
        if args[0] == "--runs":
            runs = int(args[1])
        elif args[0] == "--messages":
            messages = int(args[1])
        args = args[2:]
    with it_milter.Filter() as f:
        for i in range(runs):
            for b in args:
                peak, mbs, n, streamed = run(b, f.spec, messages)
                print(f"run {i + 1} {b:40} peak RSS {peak:7.1f} MiB  {mbs:6.1f} MB/s  "
                      f"accepted {n}/{messages}  streamed to a segment {streamed}", flush=True)


if __name__ == "__main__":
    main()
