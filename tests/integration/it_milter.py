"""Integration: content filters (issue 15). The real ringmx binary with
--milter in front of real filters started here: rmx_testmilter (a filter
on the real libmilter, tests/milter/rmx_testmilter.c, built by meson; its
actions chosen by the message), misbehaving fake filters written here
(a packet too long, a close in the middle of a packet, an unknown reply,
death at end of message after a modification) and, when Debian's rspamd
is installed, rspamd's proxy worker in milter mode.

Checked: every reply (accept, per-recipient reject and tempfail, reject at
end of message with a two-line reply, tempfail, discard, progress past the
timeout), every modification at the next hop byte for byte (add, insert,
change and delete a header, change the sender, add and delete a
recipient, replace the body), the macros the filter saw, body chunks of 64
KB at most and SKIP, two filters in a chain (the second sees the first
one's changes), a filter down, killed, too slow or broken: the default
action (451 4.7.1 and nothing spooled; accept and reject too), a
quarantined message held in the queue's hold state and released.

Streaming: the body reaches the filter (its chunk log, rmx_testmilter -l)
before the client sent the end of data; a 3 MB message streamed to two
chained filters and into its segment, their header, envelope and body
changes byte-exact at the next hop (the second filter reads the body back
from the segment); header changes too large for the room before a streamed
body: 451 4.3.0; a filter killed mid-body: 451 4.7.1, no segment left;
the gateway killed mid-body: nothing after the restart; a BDAT message
reset while it streams. --milter-protocol 2 as a fake filter sees it; the
filters changed by a reload for new sessions only.

Every wait is bounded. Exit 77 (skipped) without rmx_testmilter or aiosmtpd."""
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

from rmx import RINGMX, Checks, Gateway, QUEUED, free_port
from nexthop import HAVE_AIOSMTPD, NextHop
from it_relay import wait_until as relay_wait_until

TESTMILTER = os.environ.get("RMX_TESTMILTER") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "tests", "rmx_testmilter")
RSPAMD = shutil.which("rspamd")
TEMPFAIL = "451 4.7.1 Service unavailable - try again later"
WAIT = 20


def wait_until(fn, timeout=WAIT, step=0.05):
    return relay_wait_until(fn, timeout, step)


class Filter:
    """rmx_testmilter on a unix socket (or a port with inet=True)."""

    def __init__(self, *args, inet=False, chunk_log=False):
        self.tmp = tempfile.TemporaryDirectory(prefix="rmx-milter-")
        self.chunk_log = os.path.join(self.tmp.name, "chunks")
        if chunk_log:
            args = ("-l", self.chunk_log) + tuple(args)
        if inet:
            port = free_port()
            sock, self.spec = f"inet:{port}@127.0.0.1", f"inet:127.0.0.1:{port}"
        else:
            path = os.path.join(self.tmp.name, "f.sock")
            sock, self.spec = f"unix:{path}", f"unix:{path}"
        self.log = open(os.path.join(self.tmp.name, "log"), "wb")
        self.proc = subprocess.Popen([TESTMILTER, "-p", sock] + list(args),
                                     stdout=subprocess.PIPE, stderr=self.log)
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            self.stop()
            raise RuntimeError("rmx_testmilter did not start: %r" % line)

    def chunks(self):
        """[(octets, octets so far, time)] of the body chunks it was given,
        and the end of message's total (None before)."""
        if not os.path.exists(self.chunk_log):
            return [], None
        out, eom = [], None
        with open(self.chunk_log) as f:
            for line in f:
                w = line.split()
                if w[0] == "body":
                    out.append((int(w[1]), int(w[2]), float(w[3])))
                elif w[0] == "eom":
                    eom = int(w[1])
        return out, eom

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self):
        self.kill()
        self.proc.stdout.close()
        self.log.close()
        self.tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def smtp(gw, helo="client.test"):
    c = gw.connect()
    code, _ = c.reply()
    assert code == 220
    code, _ = c.cmd("EHLO " + helo)
    assert code == 250
    return c


def send(c, mail_from, rcpts, content):
    """One transaction on an open Conn; returns [replies] of MAIL, each RCPT
    and the end of data ((code, text) each; DATA skipped when no RCPT took)."""
    out = [c.cmd(f"MAIL FROM:<{mail_from}>")]
    if out[0][0] != 250:
        return out
    ok = False
    for r in rcpts:
        out.append(c.cmd(f"RCPT TO:<{r}>"))
        ok = ok or out[-1][0] == 250
    if not ok:
        c.cmd("RSET")
        return out
    code, _ = c.cmd("DATA")
    assert code == 354, code
    body = content.replace(b"\r\n.", b"\r\n..")
    c.send(body + b".\r\n")
    out.append(c.reply())
    return out


RECEIVED = re.compile(rb"Received: from [^\r\n]*\r\n(?:\t[^\r\n]*\r\n)*")


def split_received(content):
    """(what came before our Received: header, the header, what follows)."""
    m = RECEIVED.search(content)
    assert m, content[:300]
    return content[:m.start()], m.group(0), content[m.end():]


def msg(tag, xtest, body=b"body line\r\n", extra=b""):
    return (b"Subject: " + tag.encode() + b"\r\nX-Test: " + xtest.encode() + b"\r\n" + extra +
            b"\r\n" + body)


def hop_msg(hop, tag, timeout=WAIT):
    """The next hop's message whose Subject (or changed subject) names <tag>."""
    def find():
        for m in hop.messages():
            if (b"Subject: " + tag.encode() + b"\r\n") in m.content or \
               (b"X-Tag: " + tag.encode() + b"\r\n") in m.content:
                return m
        return None
    m = wait_until(find, timeout)
    assert m, f"{tag} never arrived: {hop.messages()}"
    return m


# ---------------------------------------------------------------- tests
def test_modifications_at_the_next_hop_byte_exact():
    with NextHop() as hop, Filter(inet=True) as f, \
            Gateway("--milter", f.spec, "--relay-to", hop.spec) as gw:
        c = smtp(gw)
        cases = {
            "accept": (msg("accept", "accept"), None),
            "headers": (msg("headers", "addheader,insheader,chgheader,delheader",
                            extra=b"X-Tag: headers\r\nX-Delete-Me: gone\r\n"
                                  b"X-Keep: folded\r\n\tsecond line\r\n"), None),
            "replbody": (msg("replbody", "replbody", body=b"old body\r\n.dot line\r\n"), None),
        }
        for tag, (content, _) in cases.items():
            r = send(c, "a@example.org", ["b@example.com"], content)
            assert [x[0] for x in r] == [250, 250, 250], r
            assert QUEUED.match(r[-1][1]), r
        # accept: exactly what was sent, after our Received: header.
        before, rcvd, after = split_received(hop_msg(hop, "accept").content)
        assert before == b"" and after == cases["accept"][0], (before, after)
        # headers: one inserted at the top (before Received:), Subject
        # changed in place, X-Delete-Me gone, one added at the end.
        m = hop_msg(hop, "headers")
        before, rcvd, after = split_received(m.content)
        assert before == b"X-Inserted: at the top\r\n", before
        want = (b"Subject: changed subject\r\n"
                b"X-Test: addheader,insheader,chgheader,delheader\r\n"
                b"X-Tag: headers\r\nX-Keep: folded\r\n\tsecond line\r\n"
                b"X-Added: added by the filter\r\n\r\nbody line\r\n")
        assert after == want, after
        # the body replaced; dot-stuffing undone and done again on the way
        m = hop_msg(hop, "replbody")
        _, _, after = split_received(m.content)
        assert after == (b"Subject: replbody\r\nX-Test: replbody\r\n\r\n"
                         b"replaced body\r\nsecond line\r\n"), after
        c.cmd("QUIT")


def test_envelope_changes():
    with NextHop() as hop, Filter() as f, \
            Gateway("--milter", f.spec, "--relay-to", hop.spec) as gw:
        c = smtp(gw)
        r = send(c, "a@example.org", ["b@example.com", "del@example.com"],
                 msg("env", "chgfrom,addrcpt,delrcpt"))
        assert [x[0] for x in r] == [250, 250, 250, 250], r
        m = hop_msg(hop, "env")
        assert m.mail_from == "new-sender@example.org", m.mail_from
        assert sorted(m.rcpt_tos) == ["added@example.com", "b@example.com"], m.rcpt_tos
        c.cmd("QUIT")


def test_replies():
    with Filter() as f, Gateway("--milter", f.spec) as gw:
        c = smtp(gw)
        # per recipient: reject, tempfail, and a good one in the same transaction
        r = send(c, "a@example.org",
                 ["reject-rcpt@example.com", "tempfail-rcpt@example.com", "ok@example.com"],
                 msg("rcpts", "accept"))
        assert r[1] == (550, "550 5.7.1 Command rejected"), r
        assert r[2] == (451, TEMPFAIL), r
        assert r[3][0] == 250 and r[4][0] == 250, r
        assert gw.count() == 1
        listing = gw.queue()
        assert "ok@example.com" in listing and "reject-rcpt" not in listing, listing
        # at end of message: the filter's own two-line reply
        r = send(c, "a@example.org", ["b@example.com"], msg("multi", "reject-multi"))
        assert r[-1] == (550, "550-5.7.1 rejected by the test filter\n"
                              "550 5.7.1 second line of the reply"), r
        r = send(c, "a@example.org", ["b@example.com"], msg("temp", "tempfail"))
        assert r[-1] == (451, TEMPFAIL), r
        r = send(c, "a@example.org", ["b@example.com"], msg("plain", "reject"))
        assert r[-1] == (550, "550 5.7.1 Command rejected"), r
        # discard: 250 to the client, nothing spooled, logged
        r = send(c, "a@example.org", ["b@example.com"], msg("disc", "discard"))
        assert r[-1][0] == 250 and "discarded" in r[-1][1], r
        assert gw.count() == 1, gw.queue()
        assert "message discarded by a filter" in gw.log()
        # a transaction dropped by RSET (the filter gets ABORT), then one more
        assert c.cmd("MAIL FROM:<a@example.org>")[0] == 250
        assert c.cmd("RCPT TO:<b@example.com>")[0] == 250
        assert c.cmd("RSET")[0] == 250
        r = send(c, "a@example.org", ["b@example.com"], msg("after", "accept"))
        assert r[-1][0] == 250, r
        assert gw.count() == 2
        assert c.cmd("QUIT")[0] == 221


def test_macros():
    with NextHop() as hop, Filter() as f, \
            Gateway("--milter", f.spec, "--relay-to", hop.spec) as gw:
        c = smtp(gw, helo="helo.client.test")
        r = send(c, "a@example.org", ["b@example.com"],
                 msg("macros", "macros", extra=b"X-Tag: macros\r\n"))
        qid = QUEUED.match(r[-1][1]).group(1)
        m = hop_msg(hop, "macros")
        got = re.search(rb"X-Macros: ([^\r\n]*(?:\r\n\t[^\r\n]*)*)", m.content)
        assert got, m.content
        text = got.group(1).decode()
        for want in ("j=mx.test", "{daemon_name}=ringmx", "{client_addr}=127.0.0.1",
                     "{client_name}=unknown", "{if_addr}=127.0.0.1", "host=unknown",
                     "helo=helo.client.test", "from=<a@example.org>",
                     "{mail_addr}=a@example.org", "{rcpt_addr}=b@example.com",
                     "i=" + qid, "_=unknown [127.0.0.1]"):
            assert want in text, (want, text)
        assert re.search(r"\{client_port\}=\d+", text), text
        c.cmd("QUIT")


def test_body_chunks_and_skip():
    body = (b"x" * 998 + b"\r\n") * 150  # 150,000 octets: three chunks of 64 KB at most
    with NextHop() as hop, Filter("-c", "-n", "one") as f, \
            Gateway("--milter", f.spec, "--relay-to", hop.spec) as gw:
        c = smtp(gw)
        for tag, act in (("chunks", "none"), ("skip", "skip")):
            content = (b"Subject: " + tag.encode() + b"\r\nX-Test-one: " + act.encode() +
                       b"\r\n\r\n" + body)
            r = send(c, "a@example.org", ["b@example.com"], content)
            assert r[-1][0] == 250, (r, gw.log()[-1500:])
        m = hop_msg(hop, "chunks")
        assert b"X-Chain-one: saw=X-Test-one len=150000 chunks=3\r\n" in m.content, \
            m.content[:600]
        assert m.content.endswith(body)
        m = hop_msg(hop, "skip")
        assert b"X-Chain-one: saw=X-Test-one len=65535 chunks=1\r\n" in m.content, \
            m.content[:600]
        assert m.content.endswith(body)
        c.cmd("QUIT")


def test_two_filters_in_a_chain():
    with NextHop() as hop, Filter("-c", "-n", "one") as f1, \
            Filter("-c", "-n", "two", inet=True) as f2, \
            Gateway("--milter", f1.spec, "--milter", f2.spec, "--relay-to", hop.spec) as gw:
        c = smtp(gw)
        content = (b"Subject: chain\r\nX-Test-one: addheader,replbody\r\n"
                   b"X-Test-two: chgheader\r\n\r\nold\r\n")
        r = send(c, "a@example.org", ["b@example.com"], content)
        assert r[-1][0] == 250, r
        m = hop_msg(hop, "changed subject")
        _, _, after = split_received(m.content)
        # one's changes (its X-Chain header, X-Added, the new body) are what
        # two saw; two changed the Subject one left.
        assert after == (b"Subject: changed subject\r\nX-Test-one: addheader,replbody\r\n"
                         b"X-Test-two: chgheader\r\n"
                         b"X-Chain-one: saw=X-Test-one,X-Test-two len=5 chunks=1\r\n"
                         b"X-Added: added by the filter\r\n"
                         b"X-Chain-two: saw=X-Test-one,X-Test-two,X-Chain-one,X-Added "
                         b"len=28 chunks=1\r\n"
                         b"\r\nreplaced body\r\nsecond line\r\n"), after
        c.cmd("QUIT")


def test_progress_and_timeout():
    with Filter() as f, Gateway("--milter", f.spec, "--milter-timeout", "2") as gw:
        c = smtp(gw)
        t0 = time.time()
        r = send(c, "a@example.org", ["b@example.com"], msg("progress", "progress"))
        assert r[-1][0] == 250 and time.time() - t0 >= 2.5, (r, time.time() - t0)
        t0 = time.time()
        r = send(c, "a@example.org", ["b@example.com"], msg("sleep", "sleep,addheader"))
        took = time.time() - t0
        assert r[-1] == (451, TEMPFAIL) and 1.5 < took < 4.5, (r, took)
        assert gw.count() == 1
        assert re.search(r"milter: unix:\S+: client=\[127\.0\.0\.1\] no reply in 2s: "
                         r"default action tempfail", gw.log()), gw.log()[-2000:]
        # the filter is out for this session: the default action at once
        r = send(c, "a@example.org", ["b@example.com"], msg("x", "accept"))
        assert r[0] == (451, TEMPFAIL), r
        c.close()
        # a new session connects again
        c = smtp(gw)
        r = send(c, "a@example.org", ["b@example.com"], msg("again", "accept"))
        assert r[-1][0] == 250, r
        assert gw.count() == 2
        c.cmd("QUIT")


def test_timeout_default_accept():
    with NextHop() as hop, Filter() as f, \
            Gateway("--milter", f.spec, "--milter-timeout", "1", "--milter-default-action",
                    "accept", "--relay-to", hop.spec) as gw:
        c = smtp(gw)
        content = msg("slowacc", "sleep,addheader")
        r = send(c, "a@example.org", ["b@example.com"], content)
        assert r[-1][0] == 250, r
        m = hop_msg(hop, "slowacc")
        _, _, after = split_received(m.content)
        assert after == content, after  # never half-modified
        c.cmd("QUIT")


def test_filter_down():
    tmp = tempfile.mkdtemp(prefix="rmx-milter-")
    try:
        spec = "unix:" + os.path.join(tmp, "nobody.sock")
        with Gateway("--milter", spec) as gw:
            c = smtp(gw)
            assert c.cmd("MAIL FROM:<a@example.org>") == (451, TEMPFAIL)
            c.cmd("QUIT")
            assert gw.count() == 0
            assert re.search(r"milter: unix:\S+nobody.sock: client=\[127.0.0.1\] connect: "
                             r"No such file or directory: default action tempfail", gw.log())
        with Gateway("--milter", "inet:127.0.0.1:%d" % free_port(),
                     "--milter-default-action", "reject") as gw:
            c = smtp(gw)
            assert c.cmd("MAIL FROM:<a@example.org>") == (550, "550 5.7.1 Command rejected")
            c.cmd("QUIT")
            assert gw.count() == 0
    finally:
        shutil.rmtree(tmp)


def test_filter_killed():
    with Filter() as f, Gateway("--milter", f.spec) as gw:
        c = smtp(gw)
        r = send(c, "a@example.org", ["b@example.com"], msg("first", "accept"))
        assert r[-1][0] == 250, r
        f.kill()
        # the session's connection to it is gone: the next command
        r = send(c, "a@example.org", ["b@example.com"], msg("second", "accept"))
        assert r[0] == (451, TEMPFAIL), r
        c.close()
        c = smtp(gw)
        assert c.cmd("MAIL FROM:<a@example.org>") == (451, TEMPFAIL)
        c.cmd("QUIT")
        assert gw.count() == 1


def test_quarantine():
    with NextHop() as hop, Filter("-q") as f:
        gw = Gateway("--milter", f.spec, "--relay-to", hop.spec, "--retry-min", "1",
                     "--retry-max", "2")
        with gw:
            c = smtp(gw)
            r = send(c, "a@example.org", ["b@example.com"], msg("held", "quarantine"))
            assert r[-1][0] == 250, r
            r = send(c, "a@example.org", ["b@example.com"], msg("free", "accept"))
            assert r[-1][0] == 250, r
            c.cmd("QUIT")
            hop_msg(hop, "free")
            lines = [l for l in gw.queue().splitlines() if l.strip()]
            assert len(lines) == 1 and lines[0].endswith(' held reason="held by the test filter"'), \
                lines
            assert ": quarantine: held: held by the test filter" in gw.log()
            # held across a restart too, never delivered
            gw.stop()
            gw.start()
            assert wait_until(lambda: "quarantined (held by the test filter)" in gw.log(), 10), \
                gw.log()[-1500:]
            time.sleep(2)
            assert [m for m in hop.messages() if b"Subject: held" in m.content] == []
            assert gw.count() == 1
            # a held message like any `ringmx queue hold`: released, it goes
            qid = lines[0].split()[0]
            assert qid in gw.queue("release", qid), gw.log()[-1500:]
            hop_msg(hop, "held")
            assert wait_until(lambda: gw.count() == 0, 10)
            assert wait_until(lambda: f"id={qid} released by the operator" in gw.log(), 5)


# ------------------------------------------- streaming, spilled messages
def body_lines(n_lines, tag):
    """A body of <n_lines> lines of 100 octets, each numbered (dot-first
    lines among them, for the stuffing)."""
    return b"".join((b"." if i % 97 == 0 else b"") +
                    (b"%s %08d " % (tag.encode(), i)).ljust(98, b"z") + b"\r\n"
                    for i in range(n_lines))


def spilled(gw):
    """Messages the gateway streamed to a segment of their own (its stop line)."""
    return sum(int(n) for n in re.findall(r"(\d+) messages streamed to a segment of their own",
                                          gw.log()))


def begin_data(c, rcpts=("b@example.com",)):
    assert c.cmd("MAIL FROM:<a@example.org>")[0] == 250
    for r in rcpts:
        assert c.cmd(f"RCPT TO:<{r}>")[0] == 250
    assert c.cmd("DATA")[0] == 354


def stuffed(b):
    return b.replace(b"\r\n.", b"\r\n..") if not b.startswith(b".") else \
        b"." + b.replace(b"\r\n.", b"\r\n..")


def test_body_streams_before_the_end_of_data():
    """The first half of the body reaches the filter, in chunks of 64 KB at
    most, while the client still holds back the rest and the end of data."""
    head = b"Subject: stream\r\nX-Test: addheader\r\n\r\n"
    first, rest = body_lines(2000, "a"), body_lines(2000, "b")  # 200,000 octets each
    with NextHop() as hop, Filter(chunk_log=True) as f, \
            Gateway("--milter", f.spec, "--relay-to", hop.spec, "--data-buffer", "64k") as gw:
        c = smtp(gw)
        begin_data(c)
        c.send(stuffed(head + first))
        seen = wait_until(lambda: f.chunks()[0], 10)
        assert seen, ("no body chunk reached the filter before the end of data", gw.log()[-1500:])
        t_seen = time.time()
        assert f.chunks()[1] is None  # no end of message yet
        c.send(stuffed(rest) + b".\r\n")
        r = c.reply()
        assert r[0] == 250, r
        chunks, eom = f.chunks()
        assert eom == len(first + rest), (eom, len(first + rest))
        assert all(0 < k <= 65535 for k, _, _ in chunks), chunks
        assert sum(k for k, _, _ in chunks) == eom
        assert chunks[0][2] <= t_seen
        m = hop_msg(hop, "stream")
        _, _, after = split_received(m.content)
        assert after == head[:-2] + b"X-Added: added by the filter\r\n\r\n" + first + rest
        c.cmd("QUIT")
        gw.stop()
        assert spilled(gw) == 1, gw.log()[-2000:]


def test_spilled_message_modified_byte_exact():
    """A 3 MB message streams into its segment while the filters see it; their
    header changes (added, inserted, changed, deleted), the envelope changes
    and, in another message, the replaced body reach the next hop byte for
    byte, with two filters in a chain (the second one reads the body back
    from the segment)."""
    big = body_lines(30000, "big")  # 3,000,000 octets
    with NextHop() as hop, Filter("-c", "-n", "one") as f1, \
            Filter("-c", "-n", "two", inet=True) as f2, \
            Gateway("--milter", f1.spec, "--milter", f2.spec, "--relay-to", hop.spec,
                    "--data-buffer", "64k") as gw:
        c = smtp(gw)
        content = (b"Subject: bigmod\r\nX-Test-one: addheader,insheader,chgheader,delheader,"
                   b"chgfrom,addrcpt\r\nX-Delete-Me: gone\r\nX-Keep: folded\r\n\tline\r\n"
                   b"\r\n" + big)
        r = send(c, "a@example.org", ["b@example.com"], content)
        assert r[-1][0] == 250, (r, gw.log()[-2000:])
        content2 = (b"Subject: bigrepl\r\nX-Test-two: replbody\r\n\r\n" + big)
        r = send(c, "a@example.org", ["b@example.com"], content2)
        assert r[-1][0] == 250, (r, gw.log()[-2000:])
        c.cmd("QUIT")
        chunks = -(-len(big) // 65535)
        m = hop_msg(hop, "changed subject")
        before, _, after = split_received(m.content)
        assert before == b"X-Inserted: at the top\r\n", before[:200]
        want = (b"Subject: changed subject\r\nX-Test-one: addheader,insheader,chgheader,"
                b"delheader,chgfrom,addrcpt\r\nX-Keep: folded\r\n\tline\r\n"
                b"X-Chain-one: saw=X-Test-one,X-Delete-Me,X-Keep len=%d chunks=%d\r\n"
                b"X-Added: added by the filter\r\n"
                b"X-Chain-two: saw=X-Inserted,X-Test-one,X-Keep,X-Chain-one,X-Added len=%d "
                b"chunks=%d\r\n\r\n" % (len(big), chunks, len(big), chunks)) + big
        assert after == want, (after[:800], want[:800])
        assert m.mail_from == "new-sender@example.org", m.mail_from
        assert sorted(m.rcpt_tos) == ["added@example.com", "b@example.com"], m.rcpt_tos
        m = hop_msg(hop, "bigrepl")
        _, _, after = split_received(m.content)
        assert after == (b"Subject: bigrepl\r\nX-Test-two: replbody\r\n"
                         b"X-Chain-one: saw=X-Test-two len=%d chunks=%d\r\n"
                         b"X-Chain-two: saw=X-Test-two,X-Chain-one len=%d chunks=%d\r\n"
                         b"\r\nreplaced body\r\nsecond line\r\n"
                         % (len(big), chunks, len(big), chunks)), after[:600]
        gw.stop()
        assert spilled(gw) == 1, gw.log()[-2000:]  # the replaced one went whole


def test_filter_killed_mid_body():
    """The filter dies while a large message streams (to it and to the
    disk): 451 4.7.1, nothing spooled, no segment left that a restart could
    deliver."""
    head = b"Subject: killed\r\nX-Test: addheader\r\n\r\n"
    half = body_lines(5000, "k")
    with NextHop() as hop, Filter(chunk_log=True) as f:
        gw = Gateway("--milter", f.spec, "--relay-to", hop.spec, "--data-buffer", "64k")
        with gw:
            c = smtp(gw)
            begin_data(c)
            c.send(stuffed(head + half))
            assert wait_until(lambda: f.chunks()[0], 10), gw.log()[-1500:]
            f.kill()
            c.send(stuffed(half) + b".\r\n")
            r = c.reply()
            assert r == (451, TEMPFAIL), r
            c.close()
            assert gw.count() == 0
            assert wait_until(lambda: not [n for n in os.listdir(gw.spool)
                                           if n.startswith("seg-")], 5), os.listdir(gw.spool)
            gw.stop()
            gw.start()
            time.sleep(1)
            assert gw.count() == 0
        assert hop.messages() == []


def test_gateway_killed_mid_body():
    """The gateway dies (SIGKILL) while a large message streams to the
    filter and into its segment: after the restart recovery finds nothing
    to deliver (the segment's head was never written) and removes it."""
    head = b"Subject: crash\r\nX-Test: addheader\r\n\r\n"
    with Filter(chunk_log=True) as f:
        gw = Gateway("--milter", f.spec, "--data-buffer", "64k")
        with gw:
            c = smtp(gw)
            begin_data(c)
            c.send(stuffed(head + body_lines(5000, "c")))
            assert wait_until(lambda: f.chunks()[0], 10), gw.log()[-1500:]
            assert wait_until(lambda: any(n.startswith("seg-") for n in os.listdir(gw.spool)),
                              5)
            gw.proc.kill()
            gw.proc.wait(10)
            c.close()
            gw.start()
            assert gw.count() == 0
            assert not [n for n in os.listdir(gw.spool) if n.startswith("seg-")], \
                os.listdir(gw.spool)


def test_bdat_reset_while_streaming():
    """A BDAT message reset (RSET) after its header block went to the filter:
    the filter hears ABORT, the next message goes through."""
    with NextHop() as hop, Filter("-c") as f, \
            Gateway("--milter", f.spec, "--relay-to", hop.spec) as gw:
        c = smtp(gw)
        assert c.cmd("MAIL FROM:<a@example.org>")[0] == 250
        assert c.cmd("RCPT TO:<b@example.com>")[0] == 250
        chunk = b"Subject: dropped\r\nX-Test: reject\r\n\r\n" + body_lines(1500, "d")
        c.send(b"BDAT %d\r\n" % len(chunk) + chunk)
        assert c.reply()[0] == 250
        assert c.cmd("RSET")[0] == 250
        r = send(c, "a@example.org", ["b@example.com"], msg("afterreset", "addheader"))
        assert r[-1][0] == 250, (r, gw.log()[-1500:])
        m = hop_msg(hop, "afterreset")
        assert b"X-Added: added by the filter\r\n" in m.content
        assert b"chunks=1\r\n" in m.content  # its own body only
        c.cmd("QUIT")
        assert gw.count() == 0 or wait_until(lambda: gw.count() == 0, 10)


# ------------------------------------------------------ fake, broken filters
def pkt(cmd, data=b""):
    return struct.pack(">I", len(data) + 1) + cmd + data


class FakeFilter:
    """A filter written here that misbehaves on purpose: <script>(conn)
    talks to each connection."""

    def __init__(self, script):
        self.script = script
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.spec = "inet:127.0.0.1:%d" % self.srv.getsockname()[1]
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def loop(self):
        while True:
            try:
                s, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self.one, args=(s,), daemon=True).start()

    def one(self, s):
        s.settimeout(10)
        try:
            self.script(s)
        except OSError:
            pass
        finally:
            s.close()

    def close(self):
        self.srv.close()


def read_pkt(s):
    h = b""
    while len(h) < 4:
        d = s.recv(4 - len(h))
        if not d:
            raise OSError("eof")
        h += d
    n = struct.unpack(">I", h)[0]
    b = b""
    while len(b) < n:
        d = s.recv(n - len(b))
        if not d:
            raise OSError("eof")
        b += d
    return b[:1], b[1:]


def optneg(s, actions=0x1ff & ~0x20):
    cmd, _ = read_pkt(s)
    assert cmd == b"O"
    s.sendall(pkt(b"O", struct.pack(">III", 6, actions, 0)))


def answer_until(s, stop_cmd):
    """Continues every command that wants an answer up to <stop_cmd>."""
    while True:
        cmd, _ = read_pkt(s)
        if cmd in (b"D", b"A"):
            continue  # macros, abort: no answer
        if cmd == stop_cmd:
            return
        s.sendall(pkt(b"c"))


def test_protocol_version_2():
    """--milter-protocol 2: version 2 offered with its steps and actions only
    (Postfix's masks), no DATA step sent, the filter's header added."""
    seen = []

    def v2(s):
        cmd, data = read_pkt(s)
        assert cmd == b"O"
        seen.append(struct.unpack(">III", data[:12]))
        s.sendall(pkt(b"O", struct.pack(">III", 2, 0x01, 0)))
        while True:
            cmd, _ = read_pkt(s)
            seen.append(cmd)
            if cmd == b"Q":
                return
            if cmd in (b"D", b"A"):
                continue
            if cmd == b"E":
                s.sendall(pkt(b"h", b"X-V2\0yes\0"))
            s.sendall(pkt(b"c"))

    f = FakeFilter(v2)
    try:
        with NextHop() as hop, Gateway("--milter", f.spec, "--milter-protocol", "2",
                                       "--relay-to", hop.spec) as gw:
            c = smtp(gw)
            r = send(c, "a@example.org", ["b@example.com"], msg("v2", "none"))
            assert r[-1][0] == 250, (r, gw.log()[-1500:])
            c.cmd("QUIT")
            m = hop_msg(hop, "v2")
            assert m.content.endswith(b"X-V2: yes\r\n\r\nbody line\r\n"), m.content
            assert wait_until(lambda: b"Q" in seen, 5), seen
            assert seen[0] == (2, 0x3f, 0x7f), seen[0]
            assert b"T" not in seen and b"M" in seen and b"E" in seen, seen
    finally:
        f.close()


def test_spilled_header_changes_past_the_room():
    """A filter adding more than the room before a streamed body (32 KB of
    header): 451 4.3.0, logged, nothing spooled, no segment left; a small
    message with the same change goes through (it is written whole), its
    record sound (the refused one's head left nothing behind)."""
    def big_header(s):
        optneg(s, actions=0x01)
        while True:
            cmd, _ = read_pkt(s)
            if cmd == b"Q":
                return
            if cmd in (b"D", b"A"):
                continue
            if cmd == b"E":
                s.sendall(pkt(b"h", b"X-Big\0" + b"v" * 40000 + b"\0"))
            s.sendall(pkt(b"c"))

    f = FakeFilter(big_header)
    try:
        with Gateway("--milter", f.spec, "--data-buffer", "64k") as gw:
            c = smtp(gw)
            r = send(c, "a@example.org", ["b@example.com"],
                     msg("room", "none", body=body_lines(3000, "r")))
            assert r[-1][0] == 451 and "4.3.0" in r[-1][1], (r, gw.log()[-1500:])
            assert wait_until(lambda: "do not fit the room before the body" in gw.log(), 5)
            r = send(c, "a@example.org", ["b@example.com"], msg("small", "none"))
            assert r[-1][0] == 250, r
            c.cmd("QUIT")
            assert gw.count() == 1, (gw.queue(), os.listdir(gw.spool))
            assert wait_until(lambda: len([n for n in os.listdir(gw.spool)
                                           if n.startswith("seg-")]) == 1, 5), \
                os.listdir(gw.spool)
    finally:
        f.close()


def test_reload_changes_the_filters_of_new_sessions():
    """--milter and its options reload live: sessions that start after a
    reload use the new filters, one in progress keeps its own; a reload
    that cannot resolve a filter changes nothing; none after a reload: no
    filter."""
    def reload(gw, ok=True):
        r = subprocess.run([RINGMX, "reload", "--spool",
                            gw.spool], capture_output=True, text=True, timeout=30)
        assert r.returncode == (0 if ok else 1), r.stdout + r.stderr
        return r.stdout

    def write(path, text):
        with open(path + ".new", "w") as f:
            f.write(text)
        os.rename(path + ".new", path)

    def chains(tag):
        return re.findall(rb"X-Chain-(\w+):", hop_msg(hop, tag).content)

    with NextHop() as hop, Filter("-c", "-n", "a") as fa, Filter("-c", "-n", "b") as fb:
        tmp = tempfile.mkdtemp(prefix="rmx-milter-conf-")
        path = os.path.join(tmp, "ringmx.conf")
        write(path, f"milter = {fa.spec}\n")
        try:
            with Gateway("--config", path, "--relay-to", hop.spec) as gw:
                old = smtp(gw)
                assert send(old, "a@example.org", ["b@example.com"], msg("r1", "-"))[-1][0] == 250
                assert chains("r1") == [b"a"]
                write(path, f"milter = {fb.spec}\nmilter-timeout = 5\n")
                out = reload(gw)
                assert "changed: milter, milter-timeout" in out, out
                assert send(old, "a@example.org", ["b@example.com"], msg("r2", "-"))[-1][0] == 250
                assert chains("r2") == [b"a"]  # the session in progress keeps its filter
                new = smtp(gw)
                assert send(new, "a@example.org", ["b@example.com"], msg("r3", "-"))[-1][0] == 250
                assert chains("r3") == [b"b"]
                write(path, "milter = inet:no-such-host.invalid:1\n")
                assert "failed, nothing changed" in reload(gw, ok=False)
                new2 = smtp(gw)
                assert send(new2, "a@example.org", ["b@example.com"], msg("r4", "-"))[-1][0] == 250
                assert chains("r4") == [b"b"]
                write(path, "")
                assert "changed: milter, milter-timeout" in reload(gw)
                new3 = smtp(gw)
                assert send(new3, "a@example.org", ["b@example.com"], msg("r5", "-"))[-1][0] == 250
                assert chains("r5") == []
                for c in (old, new, new2, new3):
                    c.cmd("QUIT")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def test_broken_filters():
    def too_long(s):
        optneg(s)
        read_pkt(s)  # macros
        read_pkt(s)  # connect
        s.sendall(struct.pack(">I", 0x7fffffff) + b"c")
        time.sleep(1)

    def mid_packet(s):
        optneg(s)
        answer_until(s, b"M")
        s.sendall(b"\x00\x00")  # half a length, then gone

    def unknown(s):
        optneg(s)
        answer_until(s, b"M")
        s.sendall(pkt(b"Z"))
        time.sleep(1)

    def dies_at_eom(s):
        optneg(s)
        answer_until(s, b"E")
        s.sendall(pkt(b"h", b"X-Half\x00modified\x00"))

    cases = [
        (too_long, "MAIL", "packet length 2147483647 out of bounds"),
        (mid_packet, "MAIL", "the filter closed the connection"),
        (unknown, "MAIL", "unknown packet 0x5a"),
        (dies_at_eom, "DATA", "the filter closed the connection"),
    ]
    for script, stage, logline in cases:
        ff = FakeFilter(script)
        try:
            with Gateway("--milter", ff.spec, "--milter-timeout", "5") as gw:
                c = smtp(gw)
                r = send(c, "a@example.org", ["b@example.com"], msg("broken", "accept"))
                got = r[0] if stage == "MAIL" else r[-1]
                assert got == (451, TEMPFAIL), (script.__name__, r)
                assert gw.count() == 0, script.__name__
                assert logline in gw.log(), (script.__name__, gw.log()[-1500:])
                c.close()
        finally:
            ff.close()


# ------------------------------------------------------------------ rspamd
def rspamd_start(tmp):
    """rspamd in the foreground on loopback: a proxy worker in milter mode
    and a normal worker, no Redis. Returns (proc, milter port)."""
    mport, nport = free_port(), free_port()
    conf = os.path.join(tmp, "rspamd.conf")
    local = os.path.join(tmp, "local.d")
    os.makedirs(local)
    # The headers rspamd adds through the milter: X-Spamd-Result,
    # X-Rspamd-Server, X-Rspamd-Queue-Id and its Action.
    with open(os.path.join(local, "milter_headers.conf"), "w") as fp:
        fp.write("skip_local = false;\nskip_authenticated = false;\n"
                 "extended_spam_headers = true;\nuse = [\"x-spamd-result\", "
                 "\"x-rspamd-queue-id\", \"x-rspamd-action\"];\n")
    with open(conf, "w") as fp:
        fp.write(f""".include "$CONFDIR/common.conf"
options {{
  pidfile = "{tmp}/rspamd.pid";
  dns {{ nameserver = ["127.0.0.1:1"]; timeout = 0.1s; retransmits = 1; }}
  hs_cache_dir = "{tmp}";
}}
logging {{ type = "file"; filename = "{tmp}/rspamd.log"; level = "info"; }}
worker "normal" {{
  bind_socket = "127.0.0.1:{nport}";
  count = 1;
  .include "$CONFDIR/worker-normal.inc"
}}
worker "rspamd_proxy" {{
  bind_socket = "127.0.0.1:{mport}";
  milter = yes;
  timeout = 120s;
  upstream "local" {{ default = yes; hosts = "127.0.0.1:{nport}"; }}
  count = 1;
}}
""")
    env = dict(os.environ)
    proc = subprocess.Popen([RSPAMD, "-f", "-u", "root", "-g", "root", "-c", conf,
                             "--insecure", "--var", f"LOCAL_CONFDIR={tmp}",
                             "--var", f"DBDIR={tmp}", "--var", f"RUNDIR={tmp}",
                             "--var", f"LOGDIR={tmp}"],
                            stdout=open(os.path.join(tmp, "out"), "wb"),
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def up():
        if proc.poll() is not None:
            raise RuntimeError("rspamd exited: " + open(os.path.join(tmp, "out")).read()[-2000:])
        try:
            socket.create_connection(("127.0.0.1", mport), 0.2).close()
            socket.create_connection(("127.0.0.1", nport), 0.2).close()
            return True
        except OSError:
            return False
    if not wait_until(up, 120, 0.2):  # rspamd compiles its Lua rules first: slow on a busy machine
        os.killpg(proc.pid, signal.SIGKILL)
        raise RuntimeError("rspamd did not start: " + open(os.path.join(tmp, "out")).read()[-2000:])
    return proc, mport


def qid_of(replies):
    return QUEUED.match(replies[-1][1]).group(1)


GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def test_rspamd():
    if not RSPAMD:
        print("skip test_rspamd: no rspamd installed")
        return
    tmp = tempfile.mkdtemp(prefix="rmx-rspamd-")
    proc = None
    try:
        proc, mport = rspamd_start(tmp)
        with NextHop() as hop, Gateway("--milter", f"inet:127.0.0.1:{mport}",
                                       "--milter-timeout", "60", "--relay-to", hop.spec,
                                       "--log-level", "debug") as gw:
            c = smtp(gw)
            clean = (b"From: Alice <alice@example.org>\r\nTo: bob@example.com\r\n"
                     b"Subject: rspamd clean\r\nMessage-ID: <clean-1@example.org>\r\n"
                     b"Date: Mon, 07 Dec 2026 10:00:00 +0000\r\n\r\n"
                     b"Hello Bob, just a plain note.\r\n")
            r = send(c, "alice@example.org", ["bob@example.com"], clean)
            assert r[-1][0] == 250, (r, gw.log()[-1500:])
            m = hop_msg(hop, "rspamd clean", 30)
            _, _, after = split_received(m.content)
            # rspamd's headers after the message's own, the rest as it was
            hdrs, body = after.split(b"\r\n\r\n", 1)
            assert body == b"Hello Bob, just a plain note.\r\n", body
            assert hdrs.startswith(clean.split(b"\r\n\r\n")[0] + b"\r\n"), \
                (hdrs, [l for l in gw.log().splitlines() if "milter" in l])
            added = hdrs[len(clean.split(b"\r\n\r\n")[0]) + 2:] + b"\r\n"
            # folded as rspamd folds (LF + tab on the wire), CRLF here
            assert b"\n" not in added.replace(b"\r\n", b""), added
            assert re.search(rb"^X-Spamd-Result: default: False \[-?\d+\.\d+ / \d+\.\d+\]",
                             added, re.M), added
            # (in the order rspamd sends them, which varies)
            assert b"\nX-Rspamd-Queue-Id: " + qid_of(r).encode() + b"\r\n" in b"\n" + added, added
            assert b"\nX-Rspamd-Action: no action\r\n" in b"\n" + added, added
            before = gw.count()
            spam = (b"From: Spammer <s@example.org>\r\nTo: bob@example.com\r\n"
                    b"Subject: rspamd gtube\r\nMessage-ID: <gtube-1@example.org>\r\n\r\n" +
                    GTUBE + b"\r\n")
            r = send(c, "s@example.org", ["bob@example.com"], spam)
            print("gtube:", r[-1], flush=True)
            assert r[-1][0] // 100 == 5 and "5.7.1" in r[-1][1], r
            assert gw.count() == before
            c.cmd("QUIT")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            proc = None
            c = smtp(gw)
            assert c.cmd("MAIL FROM:<a@example.org>") == (451, TEMPFAIL)
            c.cmd("QUIT")
    finally:
        if proc and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        if os.environ.get("RMX_KEEP"):
            print("kept", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if not os.path.exists(TESTMILTER) or not HAVE_AIOSMTPD:
        print("skipped: no rmx_testmilter or no aiosmtpd")
        sys.exit(77)
    checks = Checks()
    only = sys.argv[1:]
    for name, fn in list(globals().items()):
        if name.startswith("test_") and (not only or name in only):
            checks.run(fn)
    checks.finish()
