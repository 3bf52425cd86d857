"""bench/relay_memory.py: the RSS of a ringmx relaying 50 messages of 5 MB
queued behind a next hop that is down, then brought up (accepting slowly:
0.3 s per DATA), and a byte-for-byte check of what arrived. Usage, from the
repository root:
  RINGMX=build/ringmx PYTHONPATH=tests/integration python3 bench/relay_memory.py
"""
import os, random, smtplib, sys, threading, time
from rmx import Gateway
from nexthop import NextHop
from it_relay import FAST, send_on

def rss(pid):
    d = {}
    for line in open(f"/proc/{pid}/status"):
        k, v = line.split(":", 1)
        if k in ("VmRSS", "VmHWM"):
            d[k] = int(v.split()[0])
    return d

rng = random.Random(1)
line = lambda: bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz ") for _ in range(76)) + b"\r\n"
block = b"".join(line() for _ in range(1000))  # 78 KB
content = b"Subject: big\r\n\r\n" + block * (5 * 1024 * 1024 // len(block))
N = 50
hop = NextHop()
with Gateway("--relay-to", hop.spec, *FAST) as gw:
    pid = gw.proc.pid
    idle = rss(pid)["VmRSS"]
    with smtplib.SMTP(gw.host, gw.port, timeout=60) as c:
        for i in range(N):
            send_on(c, f"s{i}@sender.test", [f"r{i}@example.com"], content)
    t0 = time.time()
    while gw.log().count("status=deferred") < N and time.time() - t0 < 60:
        time.sleep(0.2)
    time.sleep(1)
    queued = rss(pid)
    hop.delay = 0.3  # accepts slowly
    peak = 0
    hop.start()
    t0 = time.time()
    while len(hop.messages()) < N and time.time() - t0 < 300:
        peak = max(peak, rss(pid)["VmRSS"])
        time.sleep(0.05)
    got = len(hop.messages())
    ok = all(m.content.endswith(content) for m in hop.messages())
    end = rss(pid)
    hop.stop()
print(f"{os.path.basename(os.environ['RINGMX'])}: {N} x {len(content)} B; idle RSS {idle} kB; "
      f"all {N} queued behind the down hop: RSS {queued['VmRSS']} kB; peak RSS while "
      f"delivering {peak} kB; VmHWM {end['VmHWM']} kB; delivered {got}, content ok {ok}; "
      f"delivery took {time.time() - t0:.1f}s")
