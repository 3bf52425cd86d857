"""Disk-full test: the spool is a small tmpfs. With the default free-space
margin, MAIL is refused with 452 4.3.1 up front; with --spool-min-free 0 the
writes themselves hit ENOSPC and the messages get 452 4.3.1 after their
data. Nothing acknowledged is lost, nothing refused is stored, and once
space is freed the gateway accepts mail again. Needs root (mount); exits 77
(skipped) where mounting is not allowed."""
import os
import shutil
import subprocess
import sys
import tempfile
import time

from rmx import Checks, Gateway, QUEUED, queue_listing, read_spool

MB = 1 << 20


def mount_tmpfs(path, size):
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                       capture_output=True, text=True)
    return r.returncode == 0


def send(c, body):
    c.send("MAIL FROM:<a@full.test>\r\n")
    code, text = c.reply()
    if code != 250:
        return code, text
    assert c.cmd("RCPT TO:<u@example.com>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(body + b".\r\n")
    return c.reply()


def body_of(i, size):
    line = (b"%06d " % i) + b"x" * 70 + b"\r\n"
    return b"Subject: fill\r\n\r\n" + line * (size // len(line))


def fill_and_free(mnt, spool, idle):
    """Steps 2-4 on one worker. <idle>: a second session stays open beside
    the sender, so that the worker hands its batches to io_uring instead of
    writing them itself (io/commit.c, commit_alone())."""
    # 2. No margin: fill the disk until the writes fail.
    ballast = os.path.join(mnt, "ballast")
    with open(ballast, "wb") as f:
        f.write(b"\0" * MB)
    with Gateway("--spool-min-free", "0", "--segment-size", "64k", "--threads", "1",
                 spool=spool) as gw:
        other = gw.connect() if idle else None
        if other:
            other.reply()
        c = gw.connect()
        c.reply()
        c.cmd("EHLO x")
        acked, refused = {}, 0
        for i in range(200):
            body = body_of(i, 60000)
            code, text = send(c, body)
            m = QUEUED.match(text)
            if code == 250 and m:
                acked[m.group(1)] = body
            else:
                assert code == 452 and "4.3.1" in text, (code, text)
                refused += 1
                if refused >= 3:
                    break
        assert acked and refused, (len(acked), refused)
        listing = queue_listing(gw)
        bodies = read_spool(spool)
        assert set(listing) == set(acked), (len(listing), len(acked))
        for q, b in acked.items():
            assert bodies[q].endswith(b), q
        # 3. Space comes back: mail is accepted again.
        os.unlink(ballast)
        deadline = time.time() + 10
        while True:
            code, text = send(c, body_of(999, 20000))
            if code == 250:
                break
            assert code == 452, text
            assert time.time() < deadline, "no recovery after space was freed"
            time.sleep(0.5)
        assert len(queue_listing(gw)) == len(acked) + 1
        # 4. A message that streams to the disk as it arrives (past
        # --data-buffer) and meets a full disk: 452 4.3.1 at its
        # end, and nothing of it stays in the spool.
        try:
            with open(ballast, "wb") as f:  # as much as fits: the disk is full
                for _ in range(MB // 4096):
                    f.write(b"\0" * 4096)
                    f.flush()
        except OSError:
            pass
        segs = {n for n in os.listdir(spool) if n.startswith("seg-")}
        code, text = send(c, body_of(1000, 3 * MB))
        assert code == 452 and "4.3.1" in text, (code, text)
        assert len(queue_listing(gw)) == len(acked) + 1
        deadline = time.time() + 10
        while {n for n in os.listdir(spool) if n.startswith("seg-")} - segs:
            assert time.time() < deadline, os.listdir(spool)
            time.sleep(0.1)
        os.unlink(ballast)
        if other:
            other.close()
        how = "beside an idle session (through io_uring)" if idle else "alone (written by the worker)"
        print(f"{how}: {len(acked)} accepted until the disk filled, {refused} refused with "
              f"452 4.3.1, all accepted ones intact; accepting again once space "
              f"was freed; a streamed message that met the full disk got 452 and "
              f"left nothing")


def test_disk_full():
    with tempfile.TemporaryDirectory(prefix="ringmx-full-") as mnt:
        if not mount_tmpfs(mnt, "3m"):
            print("skip: cannot mount a tmpfs here (needs root)")
            sys.exit(77)
        try:
            spool = os.path.join(mnt, "spool")
            # 1. Default margin (2 x max message size) is more than the disk has.
            with Gateway(spool=spool) as gw:
                c = gw.connect()
                c.reply()
                c.cmd("EHLO x")
                code, text = c.cmd("MAIL FROM:<a@full.test>")
                assert code == 452 and "4.3.1" in text, text
                c.close()
            fill_and_free(mnt, spool, idle=False)
            shutil.rmtree(spool)
            fill_and_free(mnt, spool, idle=True)
        finally:
            subprocess.run(["umount", "-l", mnt])


if __name__ == "__main__":
    ck = Checks()
    ck.run(test_disk_full)
    ck.finish()
