"""DNS checks against real DNS servers started here: dnsmasq (test zones
on a high loopback port, its query log to count questions) for DNSBL and
DNSWL scoring, forward-confirmed client names and sender domains; a
dnslib server (Debian python3-dnslib) for broken answers: none at all,
SERVFAIL, truncated, a wrong ID, garbage, null MX. Clients come from
different loopback addresses (127.0.0.x: the whole /8 is local), so each
has its own reverse names. Every wait is bounded."""
import os
import random
import re
import shutil
import smtplib
import socket
import subprocess
import sys
import threading
import time

from rmx import Checks, Conn, Gateway, free_port, read_spool

try:
    import dnslib
except ImportError:  # the Debian package, under another interpreter
    sys.path.append("/usr/lib/python3/dist-packages")
    try:
        import dnslib
    except ImportError:
        dnslib = None

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
BODY = b"Subject: dns\r\n\r\nhello\r\n"


def free_udp_port():
    while True:
        p = free_port()
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", p))
            return p
        except OSError:
            continue
        finally:
            u.close()


class Dnsmasq:
    """dnsmasq answering only for *.test and 127.in-addr.arpa, from its
    own records; every question logged."""

    def __init__(self, tmp, records):
        self.port = free_udp_port()
        self.logf = os.path.join(tmp, "dnsmasq.log")
        self.argv = [DNSMASQ, "-k", "-p", str(self.port), "--no-resolv", "--no-hosts",
                     "--listen-address=127.0.0.1", "--bind-interfaces", "--log-queries",
                     "--log-facility=" + self.logf, "--pid-file=" + os.path.join(tmp, "d.pid"),
                     "--local=/test/", "--local=/127.in-addr.arpa/", "--conf-file=/dev/null",
                     "--user=root"] + records

    def __enter__(self):
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 5
        while time.time() < deadline:
            if os.path.exists(self.logf) and "started" in open(self.logf).read():
                return self
            if self.proc.poll() is not None:
                raise RuntimeError("dnsmasq exited: %s" % self.proc.returncode)
            time.sleep(0.02)
        raise RuntimeError("dnsmasq did not start")

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(5)

    def queries(self, name):
        with open(self.logf) as f:
            return sum(1 for ln in f if re.search(r"query\[\w+\] %s from" % re.escape(name), ln))


class BrokenDns:
    """A UDP DNS server that answers by the question's name: 66.*.silent.test
    and silent-mx.test never; servfail.test SERVFAIL; nullmx.test the
    null MX; good.test an MX; trunc.test a truncated empty answer; wrongid.test with
    another ID; garbage.test random bytes; anything else NXDOMAIN."""

    def __init__(self):
        self.port = free_udp_port()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.settimeout(0.2)
        self.stop = False
        self.asked = []

    def __enter__(self):
        self.t = threading.Thread(target=self.serve, daemon=True)
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop = True
        self.t.join(2)
        self.sock.close()

    def serve(self):
        rnd = random.Random(14)
        while not self.stop:
            try:
                data, peer = self.sock.recvfrom(4096)
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return
            try:
                q = dnslib.DNSRecord.parse(data)
            except Exception:
                continue
            name = str(q.q.qname).rstrip(".").lower()
            self.asked.append((name, dnslib.QTYPE[q.q.qtype]))
            r = q.reply()
            if (name.startswith("66.") and name.endswith("silent.test")) or \
                    name == "silent-mx.test":
                continue
            if name.endswith("servfail.test"):
                r.header.rcode = dnslib.RCODE.SERVFAIL
            elif name == "nullmx.test" and q.q.qtype == dnslib.QTYPE.MX:
                r.add_answer(dnslib.RR(q.q.qname, dnslib.QTYPE.MX, ttl=60,
                                       rdata=dnslib.MX(".", 0)))
            elif name == "good.test" and q.q.qtype == dnslib.QTYPE.MX:
                r.add_answer(dnslib.RR(q.q.qname, dnslib.QTYPE.MX, ttl=60,
                                       rdata=dnslib.MX("mx.good.test", 10)))
            elif name == "trunc.test":
                r.header.tc = 1
            elif name == "wrongid.test":
                r.header.id = (q.header.id + 1) & 0xffff
                r.add_answer(dnslib.RR(q.q.qname, dnslib.QTYPE.A, ttl=60,
                                       rdata=dnslib.A("192.0.2.1")))
            elif name == "garbage.test":
                self.sock.sendto(bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 300))),
                                 peer)
                # and one with the right ID but a broken body
                self.sock.sendto(data[:2] + b"\x81\x80\x00\x01\x00\x05" + os.urandom(40), peer)
                continue
            else:
                r.header.rcode = dnslib.RCODE.NXDOMAIN
            self.sock.sendto(r.pack(), peer)


def session(port, src, mail="a@good.test", timeout=10):
    """One session from <src>: (greeting, EHLO, MAIL, RCPT, DATA end) codes
    and texts, stopping at the first refusal; and the queue id if any."""
    c = Conn.__new__(Conn)
    c.s = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                   source_address=(src, 0))
    c.rx = b""
    out = [c.reply()]
    try:
        for line in ("EHLO client.test", "MAIL FROM:<%s>" % mail, "RCPT TO:<u@example.com>",
                     "DATA"):
            out.append(c.cmd(line))
            if out[-1][0] >= 400:
                return out
        c.send(BODY + b".\r\n")
        out.append(c.reply())
        c.cmd("QUIT")
    finally:
        c.close()
    return out


def test_lists_weights_allowlist_names_cache_and_sender_domains():
    gw0 = Gateway("--threads", "1")
    records = [
        # 127.0.0.10: zen (2) + bl2 (1) = 3: listed
        "--address=/10.0.0.127.zen.test/127.0.0.2", "--address=/10.0.0.127.bl2.test/127.0.0.4",
        # 127.0.0.11: the same and the allowlist (-5): passes
        "--address=/11.0.0.127.zen.test/127.0.0.2", "--address=/11.0.0.127.bl2.test/127.0.0.4",
        "--address=/11.0.0.127.wl.test/127.0.3.2",
        # 127.0.0.12: zen only, 2 < 3: passes
        "--address=/12.0.0.127.zen.test/127.0.0.2",
        # 127.0.0.13: zen + bl2 answering 127.0.0.3, outside its filter: 2
        "--address=/13.0.0.127.zen.test/127.0.0.2", "--address=/13.0.0.127.bl2.test/127.0.0.3",
        # 127.0.0.20: a forward-confirmed name; 127.0.0.21: a PTR whose A differs
        "--host-record=mail.good.test,127.0.0.20",
        "--ptr-record=21.0.0.127.in-addr.arpa,liar.good.test",
        "--address=/liar.good.test/192.0.2.99",
        # sender domains
        "--mx-host=good.test,mx.good.test,10", "--host-record=aonly.test,192.0.2.50",
    ]
    with Dnsmasq(gw0.tmp.name, records) as dm:
        gw = Gateway("--threads", "1", "--dns-server", "127.0.0.1:%d" % dm.port,
                     "--dnsbl", "zen.test*2", "--dnsbl", "bl2.test=127.0.0.[2;4]",
                     "--dnsbl", "wl.test=127.0.[0..255].[1..3]*-5", "--dnsbl-threshold", "3",
                     "--peername-lookup", "--reject-unknown-sender-domain")
        with gw:
            r = session(gw.port, "127.0.0.10")
            assert r[0][0] == 220, r
            assert r[1][0] == 554 and "blocked using zen.test" in r[1][1], r
            assert "127.0.0.10" in r[1][1], r
            # a second session: the verdict is cached, no second question
            r = session(gw.port, "127.0.0.10")
            assert r[1][0] == 554, r
            assert dm.queries("10.0.0.127.zen.test") == 1, open(dm.logf).read()[-2000:]
            assert dm.queries("10.0.0.127.in-addr.arpa") == 1
            for src in ("127.0.0.11", "127.0.0.12", "127.0.0.13"):
                r = session(gw.port, src)
                assert r[-1][0] == 250 and "queued" in r[-1][1], (src, r)
            # FCrDNS: the name in Received:; a PTR that does not confirm: unknown
            r = session(gw.port, "127.0.0.20")
            assert r[-1][0] == 250, r
            r = session(gw.port, "127.0.0.21")
            assert r[-1][0] == 250, r
            bodies = b"".join(read_spool(gw.spool).values())
            assert b"from client.test (mail.good.test [127.0.0.20])" in bodies, bodies[:2000]
            assert b"from client.test (unknown [127.0.0.21])" in bodies
            # sender domains: NXDOMAIN 550 5.1.8; an A without MX passes
            r = session(gw.port, "127.0.0.12", mail="a@nope.test")
            assert r[2][0] == 550 and r[2][1].startswith("550 5.1.8"), r
            r = session(gw.port, "127.0.0.12", mail="a@aonly.test")
            assert r[-1][0] == 250, r
            # PIPELINING: the replies keep their order around the wait
            c = Conn("127.0.0.1", gw.port)
            c.reply()
            c.send("EHLO p.test\r\nMAIL FROM:<a@nope.test>\r\nMAIL FROM:<a@good.test>\r\n"
                   "RCPT TO:<u@example.com>\r\nDATA\r\n")
            codes = [c.reply()[0] for _ in range(5)]
            assert codes == [250, 550, 250, 250, 354], codes
            c.send(BODY + b".\r\nQUIT\r\n")
            assert c.reply()[0] == 250
            c.close()
            log = gw.log()
            assert "dns: client=mail.good.test[127.0.0.20]" in log, log[-3000:]
            assert re.search(r"dnsbl: client=\[127\.0\.0\.10\].*listed: score 3", log), log
            gw.stop()


def test_broken_answers_timeouts_and_a_second_client():
    gw = Gateway("--threads", "1")
    with BrokenDns() as bd:
        gw.argv += ["--dns-server", "127.0.0.1:%d" % bd.port, "--dnsbl", "silent.test",
                    "--dnsbl-timeout", "800", "--reject-unknown-sender-domain",
                    "--peername-lookup"]
        with gw:
            # A: its list never answers; B, on the same worker, is served
            # meanwhile, start to end, while A's greeting waits.
            res = {}

            def client_a():
                t0 = time.time()
                res["a"] = session(gw.port, "127.0.0.66", mail="a@a.servfail.test")
                res["a_greet"] = time.time() - t0

            ta = threading.Thread(target=client_a)
            t0 = time.time()
            ta.start()
            time.sleep(0.1)
            b = session(gw.port, "127.0.0.77")
            tb = time.time() - t0
            assert b[-1][0] == 250 and "queued" in b[-1][1], b
            assert "a" not in res, "B was served only after A"
            ta.join(10)
            a = res["a"]
            assert a[0][0] == 220 and a[1][0] == 250, a
            assert a[2][0] == 450 and a[2][1].startswith("450 4.1.8"), a
            assert 0.6 < res["a_greet"] < 5, res
            assert tb < 0.6, tb
            # each broken answer is "no answer": 450 4.1.8, the session goes on
            c = Conn("127.0.0.1", gw.port)
            assert c.reply()[0] == 220
            assert c.cmd("EHLO c.test")[0] == 250
            for dom, want in (("servfail.test", 450), ("trunc.test", 450),
                              ("wrongid.test", 450), ("garbage.test", 450),
                              ("silent-mx.test", 450), ("nullmx.test", 550)):
                code, text = c.cmd("MAIL FROM:<x@%s>" % dom)
                assert code == want, (dom, code, text)
                assert text.startswith("%d %s" % (want, "5.1.8" if want == 550 else "4.1.8"))
                if want == 550:
                    assert "null MX" in text, text
            assert c.cmd("NOOP")[0] == 250
            c.cmd("QUIT")
            c.close()
            log = gw.log()
            # one line per question that got no answer, none for the others
            assert log.count(" servfail.test MX:") == 1, log[-4000:]
            assert "nullmx.test MX:" not in log
            assert bd.asked, "the server was never asked"
            gw.stop()


def metric(port, line):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    for ln in data.decode().splitlines():
        if ln.startswith(line + " "):
            return int(float(ln.split()[-1]))
    raise AssertionError("no %s in the metrics" % line)


def test_unknown_client_hostname_and_tempfail_action():
    gw0 = Gateway("--threads", "1")
    mport = free_port()
    with Dnsmasq(gw0.tmp.name, ["--host-record=named.good.test,127.0.0.30",
                                "--address=/31.0.0.127.zen.test/127.0.0.2"]) as dm:
        with Gateway("--threads", "1", "--dns-server", "127.0.0.1:%d" % dm.port,
                     "--reject-unknown-client-hostname", "--dnsbl", "zen.test",
                     "--dnsbl-action", "tempfail", "--dnsbl-cache-ttl", "0",
                     "--metrics-listen", "127.0.0.1:%d" % mport) as gw:
            r = session(gw.port, "127.0.0.30")
            assert r[-1][0] == 250, r
            r = session(gw.port, "127.0.0.32")
            assert r[1][0] == 450 and r[1][1].startswith("450 4.7.25"), r
            r = session(gw.port, "127.0.0.31")
            assert r[1][0] == 450 and r[1][1].startswith("450 4.7.1") and "zen.test" in r[1][1]
            # no verdict cache: the second session asks again
            session(gw.port, "127.0.0.31")
            assert dm.queries("31.0.0.127.zen.test") == 2
            t = 'ringmx_messages_tempfailed_total{reason="%s"}'
            assert metric(mport, t % "unknown_client_hostname") == 1
            assert metric(mport, t % "dnsbl_tempfail") == 2


def test_greet_delay_and_talking_first():
    gw0 = Gateway("--threads", "1")
    with Dnsmasq(gw0.tmp.name, ["--address=/50.0.0.127.zen.test/127.0.0.2"]) as dm:
        with Gateway("--threads", "1", "--dns-server", "127.0.0.1:%d" % dm.port,
                     "--dnsbl", "zen.test", "--greet-delay", "400") as gw:
            # the greeting comes after --greet-delay, the lookups done by then
            t0 = time.time()
            r = session(gw.port, "127.0.0.50")
            assert r[0][0] == 220 and time.time() - t0 >= 0.4, r
            assert r[1][0] == 554 and "zen.test" in r[1][1], r
            # a client that talks while the greeting waits is caught as before
            c = Conn.__new__(Conn)
            c.s = socket.create_connection(("127.0.0.1", gw.port), timeout=10,
                                           source_address=("127.0.0.51", 0))
            c.rx = b""
            c.send("EHLO early.test\r\n")
            code, text = c.reply()
            assert code == 554 and "talked before greeting" in text, text
            c.close()


def test_reload_changes_the_lists():
    gw = Gateway()
    with Dnsmasq(gw.tmp.name, ["--address=/40.0.0.127.zen.test/127.0.0.2",
                               "--address=/40.0.0.127.other.test/127.0.0.2"]) as dm:
        conf = os.path.join(gw.tmp.name, "ringmx.conf")
        base = ("listen = 127.0.0.1:%d\nspool = %s\nthreads = 1\nhostname = mx.test\n"
                "domains = example.com\ndns-server = 127.0.0.1:%d\n"
                % (gw.port, gw.spool, dm.port))

        def write(extra):
            with open(conf + ".new", "w") as f:
                f.write(base + extra)
            os.rename(conf + ".new", conf)

        write("")
        gw.argv = [gw.argv[0], "--config", conf]
        with gw:
            assert session(gw.port, "127.0.0.40")[-1][0] == 250
            write("dnsbl = zen.test\n")
            r = subprocess.run([gw.argv[0], "reload", "--spool", gw.spool], capture_output=True,
                               text=True, timeout=30)
            assert r.returncode == 0, r.stdout + r.stderr
            r = session(gw.port, "127.0.0.40")
            assert r[1][0] == 554 and "zen.test" in r[1][1], r
            # the threshold and the action too; the verdicts of before are gone
            write("dnsbl = zen.test, other.test*2\ndnsbl-threshold = 4\n")
            r = subprocess.run([gw.argv[0], "reload", "--spool", gw.spool], capture_output=True,
                               text=True, timeout=30)
            assert r.returncode == 0, r.stdout + r.stderr
            assert session(gw.port, "127.0.0.40")[-1][0] == 250
            write("dnsbl = zen.test, other.test*2\ndnsbl-threshold = 3\n"
                  "dnsbl-action = tempfail\n")
            subprocess.run([gw.argv[0], "reload", "--spool", gw.spool], capture_output=True,
                           text=True, timeout=30)
            r = session(gw.port, "127.0.0.40")
            assert r[1][0] == 450 and "other.test" in r[1][1], r


if __name__ == "__main__":
    if not os.path.exists(DNSMASQ) or dnslib is None:
        print("skip: needs dnsmasq (Debian dnsmasq-base) and python3-dnslib")
        sys.exit(77)
    ck = Checks()
    ck.run_all(globals())
    ck.finish()
