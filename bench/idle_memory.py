#!/usr/bin/env python3
"""Resident memory per idle connection: opens N connections to a running
SMTP server, reads each greeting (and sends EHLO with --ehlo), and reports
(RSS after - RSS before) / N for the server process, from /proc/PID/status.

usage: bench/idle_memory.py PID PORT [N] [--ehlo]
"""
import resource
import socket
import sys
import time


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main():
    pid, port = int(sys.argv[1]), int(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3].isdigit() else 5000
    ehlo = "--ehlo" in sys.argv
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    time.sleep(0.5)
    before = rss_kb(pid)
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        socks.append(s)
    for s in socks:
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(512)
            if not chunk:
                raise RuntimeError("closed before the greeting")
            buf += chunk
        if not buf.startswith(b"220"):
            raise RuntimeError("greeting: %r" % buf)
        if ehlo:
            s.sendall(b"EHLO bench.test\r\n")
    if ehlo:
        for s in socks:
            buf = b""
            while b"250 " not in buf:
                buf += s.recv(4096)
    time.sleep(1.0)
    after = rss_kb(pid)
    per = (after - before) * 1024 / n
    print(f"connections: {n}  rss before: {before} KiB  after: {after} KiB  "
          f"per idle connection: {per:.0f} bytes")
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
