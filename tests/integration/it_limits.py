"""Per-client limits (core/anvil) against the real binary: sessions per
address (421 4.7.0 beyond them, another address unaffected, the count given
back when sessions close), connection, message and recipient rates (421 at
connect, 452 4.7.0 at MAIL and RCPT), --limits-exempt, and the client named
by a PROXY header being the one limited."""
import smtplib
import socket
import time

from rmx import Checks, Gateway, free_port
from it_relay import wait_until

BODY = "Subject: limits\r\n\r\nhello\r\n"


def greet(src, port):
    """A raw session from <src>: (socket, first reply line)."""
    s = socket.socket()
    s.settimeout(10)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s, s.makefile("rb").readline()


def test_sessions_per_client():
    with Gateway("--client-max-sessions", "5") as gw:
        held = [greet("127.0.0.1", gw.port) for _ in range(5)]
        assert all(line.startswith(b"220 ") for _, line in held), held
        s, line = greet("127.0.0.1", gw.port)
        assert line.startswith(b"421 4.7.0 mx.test Too many connections from your address"), line
        s.close()
        other, line = greet("127.0.0.2", gw.port)
        assert line.startswith(b"220 "), line  # another client is not affected
        other.close()
        # A session that ends gives its place back.
        held[0][0].close()
        assert wait_until(lambda: greet("127.0.0.1", gw.port)[1].startswith(b"220 "), 5)
        for s, _ in held[1:]:
            s.close()
        assert wait_until(lambda: "too many sessions from its address" in gw.log(), 5)


def test_connection_rate():
    with Gateway("--client-connection-rate", "3/1m") as gw:
        for _ in range(3):
            s, line = greet("127.0.0.1", gw.port)
            assert line.startswith(b"220 "), line
            s.close()
        s, line = greet("127.0.0.1", gw.port)
        assert line.startswith(b"421 4.7.0") and b"try again later" in line, line
        s.close()
        s, line = greet("127.0.0.2", gw.port)
        assert line.startswith(b"220 "), line
        s.close()


def test_message_and_recipient_rates():
    with Gateway("--client-message-rate", "2/1m", "--client-recipient-rate", "3/1m") as gw:
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
            c.ehlo("client.test")
            for i in range(2):
                assert c.mail("a@sender.test")[0] == 250
                assert c.rcpt(f"u{i}@example.com")[0] == 250
                assert c.data(BODY)[0] == 250
            code, msg = c.mail("a@sender.test")
            assert code == 452 and msg.startswith(b"4.7.0 Error: too many messages"), (code, msg)
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10,
                          source_address=("127.0.0.2", 0)) as c:
            c.ehlo("other.test")
            assert c.mail("a@sender.test")[0] == 250
            codes = [c.rcpt(f"r{i}@example.com")[0] for i in range(4)]
            assert codes == [250, 250, 250, 452], codes
        assert gw.count() == 2


def test_exempt_networks():
    with Gateway("--client-max-sessions", "2", "--limits-exempt", "127.0.0.1") as gw:
        held = [greet("127.0.0.1", gw.port) for _ in range(5)]
        assert all(line.startswith(b"220 ") for _, line in held), held
        s, line = [greet("127.0.0.3", gw.port) for _ in range(3)][-1]
        assert line.startswith(b"421 4.7.0"), line
        for s, _ in held:
            s.close()


def test_the_client_behind_a_proxy_is_limited():
    gw = Gateway("--client-max-sessions", "2")
    pport = free_port()
    gw.argv += ["--listen-proxy", f"127.0.0.1:{pport}", "--proxy-networks", "127.0.0.1"]
    with gw:
        def via(src):
            s = socket.create_connection(("127.0.0.1", pport), timeout=10)
            s.sendall(f"PROXY TCP4 {src} 127.0.0.1 1000 25\r\n".encode())
            return s, s.makefile("rb").readline()
        a = [via("192.0.2.1") for _ in range(2)]
        b = via("192.0.2.2")
        c = via("192.0.2.1")
        assert all(line.startswith(b"220 ") for _, line in a + [b]), (a, b)
        assert c[1].startswith(b"421 4.7.0"), c  # the third from 192.0.2.1
        # The balancer's own address is not what counts: 127.0.0.1 direct
        # still gets in.
        d = greet("127.0.0.1", gw.port)
        assert d[1].startswith(b"220 "), d
        for s, _ in a + [b, c, d]:
            s.close()


def test_overload_mode_entered_and_left():
    """Past --overload-threshold percent of --max-sessions idle sessions
    get --overload-idle-timeout instead of --idle-timeout (300 s), until
    the count is back under it; then the gateway says so."""
    import select
    with Gateway("--max-sessions", "10", "--overload-threshold", "50",
                 "--overload-idle-timeout", "1", "--client-max-sessions", "0") as gw:
        held = [greet("127.0.0.1", gw.port)[0] for _ in range(9)]
        timed_out, deadline = set(), time.time() + 8
        while len(timed_out) < 4 and time.time() < deadline:
            ready, _, _ = select.select([s for s in held if s not in timed_out], [], [], 0.5)
            for s in ready:
                data = s.recv(4096)
                assert data.startswith(b"421 4.4.2") or data == b"", data
                timed_out.add(s)
        # 9 open over a threshold of 5: at least 4 go after 1 s, not 300 s.
        assert len(timed_out) >= 4, len(timed_out)
        assert wait_until(lambda: "over --overload-threshold 50%" in gw.log(), 5), gw.log()
        assert wait_until(lambda: "(overload)" in gw.log(), 5), gw.log()
        for s in held:
            s.close()
        assert wait_until(lambda: "back under --overload-threshold" in gw.log(), 5), gw.log()
        # Under the threshold a session idles on as before.
        s, line = greet("127.0.0.1", gw.port)
        s.settimeout(2.5)
        try:
            data = s.recv(4096)
        except socket.timeout:
            data = None
        assert data is None, data
        s.close()


if __name__ == "__main__":
    ck = Checks()
    ck.run_all(globals())
    ck.finish()
