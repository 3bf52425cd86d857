#!/usr/bin/env python3
"""Memory per idle SMTP session of a Postfix instance (see postfix_peer.sh).

Postfix serves each SMTP session in its own smtpd(8) process, so the cost of
a session is spread over processes: this sums, over all smtpd children of the
instance's master, before and after opening N connections (greeting read,
and EHLO sent with --ehlo):
  RSS  VmRSS, counts shared pages (libc, libpostfix-*) once per process
  PSS  Pss from smaps_rollup: shared pages divided among their users
  USS  Private_Clean + Private_Dirty: what the process alone holds
  PTE  VmPTE: page tables (kernel memory, not in RSS)
The per-session figure is the growth of the sum divided by N; the PSS one is
the fair "memory of one more session".  Sessions are held for 1 s, then
closed.

usage: bench/postfix_idle_memory.py MASTER_PID PORT [N] [--ehlo]
"""
import os
import resource
import socket
import sys
import time


def smtpd_pids(master):
    """pids of the smtpd processes whose parent is the given master."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # comm is in parentheses and may contain spaces: split after it
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if comm == "smtpd" and ppid == master:
            pids.append(int(d))
    return pids


def mem_kb(pid):
    """(rss, pss, uss, pte) in KiB of one process; zeros if it is gone."""
    r = {"VmRSS": 0, "VmPTE": 0, "Pss": 0, "Private_Clean": 0,
         "Private_Dirty": 0}
    try:
        for name in ("status", "smaps_rollup"):
            with open(f"/proc/{pid}/{name}") as f:
                for line in f:
                    key = line.split(":")[0]
                    if key in r:
                        r[key] = int(line.split()[1])
    except OSError:
        return (0, 0, 0, 0)
    return (r["VmRSS"], r["Pss"], r["Private_Clean"] + r["Private_Dirty"],
            r["VmPTE"])


def total(master):
    pids = smtpd_pids(master)
    sums = [0, 0, 0, 0]
    for p in pids:
        for i, v in enumerate(mem_kb(p)):
            sums[i] += v
    return len(pids), sums


def main():
    master, port = int(sys.argv[1]), int(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3].isdigit() else 300
    ehlo = "--ehlo" in sys.argv
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    # Wait (up to 10 s) for idle smtpd processes of earlier sessions to go.
    for _ in range(100):
        if not smtpd_pids(master):
            break
        time.sleep(0.1)
    n0, before = total(master)

    socks = []
    for i in range(n):
        socks.append(socket.create_connection(("127.0.0.1", port), timeout=60))
    # Every session has its own smtpd once its greeting has arrived.
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
    n1, after = total(master)
    for s in socks:
        s.close()

    print(f"connections: {n}  smtpd processes before: {n0}  after: {n1}")
    for i, name in enumerate(("RSS", "PSS", "USS", "PTE")):
        per = (after[i] - before[i]) * 1024 / n
        print(f"{name}: before {before[i]} KiB  after {after[i]} KiB  "
              f"per idle session: {per:.0f} bytes")


if __name__ == "__main__":
    main()
