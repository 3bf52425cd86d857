"""Fake next hops for the relay integration tests (it_relay.py): an SMTP and
an LMTP server (aiosmtpd) on 127.0.0.1, in a thread, that record every
message they accept (envelope and exact content bytes) and misbehave on
demand; and a wrapper for Postfix's smtp-sink.

    hop = NextHop()                  # SMTP; NextHop(lmtp=True) for LMTP
    hop.start()                      # or leave it down: hop.port is reserved
    gw = Gateway("--relay-to", hop.spec)   # "127.0.0.1:PORT" / "lmtp:127.0.0.1:PORT"
    hop.wait_messages(50)            # bounded wait; hop.messages() is a snapshot
    hop.stop(); hop.start()          # down, then up again on the same port

Behaviour (attributes; change them at any time, also while running):
    fail_for(seconds) / fail_next(n)  temporary failure (temp_reply, 451) at
                           fail_stage ('mail', 'rcpt' or 'data') for a while
                           or for the next n transactions reaching that stage
    reject_rcpt(addr)      predicate: 5xx (reject_reply) at RCPT
    defer_rcpt(addr)       predicate: 4xx (temp_reply) at RCPT
    reject_data(addr)      predicate, after DATA: LMTP answers 550 for those
                           recipients only (one reply per recipient); SMTP
                           answers 554 for the whole message if any matches
    delay                  seconds each DATA takes before its reply

Only messages that got a 2xx after DATA are recorded (for LMTP: with the
recipients that got a 2xx). A null sender is recorded as mail_from == "".
aiosmtpd is found in Debian's dist-packages when the Python running the
tests does not see it (a pyenv Python, for instance).

Self-check by hand:  cd tests/integration && python3 -c 'import nexthop; nexthop.selftest()'
"""
import asyncio
import os
import socket
import subprocess
import sys
import threading
import time

try:
    import aiosmtpd  # noqa: F401
except ImportError:
    sys.path.append("/usr/lib/python3/dist-packages")
try:
    from aiosmtpd.controller import Controller
    from aiosmtpd.lmtp import LMTP
    from aiosmtpd.smtp import SMTP
    HAVE_AIOSMTPD = True
except ImportError:  # the caller decides: it_relay.py exits 77
    HAVE_AIOSMTPD = False

SMTP_SINK = "/usr/sbin/smtp-sink"


def reserve_port(host="127.0.0.1"):
    """A free TCP port on <host> that nothing listens on (yet)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def hostport(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listening(host, port, timeout=0.5):
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


class Message:
    """One message a next hop accepted."""

    def __init__(self, mail_from, rcpt_tos, content, mail_options, rcpt_options,
                 results, proto, peer):
        self.mail_from = mail_from        # "" for the null sender
        self.rcpt_tos = rcpt_tos          # the recipients that were accepted
        self.content = content            # bytes, as received, dot-stuffing undone
        self.mail_options = mail_options  # e.g. ["SIZE=123", "BODY=8BITMIME"]
        self.rcpt_options = rcpt_options
        self.results = results            # LMTP: [(rcpt, reply)] after DATA
        self.proto = proto                # "smtp" or "lmtp"
        self.peer = peer
        self.time = time.time()

    def __repr__(self):
        return (f"<Message from=<{self.mail_from}> to={self.rcpt_tos} "
                f"{len(self.content)} bytes>")


class _Handler:
    """aiosmtpd hooks; the behaviour lives in the NextHop."""

    def __init__(self, hop):
        self.hop = hop

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        hop = self.hop
        with hop._lock:
            hop.mail_commands += 1
        if hop._temp_fail("mail"):
            return hop.temp_reply
        envelope.mail_from = address  # "<>" for the null sender (aiosmtpd's way)
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        hop = self.hop
        with hop._lock:
            hop.rcpt_log.append((envelope.mail_from, address))
        if hop.rcpt_delay:
            await asyncio.sleep(hop.rcpt_delay)
        if hop._temp_fail("rcpt"):
            return hop.temp_reply
        if hop.reject_rcpt and hop.reject_rcpt(address):
            return hop.reject_reply
        if hop.defer_rcpt and hop.defer_rcpt(address):
            return hop.temp_reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        hop = self.hop
        if hop.delay:
            await asyncio.sleep(hop.delay)
        if hop._temp_fail("data"):
            if hop.lmtp:
                return "\r\n".join(hop.temp_reply for _ in envelope.rcpt_tos)
            return hop.temp_reply
        mail_from = "" if envelope.mail_from == "<>" else envelope.mail_from
        content = bytes(envelope.original_content)
        peer = session.peer
        if hop.lmtp:
            results = []
            for r in envelope.rcpt_tos:
                if hop.reject_data and hop.reject_data(r):
                    results.append((r, hop.reject_data_reply))
                else:
                    results.append((r, "250 2.0.0 Ok: delivered"))
            ok = [r for r, reply in results if reply.startswith("2")]
            if ok:
                hop._record(Message(mail_from, ok, content, list(envelope.mail_options),
                                    list(envelope.rcpt_options), results, "lmtp", peer))
            # One reply per accepted recipient, in RCPT order (RFC 2033 4.2);
            # aiosmtpd writes the string and a final CRLF as they are.
            return "\r\n".join(reply for _, reply in results)
        if hop.reject_data and any(hop.reject_data(r) for r in envelope.rcpt_tos):
            return "554 5.6.0 fake next hop: message refused"
        with hop._lock:
            hop.queue_seq += 1
            qid = hop.queue_seq
        hop._record(Message(mail_from, list(envelope.rcpt_tos), content,
                            list(envelope.mail_options), list(envelope.rcpt_options),
                            [], "smtp", peer))
        return f"250 2.0.0 Ok: queued as FAKE{qid}"


class _Controller(Controller if HAVE_AIOSMTPD else object):
    def __init__(self, hop, **kw):
        self.hop = hop
        super().__init__(_Handler(hop), **kw)

    def factory(self):
        hop = self.hop
        base = LMTP if hop.lmtp else SMTP

        class Server(base):
            def connection_made(self, transport):
                first = self.transport is None
                super().connection_made(transport)
                if first:
                    hop._conn_open(transport)

            def connection_lost(self, exc):
                hop._conn_closed(self.transport)
                super().connection_lost(exc)

        return Server(self.handler, **self.SMTP_kwargs)


class NextHop:
    """A fake SMTP (or LMTP) next hop; see the module's docstring."""

    def __init__(self, lmtp=False, host="127.0.0.1", port=None, name="fake-hop.test"):
        if not HAVE_AIOSMTPD:
            raise RuntimeError("aiosmtpd is not installed (Debian: python3-aiosmtpd)")
        self.lmtp = lmtp
        self.host = host
        self.port = port or reserve_port(host)
        self.name = name
        self._lock = threading.Lock()
        self._msgs = []
        self._conns = set()
        self._ctl = None
        self.connections = 0   # sessions opened (the controller's own probe excluded)
        self.max_concurrent = 0  # most sessions open at once
        self.mail_commands = 0
        self.rcpt_log = []     # (mail_from as aiosmtpd has it, "<>" null; address) per RCPT
        self.temp_failures = 0
        self.queue_seq = 0
        # behaviour
        self.fail_stage = "mail"
        self._fail_until = 0.0
        self._fail_left = 0
        self.temp_reply = "451 4.3.0 fake next hop: try again later"
        self.reject_reply = "550 5.1.1 fake next hop: no such user"
        self.reject_data_reply = "550 5.1.1 fake next hop: mailbox unavailable"
        self.reject_rcpt = None if lmtp else (lambda a: a.lower().startswith("bad"))
        self.reject_data = (lambda a: a.lower().startswith("bad")) if lmtp else None
        self.defer_rcpt = None
        self.delay = 0.0
        self.rcpt_delay = 0.0  # seconds each RCPT takes before its reply

    # -- behaviour -----------------------------------------------------------
    def fail_for(self, seconds, stage=None):
        """Temporary failure at <stage> for the next <seconds>."""
        if stage:
            self.fail_stage = stage
        self._fail_until = time.monotonic() + seconds

    def fail_next(self, n, stage=None):
        """Temporary failure for the next <n> transactions reaching <stage>."""
        if stage:
            self.fail_stage = stage
        with self._lock:
            self._fail_left = n

    def _temp_fail(self, stage):
        if stage != self.fail_stage:
            return False
        with self._lock:
            if time.monotonic() < self._fail_until:
                self.temp_failures += 1
                return True
            if self._fail_left > 0:
                self._fail_left -= 1
                self.temp_failures += 1
                return True
        return False

    # -- records -------------------------------------------------------------
    def _record(self, m):
        with self._lock:
            self._msgs.append(m)

    def probes(self, addr=None):
        """RCPTs of null-sender transactions (recipient verification probes),
        of <addr> only if given."""
        with self._lock:
            return [a for f, a in self.rcpt_log
                    if f == "<>" and (addr is None or a.lower() == addr.lower())]

    def messages(self):
        with self._lock:
            return list(self._msgs)

    def clear(self):
        with self._lock:
            self._msgs.clear()

    def wait(self, pred, timeout=20, step=0.05):
        """Polls pred(messages) until true or <timeout>; returns the last value."""
        deadline = time.time() + timeout
        while True:
            v = pred(self.messages())
            if v or time.time() >= deadline:
                return v
            time.sleep(step)

    def wait_messages(self, n, timeout=20):
        """Waits for at least <n> recorded messages; returns the snapshot."""
        self.wait(lambda ms: len(ms) >= n, timeout)
        return self.messages()

    # -- life ----------------------------------------------------------------
    @property
    def spec(self):
        """The --relay-to / --route form of this hop."""
        return ("lmtp:" if self.lmtp else "") + hostport(self.host, self.port)

    @property
    def running(self):
        return self._ctl is not None

    def _conn_open(self, transport):
        with self._lock:
            self._conns.add(transport)
            self.connections += 1
            self.max_concurrent = max(self.max_concurrent, len(self._conns))

    def _conn_closed(self, transport):
        with self._lock:
            self._conns.discard(transport)

    def start(self, timeout=10):
        """Listens on self.port (retrying a few times while the port is still
        taken, e.g. by a TIME_WAIT-less rebind race)."""
        assert self._ctl is None, "already running"
        deadline = time.time() + timeout
        while True:
            ctl = _Controller(self, hostname=self.host, port=self.port,
                              server_hostname=self.name, ready_timeout=5)
            try:
                ctl.start()
                break
            except OSError:
                try:
                    ctl.stop(no_assert=True)
                except Exception:
                    pass
                if time.time() >= deadline:
                    raise
                time.sleep(0.1)
        self._ctl = ctl
        # The controller opened one probe connection to start its server; it
        # is closed by now or about to be: do not count it.
        time.sleep(0.05)
        with self._lock:
            self.connections = max(0, self.connections - 1)
            self.max_concurrent = 0
        return self

    def open_sessions(self):
        with self._lock:
            return len(self._conns)

    def stop(self):
        """Goes down: stops listening and drops every open session, so that a
        client with a pooled connection sees it closed."""
        ctl, self._ctl = self._ctl, None
        if ctl is None:
            return

        def drop():
            with self._lock:
                conns = list(self._conns)
            for t in conns:
                t.abort()

        try:
            ctl.loop.call_soon_threadsafe(drop)
            time.sleep(0.05)
        except RuntimeError:
            pass
        ctl.stop(no_assert=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class SmtpSink:
    """Postfix's smtp-sink on 127.0.0.1:<port>: accepts (and forgets) every
    message; `smtp-sink -u nobody 127.0.0.1:PORT 1000` as root."""

    def __init__(self, port=None, backlog=1000, extra=()):
        self.port = port or reserve_port()
        argv = [SMTP_SINK]
        if os.geteuid() == 0:
            argv += ["-u", "nobody"]  # required as root; fatal when not root
        self.argv = argv + list(extra) + [f"127.0.0.1:{self.port}", str(backlog)]
        self.proc = None

    @staticmethod
    def available():
        return os.path.exists(SMTP_SINK)

    @property
    def spec(self):
        return f"127.0.0.1:{self.port}"

    def start(self, timeout=10):
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("smtp-sink exited: " + self.proc.stdout.read().decode())
            if listening("127.0.0.1", self.port):
                return self
            time.sleep(0.05)
        raise RuntimeError("smtp-sink did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# ---------------------------------------------------------------------------
def selftest():
    """Checks the fake next hops with smtplib; raises on the first failure."""
    import smtplib

    def ok(cond, what):
        if not cond:
            raise AssertionError(what)
        print("ok  ", what.split(":")[0])

    t0 = time.time()
    body = (b"Subject: selftest\r\n\r\nline one\r\n.leading dot\r\n..two dots\r\n"
            b".\r\nend\r\n")
    big = b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 1100  # ~1.1 MB

    with NextHop() as hop:
        with smtplib.SMTP(hop.host, hop.port, timeout=10) as c:
            code, feats = c.ehlo("selftest.test")
            ok(code == 250 and b"8BITMIME" in feats and b"SIZE" in feats, f"ehlo: {feats!r}")
            ok(c.sendmail("a@sender.test", ["u@example.com", "v@example.com"], body) == {},
               "send plain")
            ok(c.sendmail("a@sender.test", ["u@example.com"], big) == {}, "send 1 MB")
            refused = c.sendmail("a@sender.test", ["good@example.com", "bad@example.com"], body)
            ok(list(refused) == ["bad@example.com"] and refused["bad@example.com"][0] == 550,
               f"reject bad* at RCPT: {refused}")
            # null sender
            ok(c.sendmail("", ["n@example.com"], body) == {}, "null sender")
            c.mail("a@sender.test", ["BODY=8BITMIME", "SIZE=100"])
            c.rcpt("o@example.com")
            ok(c.data(body)[0] == 250, "mail options")
        ms = hop.messages()
        ok(len(ms) == 5, f"five recorded: {ms}")
        ok(ms[0].content == body and ms[0].mail_from == "a@sender.test"
           and ms[0].rcpt_tos == ["u@example.com", "v@example.com"],
           f"content and envelope exact: {ms[0].content!r}")
        ok(ms[1].content == big, "1 MB exact")
        ok(ms[2].rcpt_tos == ["good@example.com"], f"only accepted rcpts recorded: {ms[2]}")
        ok(ms[3].mail_from == "" and ms[3].rcpt_tos == ["n@example.com"],
           f"null sender recorded as '': {ms[3].mail_from!r}")
        ok(ms[4].mail_options == ["BODY=8BITMIME", "SIZE=100"], f"options: {ms[4].mail_options}")

        # temporary failures: by time, by count, at each stage
        hop.clear()
        hop.fail_for(1.0)
        with smtplib.SMTP(hop.host, hop.port, timeout=10) as c:
            try:
                c.sendmail("a@sender.test", ["u@example.com"], body)
                ok(False, "fail_for: MAIL should get 451")
            except smtplib.SMTPSenderRefused as e:
                ok(e.smtp_code == 451, f"fail_for: 451 at MAIL ({e.smtp_code})")
            time.sleep(1.1)
            ok(c.sendmail("a@sender.test", ["u@example.com"], body) == {}, "fail_for: then 250")
        hop.fail_next(2, stage="data")
        with smtplib.SMTP(hop.host, hop.port, timeout=10) as c:
            codes = []
            for _ in range(3):
                try:
                    c.sendmail("a@sender.test", ["u@example.com"], body)
                    codes.append(250)
                except smtplib.SMTPDataError as e:
                    codes.append(e.smtp_code)
            ok(codes == [451, 451, 250], f"fail_next(2) at DATA: {codes}")
        hop.fail_stage = "mail"
        hop.defer_rcpt = lambda a: a.startswith("defer")
        with smtplib.SMTP(hop.host, hop.port, timeout=10) as c:
            refused = c.sendmail("a@sender.test", ["defer@example.com", "u@example.com"], body)
            ok(refused.get("defer@example.com", (0,))[0] == 451, f"defer_rcpt: {refused}")
        hop.defer_rcpt = None
        ok(len(hop.messages()) == 3, f"failed ones not recorded: {hop.messages()}")

        # concurrent sessions are counted
        hop.max_concurrent = 0
        cs = [smtplib.SMTP(hop.host, hop.port, timeout=5) for _ in range(3)]
        for c in cs:
            c.ehlo("c.test")
        ok(hop.max_concurrent >= 3 and hop.open_sessions() >= 3,
           f"max_concurrent: {hop.max_concurrent}")
        for c in cs:
            c.quit()
        ok(hop.wait(lambda _: hop.open_sessions() == 0, timeout=5), "sessions closed")

        # delay
        hop.delay = 0.3
        with smtplib.SMTP(hop.host, hop.port, timeout=10) as c:
            t = time.time()
            c.sendmail("a@sender.test", ["u@example.com"], body)
            ok(time.time() - t >= 0.3, "delay per message")
        hop.delay = 0

        # down and up on the same port; a held session is dropped
        port = hop.port
        held = smtplib.SMTP(hop.host, hop.port, timeout=5)
        held.ehlo("held.test")
        hop.stop()
        ok(not listening(hop.host, port), "down: nothing listens")
        try:
            held.noop()
            dropped = False
        except (smtplib.SMTPServerDisconnected, OSError):
            dropped = True
        ok(dropped, "down: held session dropped")
        hop.start()
        ok(hop.port == port and listening(hop.host, port), "up again on the same port")
        with smtplib.SMTP(hop.host, hop.port, timeout=10) as c:
            ok(c.sendmail("a@sender.test", ["u@example.com"], body) == {}, "delivers after up")

    # a hop that starts down
    hop = NextHop()
    ok(not listening(hop.host, hop.port), "starts down")
    hop.start()
    ok(listening(hop.host, hop.port), "comes up")
    hop.stop()

    # LMTP: per-recipient results after DATA
    with NextHop(lmtp=True) as lm:
        with smtplib.LMTP(lm.host, lm.port, timeout=10) as c:
            code, _ = c.ehlo("selftest.test")  # smtplib.LMTP sends LHLO
            ok(code == 250, "lhlo")
            c.mail("a@sender.test")
            c.rcpt("good@example.com")
            c.rcpt("bad@example.com")
            first = c.data(body)
            second = c.getreply()
            ok(first[0] == 250 and second[0] == 550, f"lmtp per-rcpt results: {first} {second}")
            ok(c.sendmail("", ["a@sender.test"], body) == {}, "lmtp null sender")
        ms = lm.messages()
        ok(len(ms) == 2 and ms[0].rcpt_tos == ["good@example.com"] and ms[0].content == body
           and [r[1][:3] for r in ms[0].results] == ["250", "550"],
           f"lmtp records: {ms}")
        ok(ms[1].mail_from == "" and ms[1].proto == "lmtp", "lmtp record null sender")
        ok(lm.spec == f"lmtp:127.0.0.1:{lm.port}", f"lmtp spec: {lm.spec}")
        # EHLO is not LMTP
        s = socket.create_connection((lm.host, lm.port), timeout=5)
        s.recv(1000)
        s.sendall(b"EHLO x\r\n")
        ok(s.recv(1000).startswith(b"500"), "lmtp refuses EHLO")
        s.close()

    # IPv6 hop
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
        have6 = True
    except OSError:
        have6 = False
    if have6:
        with NextHop(host="::1") as h6:
            with smtplib.SMTP("::1", h6.port, timeout=10) as c:
                c.sendmail("a@sender.test", ["u@example.com"], body)
            ok(len(h6.messages()) == 1 and h6.spec == f"[::1]:{h6.port}", "ipv6 hop")

    if SmtpSink.available():
        with SmtpSink() as sink:
            with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as c:
                res = [c.sendmail("a@sender.test", ["u@example.com"], body) for _ in range(20)]
            ok(res == [{}] * 20, "smtp-sink: 20 messages accepted")
    else:
        print("skip smtp-sink: not installed")
    print(f"nexthop selftest passed ({time.time() - t0:.1f}s)")


__all__ = ["NextHop", "SmtpSink", "Message", "reserve_port", "hostport", "listening",
           "HAVE_AIOSMTPD", "selftest"]
