#!/usr/bin/env python3
"""milter-bench.py: accepted messages/s through ringmx at 100 sessions, 10 KB
messages, without a content filter, with the libmilter accept-all filter
(tests/milter/rmx_testmilter) and with rspamd (proxy worker in milter mode
+ normal worker, as tests/integration/it_milter.py starts it), and the CPU
seconds per message of ringmx itself (utime+stime from /proc) and of the
filter. Run from the source tree after `ninja -C build`:

    python3 bench/milter-bench.py [SECONDS] [--durability none]

Each run: a fresh gateway (--threads 1, spool in a temp dir), ringmx-bench
for SECONDS (default 10). Prints one line per configuration."""
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
os.environ.setdefault("RINGMX", os.path.join(ROOT, "build", "ringmx"))
import it_milter  # noqa: E402
from rmx import Gateway, free_port  # noqa: E402

BENCH = os.path.join(ROOT, "build", "bench", "ringmx-bench")
it_milter.TESTMILTER = os.path.join(ROOT, "build", "tests", "rmx_testmilter")
TCK = os.sysconf("SC_CLK_TCK")


def cpu(pid):
    """CPU seconds of <pid> and its children that were waited for."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / TCK


def tree_cpu(pid):
    """<pid> and every process below it (rspamd's workers)."""
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            total += cpu(p)
            for t in os.listdir(f"/proc/{p}/task"):
                kids = open(f"/proc/{p}/task/{t}/children").read().split()
                todo += [int(k) for k in kids]
        except OSError:
            pass
    return total


def run(label, secs, extra, filt_pid=None):
    args = ["--threads", "1", "--max-sessions", "1000", "--client-max-sessions", "0"] + extra
    with Gateway(*args, threads=1) as gw:
        c0 = cpu(gw.proc.pid)
        f0 = tree_cpu(filt_pid) if filt_pid else 0.0
        r = subprocess.run([BENCH, "--server", f"127.0.0.1:{gw.port}", "--sessions", "100",
                            "--duration", str(secs), "--size", "10k", "--threads", "1",
                            "--no-progress"], capture_output=True, text=True, timeout=secs + 120)
        c1 = cpu(gw.proc.pid)
        f1 = tree_cpu(filt_pid) if filt_pid else 0.0
    out = r.stdout + r.stderr
    m = re.search(r"messages\s+(\d+) ok", out)
    rate = re.search(r"throughput\s+([\d.]+) messages/s", out)
    n = int(m.group(1)) if m else 0
    print(f"{label:24} {rate.group(1) if rate else '?':>10} msg/s  accepted={n:7}  "
          f"ringmx {1e6 * (c1 - c0) / max(n, 1):7.1f} us/msg  "
          f"filter {1e6 * (f1 - f0) / max(n, 1):8.1f} us/msg", flush=True)
    if not m:
        print(out[-2000:])


def main():
    secs = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 10
    extra = ["--durability", "none"] if "--durability" in sys.argv else []
    run("no filter", secs, extra)
    with it_milter.Filter() as f:
        run("libmilter accept-all", secs, extra + ["--milter", f.spec], f.proc.pid)
    if it_milter.RSPAMD:
        tmp = tempfile.mkdtemp(prefix="rmx-rspamd-")
        try:
            proc, mport = it_milter.rspamd_start(tmp)
            run("rspamd", secs, extra + ["--milter", f"inet:127.0.0.1:{mport}",
                                          "--milter-timeout", "60"], proc.pid)
        finally:
            import signal
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
