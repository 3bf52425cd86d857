"""Integration: the relay streams each body from the spool in chunks of 64 KB
(io/relay.c, body_feed()) instead of holding the record whole, and checks
the record's crc while it streams.

Checked: bodies of every size around the chunk boundary (an empty message,
the smallest one, a spooled body of 64 KB - 1, 64 KB, 64 KB + 1, two
chunks, 1 MB + 3 bytes, dot-stuffing across a boundary) arrive byte for
byte; a message whose recipients take two routes arrives whole at both; a
transaction refused after its data (451) is sent again whole; a body byte
flipped on the disk before delivery is never completed at the next hop (no
final dot), the gateway logs the damage with the queue id and keeps the
message, and the other messages still go.

Every wait is bounded. Exit 77 (skipped) only if aiosmtpd cannot be imported."""
import os
import random
import smtplib
import sys

from rmx import QUEUED, Checks, Gateway, read_spool, seg_records
from nexthop import HAVE_AIOSMTPD, NextHop
from it_relay import FAST, send_on, states, strip_received, wait_count, wait_until

CHUNK = 64 * 1024  # RELAY_CHUNK in io/relay.c


def lines_of(n, rng):
    """Exactly <n> bytes (n >= 2) of CRLF lines, with dot-stuffing bait."""
    out, left = [], n
    bait = [b".", b"..", b".x", b". leading dot"]
    while left:
        if left <= 84:  # the last line: what is left
            k = left - 2
        else:  # never leaves 1 byte (no line is that short)
            k = rng.randint(0, min(78, left - 84))
        if k > 0 and rng.random() < 0.15:
            line = rng.choice(bait)[:k].ljust(k, b"d")
        else:
            line = bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz .,-:") for _ in range(k))
        out.append(line + b"\r\n")
        left -= k + 2
    return b"".join(out)


def content_of(body_len, r_len, rng, tag, dot_at=None):
    """A message content such that the spooled body (the Received: header of
    <r_len> bytes, then the content) is exactly <body_len> bytes; with
    <dot_at>, a line starting with ".." begins at that body offset."""
    head = f"X-Token: {tag}\r\n\r\n".encode()
    n = body_len - r_len
    if dot_at is None:
        return head + lines_of(n - len(head), rng)
    a = dot_at - r_len - len(head)
    mid = b"..dot at a chunk boundary\r\n"
    assert a >= 2 and n - len(head) - a - len(mid) >= 2, (body_len, dot_at)
    return head + lines_of(a, rng) + mid + lines_of(n - len(head) - a - len(mid), rng)


def spool_records(spool):
    """[(path, record offset, env_len, body_len, qid)] of every record."""
    out = []
    for name in sorted(os.listdir(spool)):
        if not (name.startswith("seg-") and name.endswith(".rmx")):
            continue
        path = os.path.join(spool, name)
        with open(path, "rb") as f:
            data = f.read()
        for off, env_len, body_len, qid in seg_records(data):
            out.append((path, off, env_len, body_len, qid))
    return out


def flip_body_byte(spool, qid, at):
    """Flips one bit of body byte <at> of <qid>'s record, in place."""
    for path, off, env_len, body_len, q in spool_records(spool):
        if q == qid:
            assert at < body_len, (at, body_len)
            with open(path, "r+b") as f:
                f.seek(off + 32 + env_len + at)
                b = f.read(1)
                f.seek(off + 32 + env_len + at)
                f.write(bytes([b[0] ^ 0x04]))
                f.flush()
                os.fsync(f.fileno())
            return
    raise AssertionError(f"no record for {qid}")


def received_len(spool, qid, content):
    body = read_spool(spool)[qid]
    assert body.endswith(content), qid
    return len(body) - len(content)


def by_sender(msgs):
    out = {}
    for m in msgs:
        out.setdefault(m.mail_from, []).append(m)
    return out


def send_empty(gw, sender, rcpt):
    """A message with no content at all: smtplib would send a CRLF."""
    c = gw.connect()
    try:
        assert c.reply()[0] == 220
        for line, want in (("EHLO client.test", 250), (f"MAIL FROM:<{sender}>", 250),
                           (f"RCPT TO:<{rcpt}>", 250), ("DATA", 354), (".", 250)):
            code, text = c.cmd(line)
            assert code == want, (line, code, text)
        m = QUEUED.match(text)
        assert m, text
        c.cmd("QUIT")
        return m.group(1)
    finally:
        c.close()


def queue_behind_a_down_hop(gw, hop, plan, rng):
    """Sends each (sender, rcpts, what) of <plan> while <hop> is down:
    <what> is the content itself (bytes), or (body_len, dot_at) for a
    content that makes the spooled body exactly <body_len> bytes (see
    content_of()). Returns {sender: (qid, content, spooled body length)}."""
    sent, r_lens = {}, {}
    with smtplib.SMTP(gw.host, gw.port, timeout=30) as c:
        for sender, rcpts, what in plan:
            body_len = None if isinstance(what, bytes) else what[0]
            # The Received: header's length depends on the recipients (it
            # names the only one): a probe with addresses of the same length.
            key = tuple(len(r) for r in rcpts)
            if key not in r_lens:
                probe = b"X-Token: probe\r\n\r\nprobe\r\n"
                pq = send_on(c, f"probe{len(r_lens)}@sender.test", rcpts, probe)
                r_lens[key] = received_len(gw.spool, pq, probe)
            r_len = r_lens[key]
            for _ in range(3):  # the date's length can move (a new day): sent again
                content = what if body_len is None else \
                    content_of(body_len, r_len, rng, sender, what[1])
                if content:
                    qid = send_on(c, sender, rcpts, content)
                else:
                    qid = send_empty(gw, sender, rcpts[0])
                got = len(read_spool(gw.spool)[qid])
                if body_len is None or got == body_len:
                    break
                r_len += got - body_len
            assert body_len is None or got == body_len, (sender, got, body_len)
            sent[sender] = (qid, content, got)
    return sent


# ------------------------------------------------------------------ tests
def test_every_size_around_the_chunk_arrives_byte_for_byte():
    rng = random.Random(64)
    hop = NextHop()  # down while the messages are queued: their sizes are checked first
    with Gateway("--relay-to", hop.spec, *FAST) as gw:
        # Spooled bodies (the Received: header, then the content) around
        # the chunk size; "dot": a line starting with ".." at a chunk's
        # first byte, "dot2": its CR ends one chunk and its LF starts the
        # next.
        plan = [("empty@sender.test", ["c01@example.com"], b""),
                ("small@sender.test", ["c02@example.com"], b"x\r\n"),  # smallest content
                ("m1@sender.test", ["c03@example.com"], (CHUNK - 1, None)),
                ("m0@sender.test", ["c04@example.com"], (CHUNK, None)),
                ("p1@sender.test", ["c05@example.com"], (CHUNK + 1, None)),
                ("two@sender.test", ["c06@example.com"], (2 * CHUNK, None)),
                ("big@sender.test", ["c07@example.com"], (1024 * 1024 + 3, None)),
                ("dot@sender.test", ["c08@example.com"], (3 * CHUNK + 100, CHUNK)),
                ("dot2@sender.test", ["c09@example.com"], (2 * CHUNK + 100, 2 * CHUNK + 1)),
                ("multi@sender.test", ["c10@example.com", "c11@example.com"], (300000, None))]
        sent = queue_behind_a_down_hop(gw, hop, plan, rng)
        assert sent["empty@sender.test"][2] == received_len(gw.spool, sent["empty@sender.test"][0],
                                                           b""), "not empty"
        sizes = sorted(v[2] for v in sent.values())
        print("spooled body sizes:", sizes)
        hop.start()
        try:
            want = set(sent)
            ok = hop.wait(lambda ms: want <= set(by_sender(ms)), timeout=30)
            got = by_sender(hop.messages())
            assert ok, f"missing: {sorted(want - set(got))}\n" + gw.log()[-3000:]
            for sender, (qid, content, blen) in sent.items():
                # (Earlier tries at the size, if any, arrive too.)
                ms = [m for m in got[sender] if strip_received(m.content) == content]
                assert len(ms) == 1, \
                    f"{sender}: {[len(m.content) for m in got[sender]]} bytes, want {blen}"
            assert sorted(got["multi@sender.test"][0].rcpt_tos) == ["c10@example.com",
                                                                    "c11@example.com"]
            assert wait_count(gw, 0) == 0, gw.queue()
            assert "damaged (crc)" not in gw.log(), gw.log()[-2000:]
        finally:
            hop.stop()


def test_two_routes_each_read_the_whole_body():
    rng = random.Random(2)
    with NextHop() as a, NextHop() as b, \
            Gateway("--relay-to", a.spec, "--route", f"other.test={b.spec}",
                    "--domains", "other.test", *FAST) as gw:
        content = content_of(5 * CHUNK + 11, 0, rng, "routes")  # about 320 KB
        with smtplib.SMTP(gw.host, gw.port, timeout=30) as c:
            send_on(c, "r@sender.test", ["x@example.com", "y@other.test"], content)
        assert a.wait_messages(1) and b.wait_messages(1), gw.log()[-2000:]
        for hop, rcpt in ((a, "x@example.com"), (b, "y@other.test")):
            ms = hop.messages()
            assert len(ms) == 1 and ms[0].rcpt_tos == [rcpt], ms
            assert strip_received(ms[0].content) == content
        assert wait_count(gw, 0) == 0, gw.queue()


def test_refused_after_the_data_is_sent_again_whole():
    # The first transaction streams the whole body, then gets a 451: the
    # retry reads and checks the record again from its first byte.
    rng = random.Random(451)
    with NextHop() as hop, Gateway("--relay-to", hop.spec, *FAST) as gw:
        hop.fail_next(1, "data")
        content = content_of(3 * CHUNK + 5, 0, rng, "again")
        with smtplib.SMTP(gw.host, gw.port, timeout=30) as c:
            send_on(c, "again@sender.test", ["again@example.com"], content)
        assert hop.wait_messages(1, timeout=30), gw.log()[-2000:]
        ms = hop.messages()
        assert len(ms) == 1 and strip_received(ms[0].content) == content
        # The hop has the message before the gateway has read its 250.
        wait_until(lambda: "status=sent" in gw.log(), 10)
        log = gw.log()
        assert "status=deferred" in log and "status=sent" in log, log[-2000:]
        assert "damaged (crc)" not in log
        assert wait_count(gw, 0) == 0, gw.queue()


def test_a_flipped_body_byte_is_never_completed():
    rng = random.Random(7)
    hop = NextHop()
    with Gateway("--relay-to", hop.spec, *FAST) as gw:
        # "good" first: `ringmx queue` stops at a segment's first bad
        # record, as at a torn tail, so it lists only what comes before.
        plan = [("good@sender.test", ["d03@example.com"], (3 * CHUNK, None)),
                ("bad1@sender.test", ["d01@example.com"], (4 * CHUNK + 9, None)),
                ("bad2@sender.test", ["d02@example.com"], (1000, None))]
        sent = queue_behind_a_down_hop(gw, hop, plan, rng)
        # Tried once against the down hop: the records are loaded, and
        # their bodies are read again at the next attempt.
        assert wait_until(lambda: gw.log().count("status=deferred") >= 4), gw.log()[-2000:]
        bad1, bad2 = sent["bad1@sender.test"][0], sent["bad2@sender.test"][0]
        flip_body_byte(gw.spool, bad1, 3 * CHUNK + 100)  # in the fourth chunk
        flip_body_byte(gw.spool, bad2, 999)  # the last byte of a one-chunk body
        hop.start()
        try:
            assert hop.wait(lambda ms: "good@sender.test" in by_sender(ms), timeout=30), \
                gw.log()[-3000:]
            # Retried (FAST: every 1-2 s), read again from the start, and
            # refused again each time.
            assert wait_until(lambda: gw.log().count(f"id={bad1} record at") >= 2
                              and gw.log().count(f"id={bad2} record at") >= 2, timeout=30), \
                gw.log()[-3000:]
            got = by_sender(hop.messages())
            assert "bad1@sender.test" not in got and "bad2@sender.test" not in got, got
            assert strip_received(got["good@sender.test"][0].content) == \
                sent["good@sender.test"][1]
            log = gw.log()
            for q in (bad1, bad2):
                lines = [ln for ln in log.splitlines() if f"id={q} record at" in ln]
                assert all("damaged (crc): not sent" in ln for ln in lines), lines
                deferred = [ln for ln in log.splitlines()
                            if f"{q}: to=<" in ln and "status=deferred" in ln
                            and "4.3.0 spool record damaged" in ln]
                assert deferred, f"no deferral for {q}\n" + log[-3000:]
            # The transactions were started (MAIL seen) but never ended.
            assert hop.mail_commands >= 2 + 2 * 2, hop.mail_commands
            st = states(gw)
            assert st.get(sent["good@sender.test"][0]) == "delivered", st
        finally:
            hop.stop()


if __name__ == "__main__":
    if not HAVE_AIOSMTPD:
        print("skip: aiosmtpd is not installed (Debian package python3-aiosmtpd)")
        sys.exit(77)
    ck = Checks()
    if sys.argv[1:]:
        for name in sys.argv[1:]:
            ck.run(globals()[name])
    else:
        ck.run_all(globals())
    ck.finish()
