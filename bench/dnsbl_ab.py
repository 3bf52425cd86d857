#!/usr/bin/env python3
"""bench/dnsbl_ab.py: accepted messages/s with 3 --dnsbl sites next to none,
in one run: ringmx-bench, 100 sessions, 1 KB, durable, closed loop, against
one ringmx per configuration, the configurations alternating RUNS times:
  none       no DNS check
  cached     3 sites, the client's verdict kept (--dnsbl-cache-ttl 3600):
             after the first session, no question
  uncached   3 sites, --dnsbl-cache-ttl 0: 3 questions per connection to a
             local dnsmasq (TTL 0: nothing cached anywhere)
each with one message per connection (--msgs-per-conn 1: every message pays
a connection, so the DNS checks) and with long sessions (--msgs-per-conn 0).
Prints the median msgs/s per configuration and mode, and the gateway's CPU
time per 1,000 messages.

usage (as root, from the repository root, after building):
  bench/dnsbl_ab.py [--runs N] [--seconds S] [--ringmx PATH] [--bench PATH]
Everything it starts it stops by pid; temporary spools are removed."""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cpu_s(pid):
    tck = os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/stat") as f:
        f = f.read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tck


def run_one(args, extra, mpc, dport):
    tmp = tempfile.mkdtemp(prefix="ringmx-dnsbl-ab.")
    port = free_port()
    log = open(os.path.join(tmp, "log"), "wb")
    gw = subprocess.Popen([args.ringmx, "--listen", f"127.0.0.1:{port}", "--spool",
                           os.path.join(tmp, "spool"), "--threads", "2", "--domains",
                           "example.com", "--client-max-sessions", "0",
                           "--dns-server", f"127.0.0.1:{dport}"] + extra,
                          stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 10
        while b"listening on" not in open(os.path.join(tmp, "log"), "rb").read():
            if time.time() > deadline or gw.poll() is not None:
                raise RuntimeError("ringmx did not start")
            time.sleep(0.02)
        c0 = cpu_s(gw.pid)
        r = subprocess.run([args.bench, "--server", f"127.0.0.1:{port}", "--threads", "2",
                            "--sessions", "100", "--size", "1024", "--duration",
                            str(args.seconds), "--msgs-per-conn", str(mpc), "--json", "-"],
                           capture_output=True, text=True, timeout=args.seconds + 60)
        c1 = cpu_s(gw.pid)
        m = re.search(r'"messages_per_s":\s*([0-9.]+)', r.stdout)
        n = re.search(r'"messages":\s*([0-9]+)', r.stdout)
        if not m:
            raise RuntimeError("no rate from ringmx-bench:\n" + r.stdout[-2000:] + r.stderr)
        rate = float(m.group(1))
        msgs = int(n.group(1)) if n else rate * args.seconds
        return rate, (c1 - c0) * 1000.0 / max(msgs, 1)
    finally:
        gw.send_signal(signal.SIGTERM)
        try:
            gw.wait(30)
        except subprocess.TimeoutExpired:
            gw.kill()
            gw.wait()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--ringmx", default="build/ringmx")
    ap.add_argument("--bench", default="build/bench/ringmx-bench")
    ap.add_argument("--json")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="ringmx-dnsbl-dns.")
    dport = free_port(socket.SOCK_DGRAM)
    dns = subprocess.Popen(["dnsmasq", "-k", "-p", str(dport), "--no-resolv", "--no-hosts",
                            "--listen-address=127.0.0.1", "--bind-interfaces",
                            "--conf-file=/dev/null", "--local=/test/", "--user=root",
                            "--pid-file=" + os.path.join(tmp, "pid")],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sites = ["--dnsbl", "zen.test*3", "--dnsbl", "bl.test=127.0.0.[2..11]",
             "--dnsbl", "wl.test=127.0.[0..255].[1..3]*-2"]
    confs = {"none": [], "cached": sites + ["--dnsbl-cache-ttl", "3600"],
             "uncached": sites + ["--dnsbl-cache-ttl", "0"]}
    res = {}
    try:
        time.sleep(0.3)
        for mpc in (1, 0):
            for _ in range(args.runs):
                for name, extra in confs.items():
                    r = run_one(args, extra, mpc, dport)
                    res.setdefault((name, mpc), []).append(r)
                    print(f"{name:9s} msgs-per-conn {mpc}: {r[0]:9.0f} msgs/s, "
                          f"{r[1]:.3f} CPU s per 1000", flush=True)
    finally:
        dns.terminate()
        dns.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n| configuration | msgs per connection | msgs/s (median) | vs none | "
          "CPU s per 1000 msgs |")
    print("|---|---|---|---|---|")
    for mpc in (1, 0):
        base = statistics.median(r[0] for r in res[("none", mpc)])
        for name in confs:
            rates = [r[0] for r in res[(name, mpc)]]
            cpu = statistics.median(r[1] for r in res[(name, mpc)])
            med = statistics.median(rates)
            print(f"| {name} | {mpc or 'unlimited'} | {med:,.0f} | {med / base:.2f}x | "
                  f"{cpu:.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({f"{k[0]}/{k[1]}": v for k, v in res.items()}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
