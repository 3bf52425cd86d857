"""Next-hop recipient verification (--verify-recipients) against the real
binary, with a real next hop (aiosmtpd, tests/integration/nexthop.py) that
knows only some users and counts every RCPT it is asked: known users 250
and delivered, unknown ones 550 5.1.1 quoting the next hop and nothing
spooled, a next hop down 450 4.1.1 (or accepted with --verify-fail-open),
the cache answering without asking again (also after a restart: the cache
file in the spool), a hundred parallel RCPTs for one address on two
workers being one probe, and PIPELINING's reply order kept with verified,
cached and unverified recipients mixed."""
import os
import re
import socket
import sys
import time
import urllib.request

from rmx import Checks, Gateway, free_port
from it_relay import wait_until

try:
    from nexthop import HAVE_AIOSMTPD, NextHop, reserve_port
except ImportError:
    HAVE_AIOSMTPD = False

KNOWN = {"bob@example.com", "alice@example.com", "carol@example.com", "dave@example.com"}
BODY = b"Subject: verify\r\n\r\nhello\r\n"


def hop_knowing(users=KNOWN):
    hop = NextHop()
    hop.reject_rcpt = lambda a: a.lower() not in users
    return hop.start()


class Client:
    """A raw SMTP client: replies read one line at a time (PIPELINING)."""

    def __init__(self, gw, timeout=15):
        self.s = socket.create_connection(("127.0.0.1", gw.port), timeout=timeout)
        self.f = self.s.makefile("rb")
        assert self.reply()[0] == 220

    def reply(self):
        lines = []
        while True:
            line = self.f.readline()
            if not line:
                raise EOFError("connection closed")
            lines.append(line.decode().rstrip("\r\n"))
            if line[3:4] != b"-":
                return int(lines[-1][:3]), lines[-1][4:]

    def send(self, data):
        self.s.sendall(data if isinstance(data, bytes) else data.encode())

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def ehlo(self):
        self.send("EHLO client.test\r\n")
        while True:
            line = self.f.readline()
            if line[3:4] != b"-":
                return

    def close(self):
        try:
            self.send("QUIT\r\n")
        except OSError:
            pass
        self.s.close()


def metric(port, name, reason):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(f'{name}{{reason="{reason}"}}'):
                return int(float(line.split()[-1]))
    return None


def test_known_delivered_unknown_refused_and_cached():
    hop = hop_knowing()
    mport = free_port()
    gw = Gateway("--relay-to", hop.spec, "--verify-recipients", "all",
                 "--metrics-listen", f"127.0.0.1:{mport}", "--retry-min", "1")
    try:
        with gw:
            c = Client(gw)
            c.ehlo()
            assert c.cmd("MAIL FROM:<a@sender.test>")[0] == 250
            assert c.cmd("RCPT TO:<bob@example.com>") == (250, "2.1.5 Ok")
            code, text = c.cmd("RCPT TO:<eve@example.com>")
            assert code == 550 and text == (
                "5.1.1 <eve@example.com>: Recipient address rejected: undeliverable "
                "address: 550 5.1.1 fake next hop: no such user"), (code, text)
            assert c.cmd("DATA")[0] == 354
            c.send(BODY + b".\r\n")
            assert c.reply()[0] == 250
            # Unknown only: nothing to spool.
            assert c.cmd("MAIL FROM:<a@sender.test>")[0] == 250
            assert c.cmd("RCPT TO:<eve@example.com>")[0] == 550
            assert c.cmd("DATA")[0] == 554
            c.close()
            msgs = hop.wait_messages(1)
            assert len(msgs) == 1 and msgs[0].rcpt_tos == ["bob@example.com"], msgs
            assert msgs[0].mail_from == "a@sender.test"
            assert hop.probes("bob@example.com") == ["bob@example.com"], hop.rcpt_log
            assert hop.probes("eve@example.com") == ["eve@example.com"], hop.rcpt_log
            # The cache answers now: the next hop is not asked again.
            conns = hop.connections
            c = Client(gw)
            c.ehlo()
            c.cmd("MAIL FROM:<a@sender.test>")
            assert c.cmd("RCPT TO:<bob@example.com>")[0] == 250
            assert c.cmd("RCPT TO:<bob@EXAMPLE.COM>")[0] == 250  # the domain's case is folded
            assert c.cmd("RCPT TO:<eve@example.com>")[0] == 550
            c.cmd("RSET")
            c.close()
            time.sleep(0.3)
            assert len(hop.probes("bob@example.com")) == 1, hop.rcpt_log
            assert len(hop.probes("eve@example.com")) == 1, hop.rcpt_log
            assert hop.connections == conns, (hop.connections, conns)
            assert metric(mport, "ringmx_messages_rejected_total", "verify_rejected") == 3
            log = gw.log()
            assert ("NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 550 5.1.1 "
                    "<eve@example.com>") in log, log[-3000:]
            assert wait_until(lambda: gw.count() == 0, 10) is True
        # The probes never sent DATA: one message arrived, the one delivered.
        assert len(hop.messages()) == 1
    finally:
        hop.stop()


def test_next_hop_down_is_temporary_or_fail_open():
    port = reserve_port()
    gw = Gateway("--relay-to", f"127.0.0.1:{port}", "--verify-recipients", "example.com")
    with gw:
        c = Client(gw)
        c.ehlo()
        c.cmd("MAIL FROM:<a@sender.test>")
        code, text = c.cmd("RCPT TO:<bob@example.com>")
        assert code == 450 and text.startswith(
            "4.1.1 <bob@example.com>: Recipient address rejected: unverified address: 4.4.1"), \
            (code, text)
        # Not cached: once the next hop is up, the address is asked again.
        hop = NextHop(port=port)
        hop.reject_rcpt = lambda a: a.lower() not in KNOWN
        hop.start()
        try:
            assert c.cmd("RCPT TO:<bob@example.com>")[0] == 250
            assert hop.probes("bob@example.com") == ["bob@example.com"]
            c.close()
        finally:
            hop.stop()
        assert "verify: <bob@example.com> not verified: 4.4.1" in gw.log()
    port = reserve_port()
    gw = Gateway("--relay-to", f"127.0.0.1:{port}", "--verify-recipients", "example.com",
                 "--verify-fail-open")
    with gw:
        c = Client(gw)
        c.ehlo()
        c.cmd("MAIL FROM:<a@sender.test>")
        assert c.cmd("RCPT TO:<bob@example.com>") == (250, "2.1.5 Ok")
        assert c.cmd("RCPT TO:<alice@example.com>") == (250, "2.1.5 Ok")
        # (No DATA: a message for a next hop that is down would only be
        # deferred; what is tested here is the RCPT.)
        c.cmd("RSET")
        c.close()
        assert wait_until(lambda: gw.log().count("accepted (--verify-fail-open)") == 2, 5)


def test_slow_next_hop_times_out():
    hop = hop_knowing()
    hop.rcpt_delay = 3.0
    gw = Gateway("--relay-to", hop.spec, "--verify-recipients", "all", "--verify-timeout", "1")
    try:
        with gw:
            c = Client(gw)
            c.ehlo()
            c.cmd("MAIL FROM:<a@sender.test>")
            t0 = time.time()
            code, text = c.cmd("RCPT TO:<bob@example.com>")
            took = time.time() - t0
            assert code == 450 and "timed out" in text, (code, text)
            assert took < 2.9, took
            c.close()
    finally:
        hop.stop()


def test_hundred_parallel_rcpts_one_probe():
    hop = hop_knowing()
    hop.rcpt_delay = 1.0  # the probe is in flight while every RCPT arrives
    gw = Gateway("--relay-to", hop.spec, "--verify-recipients", "all",
                 "--client-max-sessions", "0", threads=2)
    try:
        with gw:
            cs = [Client(gw) for _ in range(100)]
            for c in cs:
                c.send("EHLO client.test\r\nMAIL FROM:<a@sender.test>\r\n")
            for c in cs:
                while True:
                    line = c.f.readline()
                    if line[3:4] != b"-":
                        break
                assert c.reply()[0] == 250
            for c in cs:
                c.send("RCPT TO:<carol@example.com>\r\n")
            for c in cs:
                c.send("RCPT TO:<nobody@example.com>\r\n")
            codes = [(c.reply()[0], c.reply()[0]) for c in cs]
            assert codes == [(250, 550)] * 100, codes
            for c in cs:
                c.close()
            assert hop.probes("carol@example.com") == ["carol@example.com"], \
                len(hop.probes("carol@example.com"))
            assert len(hop.probes("nobody@example.com")) == 1
            gw.stop()
            stats = re.findall(r"verify: (\d+) addresses probed, (\d+) RCPTs coalesced on a "
                               r"probe of this worker, (\d+) waited on another", gw.log())
            assert len(stats) == 2, stats
            assert sum(int(p) for p, _, _ in stats) == 2, stats
            # Both workers had sessions, and one waited on the other's probe.
            assert all(int(p) + int(c) + int(f) > 0 for p, c, f in stats), stats
            assert sum(int(f) for _, _, f in stats) > 0, stats
    finally:
        hop.stop()


def test_cache_survives_a_restart():
    hop = hop_knowing()
    tmp = Gateway()  # only for a spool directory that outlives both runs
    spool = os.path.join(tmp.tmp.name, "spool")
    args = ("--relay-to", hop.spec, "--verify-recipients", "example.com")
    try:
        with Gateway(*args, spool=spool) as gw:
            c = Client(gw)
            c.ehlo()
            c.cmd("MAIL FROM:<a@sender.test>")
            assert c.cmd("RCPT TO:<alice@example.com>")[0] == 250
            assert c.cmd("RCPT TO:<mallory@example.com>")[0] == 550
            c.close()
        assert os.path.exists(os.path.join(spool, "verify.cache"))
        with Gateway(*args, spool=spool) as gw:
            assert "verify: 2 cached verdicts read back" in gw.log(), gw.log()
            c = Client(gw)
            c.ehlo()
            c.cmd("MAIL FROM:<a@sender.test>")
            assert c.cmd("RCPT TO:<alice@example.com>")[0] == 250
            code, text = c.cmd("RCPT TO:<mallory@example.com>")
            assert code == 550 and "fake next hop: no such user" in text, text
            c.close()
        assert len(hop.probes("alice@example.com")) == 1, hop.rcpt_log
        assert len(hop.probes("mallory@example.com")) == 1, hop.rcpt_log
    finally:
        hop.stop()
        tmp.tmp.cleanup()


def test_table_refusal_is_never_probed():
    hop = hop_knowing()
    gw = Gateway("--relay-to", hop.spec, "--verify-recipients", "all")
    users = os.path.join(gw.tmp.name, "users")
    with open(users, "w") as f:
        f.write("bob@example.com\nghost@example.com\n")
    gw.argv += ["--recipients-file", users]
    try:
        with gw:
            c = Client(gw)
            c.ehlo()
            c.cmd("MAIL FROM:<a@sender.test>")
            code, text = c.cmd("RCPT TO:<eve@example.com>")
            assert code == 550 and text.endswith("User unknown"), (code, text)
            assert c.cmd("RCPT TO:<bob@example.com>")[0] == 250
            # In the table, but the next hop does not know it.
            code, text = c.cmd("RCPT TO:<ghost@example.com>")
            assert code == 550 and "undeliverable address" in text, (code, text)
            c.close()
            assert hop.probes("eve@example.com") == [], hop.rcpt_log
            assert len(hop.probes()) == 2, hop.rcpt_log
    finally:
        hop.stop()


def test_pipelining_keeps_the_order():
    hop = hop_knowing(KNOWN | {"x@other.test"})
    hop.rcpt_delay = 0.2
    gw = Gateway("--relay-to", hop.spec, "--verify-recipients", "example.com",
                 "--domains", "example.com,other.test")
    try:
        with gw:
            c = Client(gw)
            c.ehlo()
            # Warm the cache with one known and one unknown user.
            c.cmd("MAIL FROM:<a@sender.test>")
            assert c.cmd("RCPT TO:<bob@example.com>")[0] == 250
            assert c.cmd("RCPT TO:<eve@example.com>")[0] == 550
            c.cmd("RSET")
            c.send("MAIL FROM:<a@sender.test>\r\n"
                   "RCPT TO:<bob@example.com>\r\n"      # cached: 250 at once
                   "RCPT TO:<dave@example.com>\r\n"     # probed: 250 after 0.2 s
                   "RCPT TO:<x@other.test>\r\n"         # not verified: 250
                   "RCPT TO:<eve@example.com>\r\n"      # cached: 550
                   "RCPT TO:<zed@example.com>\r\n"      # probed: 550
                   "RCPT TO:<carol@example.com>\r\n"    # probed: 250
                   "DATA\r\n")
            got = [c.reply() for _ in range(8)]
            codes = [g[0] for g in got]
            assert codes == [250, 250, 250, 250, 550, 550, 250, 354], got
            assert "<zed@example.com>" in got[5][1], got
            c.send(BODY + b".\r\n")
            assert c.reply()[0] == 250
            c.close()
            want = ["bob@example.com", "carol@example.com", "dave@example.com", "x@other.test"]
            got = hop.wait(lambda ms: sorted(r for m in ms for r in m.rcpt_tos) == want)
            assert got, hop.messages()
            assert hop.probes("x@other.test") == []
    finally:
        hop.stop()


if __name__ == "__main__":
    if not HAVE_AIOSMTPD:
        print("SKIP: aiosmtpd is not installed (python3-aiosmtpd)")
        sys.exit(77)
    ck = Checks()
    ck.run_all(globals())
    ck.finish()
