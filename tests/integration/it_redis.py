"""Cluster-wide rate counters (--limits-redis, io/cluster) against a real
redis-server started here on a free port without persistence: two gateways
sharing it enforce one message, recipient and connection rate; Redis killed
mid-test: sessions go on, counted by each gateway alone, with one warning;
Redis back on the same port: its counters decide again; Redis hung
(SIGSTOP): a verdict costs at most --limits-redis-timeout.

Needs redis-server (Debian package redis-server, in .ci/deps); exits 77
without it."""
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time

from rmx import Checks, Gateway, free_port
from it_relay import wait_until

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
BODY = "Subject: cluster\r\n\r\nhello\r\n"
HOUR = 3600


class Redis:
    """redis-server in the foreground on <port>, no persistence, stopped by pid."""

    def __init__(self, port=None):
        self.port = port or free_port()
        self.tmp = tempfile.TemporaryDirectory(prefix="ringmx-redis-")
        self.proc = None

    def start(self):
        self.log = open(os.path.join(self.tmp.name, "redis.log"), "wb")
        self.proc = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.tmp.name],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited: " + open(self.log.name).read())
            try:
                if self.cmd("PING") == "PONG":
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer")

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                self.proc.wait(10)

    def cmd(self, *args):
        """One command over RESP; the reply as str, int, None or list."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            out = f"*{len(args)}\r\n".encode()
            for a in args:
                a = str(a).encode()
                out += b"$%d\r\n%s\r\n" % (len(a), a)
            s.sendall(out)
            return read_reply(s.makefile("rb"))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a stopped one cannot end
        self.kill(signal.SIGTERM)
        self.log.close()
        self.tmp.cleanup()


def read_reply(f):
    line = f.readline().rstrip(b"\r\n")
    kind, rest = line[:1], line[1:].decode()
    if kind in (b"+", b"-"):
        return rest if kind == b"+" else RuntimeError(rest)
    if kind == b":":
        return int(rest)
    if kind == b"$":
        if int(rest) < 0:
            return None
        data = f.read(int(rest) + 2)[:-2]
        return data.decode()
    if kind == b"*":
        return [read_reply(f) for _ in range(int(rest))]
    raise RuntimeError(f"bad reply {line!r}")


def window_start(period=HOUR):
    """The current window's first second; waits out the last 15 s of a
    window, so that a test never straddles two (the previous window then
    counts a little less than whole)."""
    if period - time.time() % period < 15:
        time.sleep(period - time.time() % period + 0.5)
    return int(time.time()) // period * period


def key(kind, client, start):
    return f"ringmx:rate:{kind}:{client}/32:{start}"


def gateway(redis_port, *args):
    return Gateway("--limits-redis", f"127.0.0.1:{redis_port}", *args)


def mail_codes(port, src, n, rcpts=1, rset=True):
    """<n> MAIL commands from <src> in one session (a message each when the
    MAIL fits); their reply codes."""
    codes = []
    with smtplib.SMTP("127.0.0.1", port, timeout=10, source_address=(src, 0)) as c:
        c.ehlo("client.test")
        for i in range(n):
            code, msg = c.mail("a@sender.test")
            codes.append(code)
            if code == 452:
                assert msg.startswith(b"4.7.0 Error: too many messages"), msg
                continue
            assert code == 250, (code, msg)
            ok = [c.rcpt(f"u{i}.{k}@example.com")[0] for k in range(rcpts)]
            if 250 in ok:
                assert c.data(BODY)[0] == 250
            elif rset:
                c.rset()
    return codes


def greet(src, port):
    s = socket.socket()
    s.settimeout(10)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    line = s.makefile("rb").readline()
    s.close()
    return line


def wait_connected(gw, n=2):
    """<n> connects of the workers' links (logged at debug): both workers'
    (2), or both again after an outage (4)."""
    assert wait_until(lambda: gw.log().count("connected to Redis") >= n, 15), gw.log()


def test_message_and_recipient_rates_hold_across_two_gateways():
    with Redis() as r, gateway(r.port, "--client-message-rate", "10/1h",
                               "--client-recipient-rate", "15/1h",
                               "--log-level", "debug") as a, \
            gateway(r.port, "--client-message-rate", "10/1h", "--client-recipient-rate",
                    "15/1h", "--log-level", "debug") as b:
        wait_connected(a)
        wait_connected(b)
        start = window_start()
        assert mail_codes(a.port, "127.0.0.1", 6) == [250] * 6
        # Gateway B knows nothing of its own about 127.0.0.1: only the
        # shared counter can refuse the 11th message.
        assert mail_codes(b.port, "127.0.0.1", 6) == [250] * 4 + [452] * 2
        assert a.count() == 6 and b.count() == 4
        # The key scheme of docs/operations.md; refused ones are not counted.
        assert r.cmd("GET", key("msg", "127.0.0.1", start)) == "10"
        ttl = r.cmd("PTTL", key("msg", "127.0.0.1", start))
        assert 2 * HOUR * 1000 < ttl <= 2 * HOUR * 1000 + 5000, ttl
        # Recipients from another client: 8 through A, then 7 of 8 through B.
        with smtplib.SMTP("127.0.0.1", a.port, timeout=10,
                          source_address=("127.0.0.2", 0)) as c:
            c.ehlo("other.test")
            assert c.mail("a@sender.test")[0] == 250
            assert [c.rcpt(f"r{i}@example.com")[0] for i in range(8)] == [250] * 8
        with smtplib.SMTP("127.0.0.1", b.port, timeout=10,
                          source_address=("127.0.0.2", 0)) as c:
            c.ehlo("other.test")
            assert c.mail("a@sender.test")[0] == 250
            got = [c.rcpt(f"s{i}@example.com") for i in range(8)]
            assert [g[0] for g in got] == [250] * 7 + [452], got
            assert got[7][1].startswith(b"4.7.0 Error: too many recipients"), got
        assert r.cmd("GET", key("rcpt", "127.0.0.2", start)) == "15"
        assert "limits: Redis" not in a.log() + b.log()  # no outage seen


def test_connection_rate_holds_across_two_gateways():
    with Redis() as r, gateway(r.port, "--client-connection-rate", "3/1h",
                               "--log-level", "debug") as a, \
            gateway(r.port, "--client-connection-rate", "3/1h", "--log-level", "debug") as b:
        wait_connected(a)
        wait_connected(b)
        start = window_start()
        lines = [greet("127.0.0.1", a.port), greet("127.0.0.1", b.port),
                 greet("127.0.0.1", a.port), greet("127.0.0.1", b.port)]
        assert [ln[:3] for ln in lines] == [b"220"] * 3 + [b"421"], lines
        assert lines[3].startswith(b"421 4.7.0"), lines
        assert greet("127.0.0.3", b.port).startswith(b"220 ")
        assert r.cmd("GET", key("conn", "127.0.0.1", start)) == "3"


def test_a_refusal_after_the_verdict_keeps_its_tarpit():
    """RCPT runs again with Redis's verdict; a refusal then (relay denied,
    the fourth error: --error-delay) is delayed as any, and the session
    goes on after it."""
    with Redis() as r, gateway(r.port, "--client-recipient-rate", "100/1h",
                               "--error-delay", "300", "--log-level", "debug") as gw:
        wait_connected(gw)
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
            c.ehlo("client.test")
            for _ in range(3):
                assert c.docmd("XYZZY")[0] == 500
            assert c.mail("a@sender.test")[0] == 250
            t0 = time.time()
            assert c.rcpt("x@other.test")[0] == 554
            assert time.time() - t0 >= 0.25
            assert c.rcpt("u@example.com")[0] == 250
            assert c.noop()[0] == 250
        assert r.cmd("GET", key("rcpt", "127.0.0.1", window_start())) == "2"


def test_redis_gone_sessions_go_on_and_counters_resume():
    r = Redis()
    with r, gateway(r.port, "--client-message-rate", "3/1h", "--log-level", "debug") as gw:
        wait_connected(gw)
        start = window_start()
        # Redis decides: a client it has at the limit is refused at once.
        assert r.cmd("SET", key("msg", "127.0.0.1", start), 3) == "OK"
        assert mail_codes(gw.port, "127.0.0.1", 1) == [452]
        r.kill()
        # Sessions go on, each gateway counting alone: 127.0.0.2 gets its
        # 3 a period from the local table, and then the local 452.
        t0 = time.time()
        codes = mail_codes(gw.port, "127.0.0.2", 2) + mail_codes(gw.port, "127.0.0.2", 2)
        assert codes == [250, 250, 250, 452], codes
        assert time.time() - t0 < 5, "sessions were held"
        warn = "limits: Redis 127.0.0.1:%d:" % r.port
        assert wait_until(lambda: warn in gw.log(), 5), gw.log()
        time.sleep(1)  # reconnects fail meanwhile: still one warning
        assert mail_codes(gw.port, "127.0.0.3", 1) == [250]
        assert gw.log().count(warn) == 1, gw.log()
        assert "counted by this gateway alone" in gw.log()
        # Back on the same port, empty: a reconnect (within the backoff, 5 s
        # at most) and its counters decide again.
        r.start()
        assert r.cmd("SET", key("msg", "127.0.0.4", start), 3) == "OK"
        wait_connected(gw, 4)
        # Only Redis can refuse 127.0.0.4: the local table never saw it.
        assert mail_codes(gw.port, "127.0.0.4", 1) == [452], gw.log()
        assert wait_until(lambda: "answers again: rates are counted there" in gw.log(), 5), gw.log()
        assert mail_codes(gw.port, "127.0.0.5", 1) == [250]
        assert r.cmd("GET", key("msg", "127.0.0.5", start)) == "1"


def test_redis_unreachable_at_start():
    port = free_port()  # nothing listens there yet
    with gateway(port, "--client-message-rate", "2/1h", "--log-level", "debug") as gw:
        assert mail_codes(gw.port, "127.0.0.1", 3) == [250, 250, 452]
        warn = f"limits: Redis 127.0.0.1:{port}: Connection refused; rates are counted"
        assert wait_until(lambda: gw.log().count(warn) == 1, 5), gw.log()
        with Redis(port) as r:
            start = window_start()
            wait_connected(gw)
            assert mail_codes(gw.port, "127.0.0.6", 1) == [250]
            assert r.cmd("GET", key("msg", "127.0.0.6", start)) == "1"
            assert gw.log().count(warn) == 1


def test_bad_redis_address_stops_the_start():
    for addr, why in (("[::1]:6379", "an IPv4 address is needed"),
                      ("no-such-host.invalid:6379", "no-such-host.invalid")):
        gw = gateway(6379, "--client-message-rate", "2/1h")
        gw.argv[gw.argv.index("127.0.0.1:6379")] = addr
        p = subprocess.run(gw.argv, capture_output=True, text=True, timeout=30)
        gw.tmp.cleanup()
        assert p.returncode == 2, (p.returncode, p.stderr)
        assert "ringmx: --limits-redis: " in p.stderr and why in p.stderr, p.stderr


def test_hung_redis_costs_at_most_the_timeout():
    with Redis() as r, gateway(r.port, "--client-message-rate", "100/1h",
                               "--limits-redis-timeout", "200", "--log-level", "debug") as gw:
        wait_connected(gw)
        r.kill(signal.SIGSTOP)  # the connection stays, nothing answers
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
            c.ehlo("client.test")
            t0 = time.time()
            assert c.mail("a@sender.test")[0] == 250
            waited = time.time() - t0
            c.rset()
            # The budget is 200 ms; a loaded machine adds some. Unbounded
            # (waiting for Redis) would hang here until SIGCONT.
            assert 0.15 < waited < 3, waited
            assert wait_until(lambda: "no answer within 200 ms" in gw.log(), 5), gw.log()
            t0 = time.time()
            for _ in range(5):
                assert c.mail("a@sender.test")[0] == 250
                c.rset()
            assert time.time() - t0 < 5
        os.kill(r.proc.pid, signal.SIGCONT)
        start = window_start()
        assert wait_until(lambda: mail_codes(gw.port, "127.0.0.7", 1) == [250]
                          and r.cmd("GET", key("msg", "127.0.0.7", start)) is not None,
                          15), gw.log()
        gw.stop()
        # At stop each worker says how its verdicts were given.
        got = re.findall(r"limits: worker \d: (\d+) rate verdicts from Redis, (\d+) from "
                         r"the local table after asking", gw.log())
        assert len(got) == 2, gw.log()
        assert sum(int(f) for _, f in got) >= 1 and sum(int(n) for n, _ in got) >= 1, got


if __name__ == "__main__":
    if not os.path.exists(REDIS):
        print("skip: redis-server not installed (Debian package redis-server)")
        sys.exit(77)
    ck = Checks()
    ck.run_all(globals())
    ck.finish()
