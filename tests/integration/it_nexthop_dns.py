"""Next hops by name against a real DNS server (dnsmasq on a high loopback
port, --dns-server): `--route DOMAIN=mx:NAME:PORT` delivers to the MX hosts
in preference order (failover to the next), a name without MX records is
its own (implicit) MX, a null MX or a name that does not exist stops the
start with a clear error, a next hop's address that changes in DNS while
the gateway runs is picked up once its TTL has run out (nothing lost,
nothing sent twice), and a DNS server that stops answering keeps the
addresses that worked."""
import os
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import time

from rmx import Checks, Gateway, RINGMX, free_port
from it_relay import wait_until
from nexthop import HAVE_AIOSMTPD, NextHop

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


class Dnsmasq:
    """dnsmasq answering for *.test from a hosts file and MX records, TTL 1 s."""

    def __init__(self, hosts, mx=()):
        self.tmp = tempfile.mkdtemp(prefix="ringmx-dns-")
        self.hosts = os.path.join(self.tmp, "hosts")
        self.logpath = os.path.join(self.tmp, "dnsmasq.log")
        self.mx = list(mx)
        self.write(hosts)
        self.proc = None
        self.port = None

    def write(self, hosts):
        with open(self.hosts + ".new", "w") as f:
            f.write("".join(f"{addr} {name}\n" for name, addr in hosts))
        os.rename(self.hosts + ".new", self.hosts)

    def start(self):
        for _ in range(5):
            self.port = free_port()
            argv = [DNSMASQ, "-k", "-C", "/dev/null", f"--port={self.port}",
                    "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv",
                    "--no-hosts", f"--addn-hosts={self.hosts}", "--local-ttl=1",
                    "--local=/test/", "--log-queries", "--log-facility=-", "--user=root",
                    "--group=root", "--pid-file="]
            argv += [f"--mx-host={d},{h},{p}" for d, h, p in self.mx]
            self.log = open(self.logpath, "ab")
            self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
            if wait_until(lambda: "read " + self.hosts in self.text() or
                          self.proc.poll() is not None, 5) and self.proc.poll() is None:
                return self
            self.stop()
        raise RuntimeError("dnsmasq did not start:\n" + self.text())

    def text(self):
        with open(self.logpath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def reread(self):
        n = self.text().count("read " + self.hosts)
        self.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: self.text().count("read " + self.hosts) > n, 5), self.text()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.proc = None

    @property
    def spec(self):
        return f"127.0.0.1:{self.port}"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def send(gw, rcpts, tag):
    with smtplib.SMTP(gw.host, gw.port, timeout=10) as c:
        for r in rcpts:
            c.sendmail("s@sender.test", [r], f"Subject: {tag}\r\n\r\n{tag} {r}\r\n")


def test_mx_in_preference_order_then_failover():
    port = free_port()
    with Dnsmasq([("mx1.test", "127.0.0.2"), ("mx2.test", "127.0.0.3")],
                 mx=[("mx.test", "mx2.test", 20), ("mx.test", "mx1.test", 10)]) as dns, \
            NextHop(host="127.0.0.2", port=port) as a, NextHop(host="127.0.0.3", port=port) as b:
        with Gateway("--dns-server", dns.spec, "--domains", "mx.test", "--route",
                     f"mx.test=mx:mx.test:{port}", "--retry-min", "1", "--retry-max", "1",
                     threads=1) as gw:
            assert "mx.test next hop 1: mx1.test[127.0.0.2]" in gw.log(), gw.log()
            assert "mx.test next hop 2: mx2.test[127.0.0.3]" in gw.log(), gw.log()
            send(gw, [f"u{i}@mx.test" for i in range(3)], "pref")
            assert len(a.wait_messages(3)) == 3
            assert not b.messages()  # the lower preference number first
            a.stop()
            send(gw, [f"v{i}@mx.test" for i in range(2)], "failover")
            assert len(b.wait_messages(2)) == 2, gw.log()[-2000:]
            assert len(a.messages()) == 3


def test_implicit_mx_null_mx_and_no_such_name():
    port = free_port()
    with Dnsmasq([("plain.test", "127.0.0.2")], mx=[("null.test", ".", 0)]) as dns, \
            NextHop(host="127.0.0.2", port=port) as a:
        # No MX record: the name's own address (RFC 5321 section 5.1).
        with Gateway("--dns-server", dns.spec, "--domains", "plain.test", "--route",
                     f"plain.test=mx:plain.test:{port}") as gw:
            send(gw, ["u@plain.test"], "implicit")
            assert len(a.wait_messages(1)) == 1
        for spec, why in ((f"null.test=mx:null.test:{port}", "null MX: it takes no mail"),
                          (f"null.test=nosuch.test:{port}", "no such name (NXDOMAIN)")):
            r = subprocess.run([RINGMX, "--check", "--dns-server", dns.spec, "--route", spec],
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
            assert why in r.stderr, r.stderr


def test_address_change_followed_after_the_ttl():
    port = free_port()
    with Dnsmasq([("relay.test", "127.0.0.2")]) as dns, \
            NextHop(host="127.0.0.2", port=port) as a, NextHop(host="127.0.0.3", port=port) as b:
        with Gateway("--dns-server", dns.spec, "--relay-to", f"relay.test:{port}") as gw:
            send(gw, ["first0@example.com", "first1@example.com"], "before")
            assert len(a.wait_messages(2)) == 2
            dns.write([("relay.test", "127.0.0.3")])
            dns.reread()
            assert wait_until(lambda: "next hops: new addresses" in gw.log(), 10), gw.log()
            assert "relay.test[127.0.0.3]" in gw.log()
            send(gw, ["second0@example.com", "second1@example.com"], "after")
            assert len(b.wait_messages(2)) == 2, gw.log()[-2000:]
            assert len(a.messages()) == 2  # nothing went twice
            assert wait_until(lambda: "delivers to the new next hops" in gw.log(), 5)
            # The DNS server stops answering: the addresses that work stay.
            dns.stop()
            assert wait_until(lambda: "the current addresses stay" in gw.log(), 15), gw.log()
            send(gw, ["third@example.com"], "dns down")
            assert len(b.wait_messages(3)) == 3


if __name__ == "__main__":
    if not HAVE_AIOSMTPD or not os.path.exists(DNSMASQ):
        print("SKIP: needs aiosmtpd and dnsmasq (.ci/deps installs them)")
        sys.exit(77)
    ck = Checks()
    ck.run_all(globals())
    ck.finish()
