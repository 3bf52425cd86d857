"""Bounce (DSN) spooling under faults: nothing the log called queued may be
lost afterwards.

1. test_bounce_write_failure_keeps_earlier_bounces: the spool is a small
   tmpfs (--spool-min-free 0). A next hop rejects the original recipients
   (550), so bounces are made, and defers the bounces' recipients (451), so
   the bounces stay queued. A few bounces become durable, then the disk is
   filled so that the next bounce write fails, then space is freed and more
   bounces are made. Every bounce logged as queued must still be in the
   spool with a sound record (`ringmx queue`, which checks every CRC), both
   while the gateway runs and after a restart (recovery).

2. test_threads_200_bounce_segments_distinct: --threads 200, bounces made on
   workers 0..71 and messages accepted on (nearly) every worker, 128..199
   among them. No segment may be written by two writers: every record of
   every segment file is sound up to the file's end, and every message the
   log called queued (client and bounce) is in the spool exactly once, also
   after a restart. The checks do not depend on how segment files are named.

Needs root for the tmpfs mount of test 1 (where it cannot be mounted, test 1
is skipped, test 2 still runs, and the script exits 77 unless test 2 failed)
and aiosmtpd (exit 77 without it). Every wait is bounded;
processes are stopped by pid (Gateway, NextHop); the tmpfs is unmounted in a
finally."""
import concurrent.futures
import errno
import os
import re
import smtplib
import struct
import subprocess
import sys
import tempfile
import time

from rmx import RINGMX, SEG_MAGIC, Checks, Gateway, QUEUED, seg_records
from it_relay import wait_until
from nexthop import HAVE_AIOSMTPD, NextHop, reserve_port

FAST = ("--retry-min", "1", "--retry-max", "2")
# A message is durable once its qmgr line is out ("QID: from=<...>, size=N,
# nrcpt=N (queue active)"); a client's message has a "QID: client=" line
# before it, a bounce none.
QUEUED_LOG = re.compile(r"ringmx/qmgr\[\d+\]: ([0-9A-Za-z]+): from=<[^>]*>, size=\d+")
CLIENT_LOG = re.compile(r"ringmx/smtpd\[\d+\]: ([0-9A-Za-z]+): client=")
SENDERS = "senders.test"  # the original senders' domain: bounces go there
SKIPPED = []  # why a test could not run here


# ---------------------------------------------------------------- helpers

def logged_queued(log):
    """(client ids, bounce ids) from the gateway's "QID: from=<...>, size=" lines, in order."""
    clients = set(CLIENT_LOG.findall(log))
    client, bounces = [], []
    for m in QUEUED_LOG.finditer(log):
        (client if m.group(1) in clients else bounces).append(m.group(1))
    return client, bounces


def spool_queue(spool, *args):
    """Runs `ringmx queue --spool <spool> --all`; returns ({qid: [lines]}, stderr).
    `ringmx queue` checks every record's CRC; the first record that fails a
    check ends its segment (and is reported on stderr)."""
    r = subprocess.run([RINGMX, "queue", "--spool", spool, "--all"] + list(args),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"ringmx queue failed ({r.returncode}): {r.stderr}"
    out = {}
    for line in r.stdout.splitlines():
        f = line.split()
        if f:
            out.setdefault(f[0], []).append(line)
    return out, r.stderr


_DAMAGE = re.compile(r"bad header|bad crc|unreadable envelope|damaged|bytes ignored|"
                     r"torn tail|bad record")


def damage_lines(text):
    """The warnings and errors a spool reader (recovery, `ringmx queue`) gives
    for a record that fails a check (not the info summary, which counts them)."""
    return [ln for ln in text.splitlines()
            if (" warning: " in ln or " error: " in ln) and _DAMAGE.search(ln)]


def frame_walk(spool):
    """Walks every regular file in the spool that starts with a record magic
    (whatever its name) by the record frames (queue/spool.h: 32-byte header,
    envelope, body). Returns ({file: (records, bytes walked, size)}, [qids])."""
    files, qids = {}, []
    for name in sorted(os.listdir(spool)):
        path = os.path.join(spool, name)
        if not os.path.isfile(path) or ".damaged" in name:
            continue
        with open(path, "rb") as f:
            data = f.read()
        if len(data) < 4 or struct.unpack_from("<I", data, 0)[0] != SEG_MAGIC:
            continue
        n, end = 0, 0
        for off, env_len, body_len, qid in seg_records(data):
            if qid:
                qids.append(qid)
            n += 1
            end = off + 32 + env_len + body_len
        files[name] = (n, end, len(data))
    return files, qids


def pad_headers(tag, nbytes):
    """Header lines of about <nbytes>: bounces return the original header
    section, so this sets the size of each bounce record."""
    lines, n, i = [], 0, 0
    while n < nbytes:
        ln = f"X-Pad-{i:03d}: {tag} " + "p" * 60
        lines.append(ln)
        n += len(ln) + 2
        i += 1
    return "\r\n".join(lines) + "\r\n"


def send_one(gw, sender, rcpt, content, timeout=20):
    with smtplib.SMTP(gw.host, gw.port, timeout=timeout) as c:
        c.ehlo("client.test")
        code, resp = c.mail(sender)
        if code != 250:
            return code, resp
        code, resp = c.rcpt(rcpt)
        if code != 250:
            return code, resp
        code, resp = c.data(content)
        m = QUEUED.match("250 " + resp.decode())
        return (code, m.group(1)) if code == 250 and m else (code, resp)


def fill(path):
    """Writes <path> until the filesystem is full; returns the bytes written."""
    n = 0
    with open(path, "wb", buffering=0) as f:
        for chunk in (1 << 16, 1 << 12, 1 << 9):
            while True:
                try:
                    k = f.write(b"\0" * chunk)
                    n += k or 0
                    if not k:
                        break
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
    return n


def mount_tmpfs(path, size):
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                       capture_output=True, text=True)
    return r.returncode == 0, r.stderr.strip()


def route_hash(domain):
    """io/worker.c route_hash(): FNV-1a 32 of the lowercased domain."""
    h = 2166136261
    for ch in domain.lower().encode():
        h = ((h ^ ch) * 16777619) & 0xffffffff
    return h


def domain_for_worker(k, n, prefix):
    """A domain whose route is owned by worker <k> of <n>."""
    for i in range(1000000):
        d = f"{prefix}{i}.test"
        if route_hash(d) % n == k:
            return d
    raise RuntimeError(f"no domain for worker {k}")


def missing_report(want, have, log):
    lines = []
    for q in want:
        if q not in have:
            lines.extend(ln for ln in log.splitlines() if q in ln)
    return "\n".join(lines[:20])


# ------------------------------------------------------------------ tests
def test_bounce_write_failure_keeps_earlier_bounces():
    with tempfile.TemporaryDirectory(prefix="ringmx-bfull-") as mnt:
        ok, why = mount_tmpfs(mnt, "2m")
        if not ok:
            # test 2 still runs; the script exits 77 if nothing failed
            SKIPPED.append(f"cannot mount a tmpfs here (needs root): {why}")
            print("skip: " + SKIPPED[-1])
            return
        try:
            _bounce_write_failure(mnt)
        finally:
            subprocess.run(["umount", "-l", mnt], timeout=30)


def _bounce_write_failure(mnt):
    spool = os.path.join(mnt, "spool")
    ballast = os.path.join(mnt, "ballast")
    late_rejected = [False]

    def rejected(addr):
        a = addr.lower()
        if a.endswith("@" + SENDERS):
            return False  # the bounces' recipients are only ever deferred
        return a.startswith("bad") or (a.startswith("late") and late_rejected[0])

    def deferred(addr):
        a = addr.lower()
        return a.endswith("@" + SENDERS) or a.startswith("late")

    with NextHop() as hop, \
            Gateway("--relay-to", hop.spec, "--spool-min-free", "0", *FAST,
                    threads=2, spool=spool) as gw:
        hop.reject_rcpt = rejected  # 550 5.1.1: the original recipients bounce
        hop.defer_rcpt = deferred   # 451: the bounces stay queued
        pad = pad_headers("b", 9000)  # each bounce ~10 kB: more than a page

        def bounce_count():
            return len(logged_queued(gw.log())[1])

        # 1. Three bounces made and durable (logged as queued).
        for i in range(3):
            code, qid = send_one(gw, f"s{i}@{SENDERS}", f"bad{i}@example.com",
                                 f"Subject: first {i}\r\n{pad}\r\nbody {i}\r\n")
            assert code == 250, (code, qid)
        assert wait_until(lambda: bounce_count() >= 3, 20), \
            "no 3 bounces queued:\n" + gw.log()[-3000:]
        # One message whose recipient is deferred now and rejected later,
        # once the disk is full: its bounce is the write that fails.
        code, late = send_one(gw, f"late@{SENDERS}", "late0@example.com",
                              f"Subject: late\r\n{pad}\r\nlate\r\n")
        assert code == 250, (code, late)
        assert wait_until(lambda: [ln for ln in gw.log().splitlines()
                                   if "late0@example.com" in ln and "status=deferred" in ln], 20), \
            "the late message was not deferred:\n" + gw.log()[-3000:]
        first = logged_queued(gw.log())[1]
        listing, _ = spool_queue(spool)
        assert all(q in listing for q in first), (first, sorted(listing))

        # 2. The disk fills; the late recipient is rejected now: its bounce
        # cannot be written.
        filled = fill(ballast)
        late_rejected[0] = True
        fail_line = wait_until(
            lambda: [ln for ln in gw.log().splitlines()
                     if " error: " in ln and "bounce" in ln.lower()], 20)
        assert fail_line, ("no failed bounce write with the disk full (ballast %d bytes):\n"
                           % filled) + gw.log()[-3000:]
        # 3. Space comes back; more bounces.
        os.unlink(ballast)
        for i in range(3, 5):
            # A failed write keeps MAIL at 452 4.3.1 until the next free-space
            # check (once a second) sees the room again: retry as a client would.
            deadline = time.monotonic() + 5
            while True:
                code, qid = send_one(gw, f"s{i}@{SENDERS}", f"bad{i}@example.com",
                                     f"Subject: after {i}\r\n{pad}\r\nbody {i}\r\n")
                if code != 452 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert code == 250, (code, qid)
        assert wait_until(lambda: bounce_count() >= len(first) + 2, 20), \
            "no bounces queued after space came back:\n" + gw.log()[-3000:]
        # The message whose bounce could not be written was kept, not marked
        # done: at its retry its bounce is made again.
        assert wait_until(lambda: bounce_count() >= len(first) + 3, 20), \
            "the failed bounce was not made again:\n" + gw.log()[-3000:]
        time.sleep(0.5)
        log = gw.log()
        _, bounces = logged_queued(log)
        listing, err = spool_queue(spool)
        lost = [q for q in bounces if q not in listing]
        print(f"{len(bounces)} bounces logged as queued ({len(first)} before the disk filled, "
              f"failed write: {fail_line[0].strip()!r}); {len(lost)} not in the spool")
        assert not lost, (f"bounces logged as queued but gone from the spool: {lost} "
                          f"(of {bounces})\nringmx queue stderr: {err.strip()}\n"
                          f"log of the lost ones:\n{missing_report(lost, listing, log)}")

        # 4. Restart: recovery finds every queued bounce.
        gw.stop()
        gw.start()
        listing, err = spool_queue(spool)
        lost = [q for q in bounces if q not in listing]
        assert not lost, (f"after a restart, bounces logged as queued are gone: {lost}\n"
                          f"{err.strip()}\n{gw.log()[-2000:]}")
        pending = [q for q in bounces
                   if not any(ln.split()[5] in ("active", "deferred") for ln in listing[q])]
        assert not pending, (f"queued bounces no longer pending after the restart: {pending}: "
                             f"{[listing[q] for q in pending]}\n{gw.log()[-3000:]}")


def test_threads_200_bounce_segments_distinct():
    nthreads = 200
    # The client messages stay queued for a next hop that is down (refused
    # at once: no load); the bounces' originals and the bounces go to the
    # fake hop, which rejects the former and defers the latter.
    down = reserve_port()
    keep_doms = [f"keep{j}.test" for j in range(8)]
    routes = [a for d in keep_doms for a in ("--route", f"{d}=127.0.0.1:{down}")]
    with NextHop() as hop, \
            Gateway("--relay-to", hop.spec, "--relay-networks", "127.0.0.0/8", *routes,
                    "--retry-min", "3", "--retry-max", "6", "--relay-pool", "1",
                    "--max-sessions", "5000", threads=nthreads) as gw:
        assert f"{nthreads} workers" in gw.log(), gw.log()[-2000:]
        hop.reject_rcpt = lambda a: a.lower().startswith("bad")  # 550: bounce
        hop.defer_rcpt = lambda a: True  # everything else 451: stays queued
        # Recipient domains owned by workers 0..71: before the committer wrote
        # bounces, they went to a segment named with worker id + 128, which
        # is a live worker's segment name too.
        bounce_workers = list(range(0, nthreads - 128))
        doms = {k: domain_for_worker(k, nthreads, "b") for k in bounce_workers}

        def client_msg(i):
            # one connection each, so SO_REUSEPORT spreads them over the workers
            d = keep_doms[i % len(keep_doms)]
            code, q = send_one(gw, f"c{i}@{SENDERS}", f"keep{i}@{d}",
                               f"Subject: keep {i}\r\n\r\nkeep {i}\r\n")
            assert code == 250, (i, code, q)
            return q

        def accepted_on():
            """Workers that accepted a client message: the qid's 2 hex digits
            after the 8 of the time (io/worker.c make_qid)."""
            return {int(q[8:10], 16) for q in logged_queued(gw.log())[0]}

        t0 = time.time()
        i = 0
        with concurrent.futures.ThreadPoolExecutor(16) as ex:
            # 1. Messages accepted on (nearly) every worker, 128..199 first of all.
            while time.time() - t0 < 20 and i < 3000:
                list(ex.map(client_msg, range(i, i + 200)))
                i += 200
                if set(range(128, nthreads)) <= accepted_on():
                    break
            phase1 = i
            on = accepted_on()
            # 2. Bounces on workers 0..71.
            originals = {}
            for k in bounce_workers:
                code, q = send_one(gw, f"s{k}@{SENDERS}", f"bad{k}@{doms[k]}",
                                   f"Subject: bounce {k}\r\n{pad_headers(k, 300)}\r\nb {k}\r\n")
                assert code == 250, (k, code, q)
                originals[q] = k
            # (the spool is checked even if some are missing: that is reported last)
            # A relay that cannot read back a spooled original ("relay: record
            # at N: ...") never bounces it: no point waiting for that one.
            wait_until(lambda: len(logged_queued(gw.log())[1]) >= len(bounce_workers)
                       or "relay: record at" in gw.log(), 30)
            time.sleep(0.5)
            if len(logged_queued(gw.log())[1]) < len(bounce_workers):
                lg = gw.log()
                late = [q for q in originals if not re.search(
                    rf"{q}: to=<.*status=bounced", lg)]
                print(f"only {len(logged_queued(lg)[1])} of {len(bounce_workers)} bounces "
                      f"after the wait; originals not bounced: {late}")
                for ln in lg.splitlines():
                    if any(q in ln for q in late) or " error: " in ln or " warning: " in ln:
                        print("  " + ln)
            # 3. More messages on every worker, after the bounces.
            list(ex.map(client_msg, range(i, i + 200)))
            i += 200
        time.sleep(0.5)
        log_before = gw.log()
        gw.stop()
        log = gw.log()
        client, bounces = logged_queued(log)
        print(f"{len(client)} client messages ({phase1} before the bounces; accepted on "
              f"{len(on)} of {nthreads} workers, {len(set(range(128, nthreads)) & on)} of "
              f"128..{nthreads - 1}), {len(bounces)} bounces, in {time.time() - t0:.1f}s")
        assert "cannot open a spool segment" not in log_before, \
            [ln for ln in log_before.splitlines() if "cannot open a spool segment" in ln][:5]

        def check(when, client):
            listing, err = spool_queue(gw.spool)
            files, walked = frame_walk(gw.spool)
            torn = {f: v for f, v in files.items() if v[1] != v[2]}
            lost_c = [q for q in client if q not in listing]
            lost_b = [q for q in bounces if q not in listing]
            twice = sorted({q for q in client + bounces
                            if len(listing.get(q, ())) > 1 or walked.count(q) > 1})
            damage = damage_lines(err)
            assert not (torn or lost_c or lost_b or twice or damage), (
                f"{when}: spool files written by two writers?\n"
                f"  files whose records do not reach their end (records, sound bytes, size): "
                f"{dict(list(torn.items())[:8])} ({len(torn)} files)\n"
                f"  client messages logged as queued, not in the spool: {len(lost_c)} "
                f"{lost_c[:8]}\n"
                f"  bounces logged as queued, not in the spool: {len(lost_b)} {lost_b[:8]}\n"
                f"  more than once: {twice[:8]}\n"
                f"  ringmx queue: {damage[:6]}")

        check("after a clean stop", client)
        gw.start(timeout=30)
        gw.stop()
        recov = damage_lines(gw.log())
        assert not recov, f"recovery found damage: {recov[:6]}"
        # Recovery may delete a segment whose messages are all done (the
        # bounced originals): only the pending ones must be there still.
        check("after a restart", [q for q in client if q not in originals])
        assert len(client) == i + len(bounce_workers), (len(client), i + len(bounce_workers))
        assert len(bounces) == len(bounce_workers), (
            f"{len(bounces)} of {len(bounce_workers)} bounces queued; errors and warnings:\n"
            + "\n".join(ln for ln in log.splitlines() if " error: " in ln or " warning: " in ln)
            [-4000:])


if __name__ == "__main__":
    if not HAVE_AIOSMTPD:
        print("skip: aiosmtpd is not installed (Debian package python3-aiosmtpd)")
        sys.exit(77)
    ck = Checks()
    only = sys.argv[1:]  # test names, to run only those
    if only:
        for name in only:
            ck.run(globals()[name])
    else:
        ck.run_all(globals())
    if SKIPPED and not ck.failed:
        print("skipped (exit 77): " + "; ".join(SKIPPED))
        sys.exit(77)
    ck.finish()
