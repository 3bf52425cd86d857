#!/usr/bin/env python3
"""bench/dns_silent.py: does a worker keep serving while a DNS list does not
answer? One ringmx worker (--threads 1) with --dnsbl silent.test, against
a DNS server (tests/integration/it_dns.py's BrokenDns, dnslib) that never
answers for the client 127.0.0.66 and answers NXDOMAIN at once for
127.0.0.1. ringmx-bench (10 sessions from 127.0.0.1, 1 KB, one message per
connection, so every message passes the DNS checks) runs alone, then with
HOLDERS connections from 127.0.0.66 kept waiting for their greeting
(--dnsbl-timeout 2000: each is greeted after 2 s, quits and comes back),
the two alternating RUNS times. Prints the client's messages/s and its
p50/p99 message and connect-to-greeting latencies, medians of the runs.

usage (from the repository root, after building):
  bench/dns_silent.py [--runs N] [--seconds S] [--holders N]
Everything it starts it stops."""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from it_dns import BrokenDns, dnslib  # noqa: E402
from rmx import free_port  # noqa: E402


def holders(port, n, stop, counts):
    def one():
        while not stop.is_set():
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=10,
                                             source_address=("127.0.0.66", 0))
                s.recv(512)  # the greeting, after --dnsbl-timeout
                s.sendall(b"QUIT\r\n")
                s.recv(512)
                s.close()
                counts[0] += 1
            except OSError:
                time.sleep(0.05)
    ts = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for t in ts:
        t.start()
    return ts


def bench(args, port):
    r = subprocess.run([args.bench, "--server", f"127.0.0.1:{port}", "--threads", "1",
                        "--sessions", "10", "--size", "1024", "--duration", str(args.seconds),
                        "--msgs-per-conn", "1", "--json", "-"],
                       capture_output=True, text=True, timeout=args.seconds + 60)
    doc = json.loads(r.stdout[r.stdout.index("\n{") + 1:])
    lat = doc["latency_ms"]
    return (doc["messages_per_s"], lat["message"]["p50"], lat["message"]["p99"],
            lat["connect_greeting"]["p50"], lat["connect_greeting"]["p99"])


def hold(port, n):
    stop = threading.Event()
    counts = [0]
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    ts = holders(port, n, stop, counts)
    while not stop.is_set():
        time.sleep(0.05)
    for t in ts:
        t.join(15)
    print(counts[0])
    return 0


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--hold":
        return hold(int(sys.argv[2]), int(sys.argv[3]))
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--holders", type=int, default=200)
    ap.add_argument("--ringmx", default="build/ringmx")
    ap.add_argument("--bench", default="build/bench/ringmx-bench")
    args = ap.parse_args()
    if dnslib is None:
        print("needs python3-dnslib")
        return 77
    tmp = tempfile.mkdtemp(prefix="ringmx-dns-silent.")
    port = free_port()
    res = {"alone": [], "with holders": []}
    with BrokenDns() as bd:
        log = open(os.path.join(tmp, "log"), "wb")
        gw = subprocess.Popen([args.ringmx, "--listen", f"127.0.0.1:{port}", "--spool",
                               os.path.join(tmp, "spool"), "--threads", "1", "--domains",
                               "example.com", "--client-max-sessions", "0", "--dns-server",
                               f"127.0.0.1:{bd.port}", "--dnsbl", "silent.test",
                               "--dnsbl-timeout", "2000", "--max-sessions", "100000"],
                              stdout=log, stderr=subprocess.STDOUT)
        try:
            time.sleep(0.5)
            for _ in range(args.runs):
                res["alone"].append(bench(args, port))
                # The holders in a process of their own (not under this
                # one's GIL, which the DNS server needs).
                hp = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--hold",
                                       str(port), str(args.holders)], stdout=subprocess.PIPE,
                                      text=True)
                time.sleep(2.5)  # every holder is waiting on the silent list
                res["with holders"].append(bench(args, port))
                hp.send_signal(signal.SIGTERM)
                out = hp.communicate(timeout=20)[0].strip()
                print(f"run: alone {res['alone'][-1]}, with {args.holders} holders "
                      f"{res['with holders'][-1]} ({out} holder sessions greeted late)",
                      flush=True)
        finally:
            gw.send_signal(signal.SIGTERM)
            gw.wait(30)
            log.close()
            shutil.rmtree(tmp, ignore_errors=True)
    print("\n| 10 sessions from 127.0.0.1 | msgs/s | message p50 / p99 ms | "
          "connect->greeting p50 / p99 ms |")
    print("|---|---|---|---|")
    for k, v in res.items():
        med = [statistics.median(x[i] for x in v) for i in range(5)]
        print(f"| {k} | {med[0]:,.0f} | {med[1]:.2f} / {med[2]:.2f} | "
              f"{med[3]:.2f} / {med[4]:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
