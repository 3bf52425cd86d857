"""Spool reclamation while running: a segment is unlinked once it is sealed
(the worker moved on to a new one) and every record in it is delivered with
its done record durable. A segment holding a deferred message stays until
that message is delivered. A done log is rotated past --done-log-size and
unlinked once every segment its marks name is gone, so the done logs stay
bounded whatever the number of messages. Nothing acknowledged is lost, and
nothing done comes back, across a restart."""
import glob
import os
import smtplib
import subprocess
import sys
import time

from rmx import Checks, Gateway, queue_listing
from nexthop import HAVE_AIOSMTPD, NextHop, SmtpSink, reserve_port
import random
import signal

from it_relay import (FAST, SMTP_SOURCE, by_token, make_content, send_on, strip_received,
                      wait_count, wait_port_free, wait_until)


def segments(gw):
    return sorted(glob.glob(os.path.join(gw.spool, "seg-*.rmx")))


def seg_bytes(gw):
    return sum(os.path.getsize(p) for p in segments(gw))


def done_logs(gw):
    return sorted(glob.glob(os.path.join(gw.spool, "done-*.rmx")))


def done_bytes(gw):
    total = 0
    for p in done_logs(gw):
        try:
            total += os.path.getsize(p)
        except FileNotFoundError:  # unlinked meanwhile
            pass
    return total


def recovered_line(gw):
    return [ln for ln in gw.log().splitlines() if "spool: recovered" in ln][-1]


def source(gw, n, sessions=20):
    r = subprocess.run([SMTP_SOURCE, "-d", "-s", str(sessions), "-m", str(n), "-l", "1024",
                        "-f", "src@source.test", "-t", "dst@example.com",
                        f"127.0.0.1:{gw.port}"], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr


def test_finished_segments_are_unlinked():
    if not (SmtpSink.available() and os.path.exists(SMTP_SOURCE)):
        print("skip: smtp-sink/smtp-source not installed (Debian package postfix)")
        return
    with SmtpSink(backlog=1000) as sink, \
            Gateway("--relay-to", sink.spec, "--segment-size", "64k", *FAST) as gw:
        sizes = []
        for n in (2000, 4000):
            source(gw, n)
            assert wait_count(gw, 0, timeout=90) == 0, gw.queue()
            # The done log is synced at the tick; then the sealed segments go.
            assert wait_until(lambda: len(segments(gw)) <= 2, 10), \
                (len(segments(gw)), gw.log()[-2000:])
            sizes.append(seg_bytes(gw))
        # 6,000 messages of ~1.2 KB made ~110 segments of 64 KB; what is left
        # is the two workers' current segments, whatever the count.
        print(f"segments left: {len(segments(gw))}, {sizes[-1]} bytes after 2,000 and "
              f"6,000 messages: {sizes}")
        # A worker moves on only once its segment is past --segment-size,
        # so each may hold 64 KB plus its last batch: at most the 20
        # sessions' messages (~1.3 KB each with the envelope).
        assert all(s <= 2 * (64 * 1024 + 20 * 1400) for s in sizes), sizes
        log = gw.log()
        assert "unlink:" not in log, log[-2000:]
        gw.stop()
        gw.start()
        assert gw.count() == 0
        rec = [ln for ln in gw.log().splitlines() if "spool: recovered" in ln][-1]
        assert " 0 messages pending" in rec, rec


DONE_LOG_SIZE = 16 * 1024  # 256 marks a log


def held_gateway(sink, *args):
    """A gateway relaying example.com to <sink> and held.test to a port
    nobody listens on: a message to held.test stays pending (deferred,
    retried every second or two) in whatever segment it landed in."""
    return Gateway("--relay-to", sink.spec, "--segment-size", "64k", "--domains", "held.test",
                   "--route", f"held.test=127.0.0.1:{reserve_port()}", *args, *FAST)


def send_held(gw, n, tag):
    with smtplib.SMTP(gw.host, gw.port, timeout=20) as c:
        return [send_on(c, "a@sender.test", [f"{tag}{i}@held.test"],
                        b"Subject: held\r\n\r\nheld\r\n") for i in range(n)]


def test_done_logs_stay_bounded():
    """30,000 messages through 64 KB segments and 16 KB done logs: once they
    are delivered, what is left of the done logs is the same after 10,000
    messages and after 30,000 (the logs naming the workers' current
    segments and the segments of the few messages held pending), not 64
    bytes a message. A SIGKILL then loses no pending message and brings
    back no done one: every mark a remaining segment needs is still there."""
    if not (SmtpSink.available() and os.path.exists(SMTP_SOURCE)):
        print("skip: smtp-sink/smtp-source not installed (Debian package postfix)")
        return
    with SmtpSink(backlog=1000) as sink, \
            held_gateway(sink, "--done-log-size", str(DONE_LOG_SIZE)) as gw:
        seen, held = [], []
        for n in (10000, 20000):
            held += send_held(gw, 3, f"h{n}-")
            source(gw, n)
            assert wait_count(gw, len(held), timeout=120) == len(held), gw.queue()
            # Old logs go at the tick after their last segment's unlink is
            # durable (a directory fsync at the tick after the unlink).
            assert wait_until(lambda: len(done_logs(gw)) <= 10, 15), \
                (len(done_logs(gw)), done_logs(gw), gw.log()[-2000:])
            time.sleep(3)  # what can go has gone: the sizes are settled
            seen.append((len(done_logs(gw)), done_bytes(gw), len(segments(gw)), seg_bytes(gw)))
        print(f"after 10,000 and 30,000 messages, {len(held)} held: (done logs, their bytes, "
              f"segments, their bytes) = {seen}")
        # Without rotation: 64 bytes a message, 1.9 MB after 30,000.
        for logs, size, _segs, _sbytes in seen:
            assert logs <= 10 and size <= 10 * (DONE_LOG_SIZE + 16 * 1024), seen
        log = gw.log()
        assert "unlink:" not in log and "stays until the next start" not in log, log[-2000:]
        gw.stop(signal.SIGKILL)
        wait_port_free(gw.port)
        gw.start()
        rec = recovered_line(gw)
        assert f" {len(held)} messages pending" in rec, (rec, held)
        assert sorted(queue_listing(gw)) == sorted(held), (queue_listing(gw), held)
        gw.stop()
        stops = [ln for ln in gw.log().splitlines() if "stopped;" in ln]
        assert stops and all("finished segments unlinked" in ln for ln in stops), stops


def max_done_seq(gw):
    seqs = [int(os.path.basename(p)[:-4].split("-")[3]) for p in done_logs(gw)
            if os.path.basename(p).count("-") == 3]
    return max(seqs, default=-1)


def test_kill_while_done_logs_rotate():
    """SIGKILL, three times, while messages are delivered, segments unlinked
    and done logs rotated and unlinked (4 KB done logs: 64 marks each): the
    held messages are pending after each restart (none lost), and at the end
    everything else is delivered and the done logs are bounded again."""
    if not (SmtpSink.available() and os.path.exists(SMTP_SOURCE)):
        print("skip: smtp-sink/smtp-source not installed (Debian package postfix)")
        return
    import threading
    with SmtpSink(backlog=1000) as sink, held_gateway(sink, "--done-log-size", "4k") as gw:
        held = []
        for rnd in range(3):
            held += send_held(gw, 2, f"k{rnd}-")
            t = threading.Thread(target=lambda: subprocess.run(
                [SMTP_SOURCE, "-d", "-s", "10", "-m", "4000", "-l", "1024",
                 "-f", "src@source.test", "-t", "dst@example.com", f"127.0.0.1:{gw.port}"],
                capture_output=True, timeout=180))
            t.start()
            # Killed once several done logs have been rotated out.
            wait_until(lambda: max_done_seq(gw) >= 5 + 10 * rnd or not t.is_alive(), 60)
            gw.stop(signal.SIGKILL)
            t.join(200)
            wait_port_free(gw.port)
            gw.start()
            rec = recovered_line(gw)
            print(f"kill {rnd}: recovery: {rec.split(': ', 1)[1]}")
            listing = queue_listing(gw)
            assert all(q in listing for q in held), (held, rec)
        assert wait_count(gw, len(held), timeout=120) == len(held), gw.queue()
        assert sorted(queue_listing(gw)) == sorted(held)
        assert wait_until(lambda: len(done_logs(gw)) <= 10, 15), done_logs(gw)
        print(f"end: {len(done_logs(gw))} done logs, {done_bytes(gw)} bytes; "
              f"{len(segments(gw))} segments")


def defer_logs(gw):
    return sorted(glob.glob(os.path.join(gw.spool, "defer-*.log")))


def test_defer_logs_rotate_and_go():
    """4 KB defer logs (about 80 lines) and a 3-second queue lifetime: 150
    messages deferred again and again, then bounced, fill several defer
    logs; once the lifetime plus --retry-max has passed since a log was
    rotated out it is unlinked, and what is left is the current log."""
    if not SmtpSink.available():
        print("skip: smtp-sink not installed (Debian package postfix)")
        return
    with SmtpSink(backlog=1000) as sink, \
            held_gateway(sink, "--done-log-size", "4k", "--max-queue-lifetime", "3") as gw:
        held = send_held(gw, 150, "d")
        most, sizes = [0], {}

        def drained():
            logs = defer_logs(gw)
            most[0] = max(most[0], len(logs))
            for p in logs:
                try:
                    sizes[os.path.basename(p)] = os.path.getsize(p)
                except FileNotFoundError:
                    pass
            return gw.count() == 0
        assert wait_until(drained, 60, 0.2), gw.queue()
        assert len(sizes) >= 3, (sizes, defer_logs(gw))
        # Every log past the size is rotated out and goes; the one worker
        # that delivers held.test may keep a current log under it.
        full = [n for n, size in sizes.items() if size >= 4096]

        def gone():
            left = [os.path.basename(p) for p in defer_logs(gw)]
            return len(left) <= 1 and not set(left) & set(full)
        assert wait_until(gone, 20), (defer_logs(gw), sizes)
        print(f"{len(held)} messages deferred then bounced: {len(sizes)} defer logs "
              f"({sum(sizes.values())} bytes), at most {most[0]} at once; left: "
              f"{[os.path.basename(p) for p in defer_logs(gw)]}")


def test_deferred_message_keeps_its_segment():
    if not HAVE_AIOSMTPD:
        print("skip: aiosmtpd not installed (Debian package python3-aiosmtpd)")
        return
    with NextHop() as hop, \
            Gateway("--relay-to", hop.spec, "--segment-size", "64k", *FAST, threads=1) as gw:
        hop.defer_rcpt = lambda a: a.lower().startswith("late")
        body = b"Subject: r\r\n\r\n" + b"x" * 1500 + b"\r\n"
        with smtplib.SMTP(gw.host, gw.port, timeout=20) as c:
            late = send_on(c, "a@sender.test", ["late@example.com"], body)
            for i in range(150):  # ~1.7 KB records: four segments and more
                send_on(c, "a@sender.test", [f"r{i}@example.com"], body)
        assert hop.wait(lambda ms: len(ms) >= 150), gw.log()[-2000:]
        # The others' segments go; the first one, which holds the deferred
        # message, stays.
        first = None
        deadline = time.time() + 10
        while time.time() < deadline:
            segs = segments(gw)
            first = segs[0] if segs else None
            if len(segs) <= 2:
                break
            time.sleep(0.2)
        assert len(segments(gw)) <= 2, segments(gw)
        assert late in gw.queue(), gw.queue()
        held = first
        hop.defer_rcpt = lambda a: False
        assert hop.wait(lambda ms: len(ms) >= 151, 20), gw.log()[-2000:]
        assert wait_count(gw, 0) == 0
        assert wait_until(lambda: held not in segments(gw), 10), (held, segments(gw))


def survivor_gateway(hop, *args, env=None):
    """One worker, 64 KB segments, survivors moved after 2 s."""
    return Gateway("--relay-to", hop.spec, "--segment-size", "64k", "--spool-compact-age", "2",
                   *args, *FAST, threads=1, env=env)


def send_survivor(gw, hop, n=80):
    """A message to late@ (deferred by the hop) in the first segment, then
    <n> others that fill several more; returns late's queue id and its
    segment once the others have arrived."""
    hop.defer_rcpt = lambda a: a.lower().startswith("late")
    body = b"Subject: r\r\n\r\n" + (b"x" * 98 + b"\r\n") * 20
    with smtplib.SMTP(gw.host, gw.port, timeout=20) as c:
        late = send_on(c, "a@sender.test", ["late@example.com"], body)
        first = segments(gw)[0]
        for i in range(n):
            send_on(c, "a@sender.test", [f"r{i}@example.com"], body)
    assert hop.wait(lambda ms: len(ms) >= n), gw.log()[-2000:]
    return late, first


def late_arrivals(hop):
    return [m for m in hop.messages() if any(r.startswith("late") for r in m.rcpt_tos)]


def test_deferred_survivor_moves_forward():
    """A deferred message in a segment whose other records are all delivered
    is copied into the current segment once it is older than
    --spool-compact-age, and the old segment goes; the message is listed
    once, delivered once when the next hop takes it, and not again after a
    restart."""
    if not HAVE_AIOSMTPD:
        print("skip: aiosmtpd not installed (Debian package python3-aiosmtpd)")
        return
    with NextHop() as hop, survivor_gateway(hop) as gw:
        late, first = send_survivor(gw, hop)
        assert wait_until(lambda: "moved forward" in gw.log(), 15), gw.log()[-3000:]
        assert wait_until(lambda: first not in segments(gw), 10), (first, segments(gw))
        assert gw.queue().count(late) == 1 and gw.count() == 1, gw.queue()
        # With --all: the old record as moved (until its done log goes with
        # the segment), the copy pending; never two pending.
        lines = [ln.split() for ln in gw.queue("--all").splitlines() if ln.startswith(late)]
        assert [f[5] for f in lines].count("moved") <= 1, lines
        assert len([f for f in lines if f[5] in ("active", "deferred")]) == 1, lines
        hop.defer_rcpt = lambda a: False
        assert hop.wait(lambda ms: len(late_arrivals(hop)) >= 1, 20), gw.log()[-2000:]
        assert wait_count(gw, 0) == 0
        time.sleep(1.5)
        assert len(late_arrivals(hop)) == 1, late_arrivals(hop)
        gw.stop()
        gw.start()
        assert gw.count() == 0
        time.sleep(1.5)
        assert len(late_arrivals(hop)) == 1


def test_kill_between_copy_and_mark():
    """RINGMX_FAULT=move-copied: the gateway dies by SIGKILL right after a
    moved message's copy is durable, before its old record is marked moved.
    Both records are pending on the disk; the restart takes one (the listing
    shows one, the recovery log says so), the message is delivered once,
    and once more restart later it is not sent again."""
    if not HAVE_AIOSMTPD:
        print("skip: aiosmtpd not installed (Debian package python3-aiosmtpd)")
        return
    with NextHop() as hop, survivor_gateway(hop, env={"RINGMX_FAULT": "move-copied"}) as gw:
        late, _ = send_survivor(gw, hop)
        assert gw.proc.wait(20) == -signal.SIGKILL, gw.log()[-2000:]
        assert "RINGMX_FAULT=move-copied reached" in gw.log()
        # The tool's listing already takes one of the two.
        assert gw.queue().count(late) == 1, gw.queue()
        gw.env = {}
        wait_port_free(gw.port)
        gw.start()
        assert "is a copy of a pending record seen before" in gw.log(), gw.log()[-2000:]
        assert gw.count() == 1, gw.queue()
        hop.defer_rcpt = lambda a: False
        assert hop.wait(lambda ms: len(late_arrivals(hop)) >= 1, 20), gw.log()[-2000:]
        assert wait_count(gw, 0) == 0
        gw.stop()
        gw.start()
        assert gw.count() == 0, gw.queue()
        time.sleep(1.5)
        assert len(late_arrivals(hop)) == 1, late_arrivals(hop)


def test_kill_right_after_unlink():
    """RINGMX_FAULT=seg-unlinked: SIGKILL as soon as a finished segment's
    unlink completes, before the directory fsync and before any done log
    naming it may go. After the restart every acknowledged message arrives,
    the deferred one once, and none whose record had left the disk with
    the unlinked segment (its done mark was durable) is sent again."""
    if not HAVE_AIOSMTPD:
        print("skip: aiosmtpd not installed (Debian package python3-aiosmtpd)")
        return
    from rmx import read_spool
    rng = random.Random(7)
    with NextHop() as hop, \
            Gateway("--relay-to", hop.spec, "--segment-size", "64k", *FAST, threads=1,
                    env={"RINGMX_FAULT": "seg-unlinked"}) as gw:
        hop.defer_rcpt = lambda a: a.lower().startswith("late")
        qid_of = {}
        try:
            with smtplib.SMTP(gw.host, gw.port, timeout=20) as c:
                late = send_on(c, "a@sender.test", ["late@example.com"],
                               make_content("late", 1000, rng))
                for i in range(200):
                    t = f"u{i:03d}"
                    qid_of[t] = send_on(c, "a@sender.test", [f"r{i}@example.com"],
                                        make_content(t, 2000, rng))
        except (smtplib.SMTPException, OSError):
            pass  # the kill came while sending: what was acknowledged counts
        assert gw.proc.wait(20) == -signal.SIGKILL, gw.log()[-2000:]
        assert "RINGMX_FAULT=seg-unlinked reached" in gw.log()
        before = len(hop.messages())
        on_disk = set(read_spool(gw.spool))
        gone = {t for t, q in qid_of.items() if q not in on_disk}
        assert gone, "the unlinked segment held none of the messages"
        assert late in on_disk
        gw.env = {}
        wait_port_free(gw.port)
        gw.start()
        assert late in queue_listing(gw)
        hop.defer_rcpt = lambda a: False
        assert wait_count(gw, 0, timeout=30) == 0, gw.queue()
        got = by_token(hop.messages())
        missing = [t for t in qid_of if t not in got]
        assert not missing, missing[:5]
        assert len(got.get("late", [])) == 1, got.get("late")
        again = by_token(hop.messages()[before:])
        assert not gone & set(again), sorted(gone & set(again))[:5]
        dups = sum(len(v) - 1 for v in got.values())
        print(f"killed after an unlink: {len(qid_of)} acknowledged, {len(gone)} in the "
              f"unlinked segment(s), none sent again; {dups} duplicate(s) in all")


def test_kill_while_segments_are_reclaimed():
    """SIGKILL, three times, while messages are delivered and their segments
    unlinked (64 KB segments: one goes every ~40 messages) and done logs
    rotated and unlinked (4 KB: 64 marks each): after the last
    restart every acknowledged message has arrived, byte for byte, and
    nothing is left in the spool."""
    if not HAVE_AIOSMTPD:
        print("skip: aiosmtpd not installed (Debian package python3-aiosmtpd)")
        return
    rng = random.Random(2026)
    with NextHop() as hop, \
            Gateway("--relay-to", hop.spec, "--segment-size", "64k", "--relay-pool", "1",
                    "--done-log-size", "4k", *FAST) as gw:
        hop.delay = 0.03  # one connection: ~30 messages a second
        sent, pending = {}, []
        for rnd in range(3):
            with smtplib.SMTP(gw.host, gw.port, timeout=30) as c:
                for i in range(100):
                    t = f"rc{rnd}-{i:03d}-{rng.getrandbits(32):08x}"
                    content = make_content(t, [100, 3000][i % 2], rng)
                    send_on(c, "a@sender.test", [f"k{i}@example.com"], content)
                    sent[t] = content
            time.sleep(rng.uniform(0.3, 1.2))
            gw.stop(signal.SIGKILL)
            pending.append(gw.count())
            wait_port_free(gw.port)
            gw.start()
        assert any(pending), f"no kill came in the middle of delivery: {pending}"
        assert wait_count(gw, 0, timeout=60) == 0, gw.queue()
        got = by_token(hop.messages())
        missing = [t for t in sent if t not in got]
        assert not missing, f"{len(missing)} missing after the restarts: {missing[:5]}"
        for t, ms in got.items():
            for m in ms:
                assert strip_received(m.content) == sent[t], t
        assert wait_until(lambda: len(segments(gw)) <= 2, 10), segments(gw)
        dups = sum(len(v) - 1 for v in got.values())
        print(f"3 kills ({pending} pending at each), {len(sent)} messages: all arrived, "
              f"{dups} duplicate(s) "
              f"(at least once), {len(segments(gw))} segments left")


if __name__ == "__main__":
    ck = Checks()
    ck.run_all(globals())
    ck.finish()
