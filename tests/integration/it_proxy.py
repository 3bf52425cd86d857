"""The PROXY protocol (--listen-proxy, --listen-tls-proxy) behind a real
HAProxy started here with a generated configuration (send-proxy and
send-proxy-v2): the client address in the log, in Received: and for
--relay-networks is the one HAProxy accepted, never the balancer's. Raw
sockets check the rest: a header from outside --proxy-networks, garbage, a
v2 header split across reads, one that never completes (--proxy-timeout),
each closed without a greeting, and the gateway still serving.

Needs haproxy (Debian package haproxy, in .ci/deps); exits 77 without it."""
import os
import shutil
import signal
import smtplib
import socket
import ssl
import struct
import subprocess
import sys
import time

from rmx import Checks, Gateway, free_port, read_spool
from it_relay import wait_until

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
BODY = "Subject: via proxy\r\n\r\nhello\r\n"


class HAProxy:
    """haproxy -f <generated cfg> in the foreground, stopped by pid."""

    def __init__(self, tmp, backends):
        """<backends>: [(frontend port, backend port, 'send-proxy' | 'send-proxy-v2')]."""
        self.cfg = os.path.join(tmp, "haproxy.cfg")
        lines = ["global", "  maxconn 2000", "defaults", "  mode tcp", "  timeout connect 5s",
                 "  timeout client 30s", "  timeout server 30s"]
        for i, (front, back, how) in enumerate(backends):
            lines += [f"listen l{i}", f"  bind 127.0.0.1:{front}",
                      f"  server rx 127.0.0.1:{back} {how}"]
        with open(self.cfg, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.ports = [b[0] for b in backends]
        self.log = open(os.path.join(tmp, "haproxy.log"), "wb")
        self.proc = None

    def __enter__(self):
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", self.cfg], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        for port in self.ports:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError("haproxy exited: " + open(self.log.name).read())
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.time() > deadline:
                        raise RuntimeError("haproxy did not listen")
                    time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def proxy_gateway(*args, **kw):
    gw = Gateway(*args, **kw)
    gw.pport = free_port()
    gw.argv += ["--listen-proxy", f"127.0.0.1:{gw.pport}", "--proxy-networks", "127.0.0.1",
                "--proxy-timeout", "1"]
    return gw


def send_from(src, port, rcpts=("u@example.com",)):
    """One message through 127.0.0.1:<port> from local address <src>."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10, source_address=(src, 0)) as c:
        c.ehlo("client.test")
        c.mail("a@sender.test")
        codes = [c.rcpt(r)[0] for r in rcpts]
        if 250 in codes:
            assert c.data(BODY)[0] == 250
        return codes


def test_haproxy_v1_and_v2_pass_the_client_address():
    gw = proxy_gateway("--relay-networks", "127.0.0.1")
    f1, f2 = free_port(), free_port()
    with gw, HAProxy(gw.tmp.name, [(f1, gw.pport, "send-proxy"),
                                   (f2, gw.pport, "send-proxy-v2")]):
        for front, src, v in ((f1, "127.0.0.2", 1), (f2, "127.0.0.3", 2)):
            # The balancer (127.0.0.1) may relay; the client behind it may not.
            codes = send_from(src, front, ("u@example.com", "x@elsewhere.test"))
            assert codes == [250, 554], (v, codes)
            assert wait_until(lambda: f"proxy: client=[{src}]" in gw.log(), 5), gw.log()
            assert "via [127.0.0.1]" in gw.log() and f"(v{v})" in gw.log()
            assert wait_until(lambda: f"NOQUEUE: reject: RCPT from unknown[{src}]: 554 5.7.1" in gw.log(), 5)
        bodies = read_spool(gw.spool).values()
        assert any(b"Received: from client.test ([127.0.0.2])" in b for b in bodies), bodies
        assert any(b"Received: from client.test ([127.0.0.3])" in b for b in bodies), bodies
        assert gw.count() == 2
        # HAProxy's own health checks would send LOCAL; direct clients on
        # --listen still work beside the proxy listener.
        assert send_from("127.0.0.1", gw.port) == [250]


def raw(port, src="127.0.0.1"):
    s = socket.socket()
    s.settimeout(5)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s


def closed_without_greeting(s, timeout=5):
    s.settimeout(timeout)
    try:
        data = s.recv(4096)
    except ConnectionResetError:
        data = b""
    s.close()
    return data == b""


V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_tcp4(src, sport, dst="127.0.0.1", dport=25, tlv=b""):
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack(">HH", sport, dport) + tlv
    return V2_SIG + bytes([0x21, 0x11]) + struct.pack(">H", len(body)) + body


def test_bad_headers_are_closed_without_a_greeting():
    gw = proxy_gateway()
    with gw:
        # From outside --proxy-networks: closed at once, even with a header.
        s = raw(gw.pport, "127.0.0.9")
        s.sendall(b"PROXY TCP4 192.0.2.1 127.0.0.1 1000 25\r\n")
        assert closed_without_greeting(s)
        assert wait_until(lambda: "not in --proxy-networks: closed" in gw.log(), 5)
        # No header, an SMTP client by mistake.
        s = raw(gw.pport)
        s.sendall(b"EHLO direct.test\r\n")
        assert closed_without_greeting(s)
        # Garbage, and a v2 signature with a bad version.
        for junk in (os.urandom(64), V2_SIG + b"\x31\x11\x00\x0c" + b"\x00" * 12,
                     b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 25\r\n"):
            s = raw(gw.pport)
            s.sendall(junk)
            assert closed_without_greeting(s), junk
        # A header that never completes: closed after --proxy-timeout (1 s).
        s = raw(gw.pport)
        t0 = time.time()
        s.sendall(b"PROXY TCP4 192.0.2.1 ")
        assert closed_without_greeting(s, timeout=8)
        assert 0.9 <= time.time() - t0 < 4, time.time() - t0
        assert wait_until(lambda: "no PROXY header in 1s" in gw.log(), 5)
        assert wait_until(lambda: gw.log().count("bad PROXY header") >= 4, 5), gw.log()
        # Still serving.
        assert send_from("127.0.0.1", gw.port) == [250]


def test_v2_header_split_across_reads_then_smtp():
    gw = proxy_gateway()
    with gw:
        hdr = v2_tcp4("198.51.100.23", 40000, tlv=b"\x04\x00\x03abc")  # a NOOP TLV
        s = raw(gw.pport)
        for piece in (hdr[:5], hdr[5:14], hdr[14:30], hdr[30:]):
            s.sendall(piece)
            time.sleep(0.15)
        f = s.makefile("rb")
        assert f.readline().startswith(b"220 "), "no greeting after the header"
        s.sendall(b"EHLO split.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<u@example.com>\r\n"
                  b"DATA\r\n")
        while not f.readline().startswith(b"354"):
            pass
        s.sendall(BODY.encode() + b".\r\nQUIT\r\n")
        while True:
            ln = f.readline()
            if not ln or ln.startswith(b"221"):
                break
        s.close()
        bodies = list(read_spool(gw.spool).values())
        assert len(bodies) == 1 and b"([198.51.100.23])" in bodies[0], bodies
        assert wait_until(lambda: "proxy: client=[198.51.100.23]:40000 via [127.0.0.1]"
                          in gw.log(), 5), gw.log()


def test_header_and_commands_in_one_write():
    """The bytes after the header in the same segment are the client's
    first ones: answered after the greeting, or with --greet-delay taken as
    talking before it (554), as without a balancer."""
    for delay, want in ((None, b"250"), ("300", b"554")):
        gw = proxy_gateway(*(("--greet-delay", delay) if delay else ()))
        with gw:
            s = raw(gw.pport)
            s.sendall(b"PROXY TCP6 2001:db8::5 ::1 1234 25\r\nEHLO early.test\r\n")
            f = s.makefile("rb")
            first = f.readline()
            if not delay:
                assert first.startswith(b"220 "), first
                first = f.readline()
            s.close()
            assert first.startswith(want), (delay, first)
            assert wait_until(lambda: "proxy: client=[2001:db8::5]:1234" in gw.log(), 5)
            if delay:
                assert wait_until(lambda: "pregreet: client=[2001:db8::5]" in gw.log(), 5)


def test_tls_behind_haproxy():
    sys.path.insert(0, os.path.dirname(__file__))
    from it_tls import make_cert
    cert, key = make_cert("mx.test")
    gw = Gateway("--tls-cert", cert, "--tls-key", key)
    tport = free_port()
    gw.argv += ["--listen-tls-proxy", f"127.0.0.1:{tport}", "--proxy-networks", "127.0.0.1"]
    front = free_port()
    with gw, HAProxy(gw.tmp.name, [(front, tport, "send-proxy-v2")]):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with smtplib.SMTP_SSL("127.0.0.1", front, timeout=10, context=ctx,
                              source_address=("127.0.0.4", 0)) as c:
            assert c.sendmail("a@sender.test", ["u@example.com"], BODY) == {}
        bodies = list(read_spool(gw.spool).values())
        assert len(bodies) == 1 and b"([127.0.0.4])" in bodies[0], bodies
        assert b"TLS" in bodies[0], bodies[0][:300]


if __name__ == "__main__":
    if not os.path.exists(HAPROXY):
        print("skip: haproxy not installed (Debian package haproxy)")
        sys.exit(77)
    ck = Checks()
    ck.run_all(globals())
    ck.finish()
