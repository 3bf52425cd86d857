#!/usr/bin/env python3
"""Resident memory per idle connection: opens N connections to a running
SMTP server, reads each greeting (and sends EHLO with --ehlo), and reports
(RSS after - RSS before) / N for the server process, from /proc/PID/status.

usage: bench/idle_memory.py PID PORT [N] [--ehlo] [--tls | --starttls]

--tls: the port is an implicit-TLS listener (handshake first); --starttls:
EHLO, STARTTLS, handshake, EHLO again. Certificates are not verified.
"""
import resource
import socket
import ssl
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
    implicit = "--tls" in sys.argv
    starttls = "--starttls" in sys.argv
    tctx = ssl.create_default_context()
    tctx.check_hostname = False
    tctx.verify_mode = ssl.CERT_NONE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    time.sleep(0.5)
    before = rss_kb(pid)
    socks = []
    def reply(s, code=b"220"):
        buf = b""
        while not any(line.startswith(code + b" ") for line in buf.split(b"\r\n")):
            chunk = s.recv(4096)
            if not chunk:
                raise RuntimeError("closed; got %r" % buf)
            buf += chunk
        return buf

    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        if implicit:
            s = tctx.wrap_socket(s, server_hostname="mx.test")
        socks.append(s)
    for i, s in enumerate(socks):
        reply(s)
        if starttls:
            s.sendall(b"EHLO bench.test\r\n")
            reply(s, b"250")
            s.sendall(b"STARTTLS\r\n")
            reply(s)
            s = socks[i] = tctx.wrap_socket(s, server_hostname="mx.test")
        if ehlo or starttls:
            s.sendall(b"EHLO bench.test\r\n")
    if ehlo or starttls:
        for s in socks:
            reply(s, b"250")
    time.sleep(1.0)
    after = rss_kb(pid)
    per = (after - before) * 1024 / n
    print(f"connections: {n}  rss before: {before} KiB  after: {after} KiB  "
          f"per idle connection: {per:.0f} bytes")
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
