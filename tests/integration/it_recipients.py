"""Recipient validation at RCPT against the real binary: --recipients-file
tables (550 5.1.1 for users that do not exist, nothing spooled), the
configuration check with file and line, `ringmx reload` (SIGHUP) with
sessions keeping the tables their transaction started with, a failed reload
keeping the old tables, reloads under smtp-source load losing nothing, and
the dictionary-attack brake (421 after --max-unknown-recipients, the tarpit
of --unknown-recipient-delay blocking nobody else)."""
import os
import smtplib
import socket
import subprocess
import threading
import time

from rmx import RINGMX, Checks, Gateway
from it_relay import SMTP_SOURCE, wait_until

BODY = "Subject: rcpt\r\n\r\nhello\r\n"


def table(gw, name, text):
    path = os.path.join(gw.tmp.name, name)
    with open(path, "w" if isinstance(text, str) else "wb") as f:
        f.write(text)
    return path


def with_table(text, *args, **kw):
    """A gateway whose example.com has the table <text> (example.com's and
    localhost's domains accepted)."""
    gw = Gateway(*args, **kw)
    path = table(gw, "users", text)
    gw.argv += ["--recipients-file", path]
    return gw, path


def rcpt(c, addr):
    return c.docmd(f"RCPT TO:<{addr}>")


def test_unknown_users_refused_known_spooled():
    gw, _ = with_table("bob@example.com\nAlice@Example.com\tthe boss\n@catchall.example.com\n"
                       "# comment\n", "--domains", "example.com,catchall.example.com,localhost")
    with gw:
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
            c.ehlo("client.test")
            c.mail("a@sender.test")
            for addr in ("bob@example.com", "BOB@EXAMPLE.COM", "alice+news@example.com",
                         "anyone@catchall.example.com", "who@localhost"):
                code, msg = rcpt(c, addr)
                assert code == 250, (addr, code, msg)
            for addr in ("eve@example.com", "bob.x@example.com", "bob-x@example.com"):
                code, msg = rcpt(c, addr)
                assert code == 550 and msg == (f"5.1.1 <{addr}>: Recipient address rejected: "
                                               "User unknown").encode(), (addr, code, msg)
            code, _ = c.data(BODY)
            assert code == 250
            # A transaction of unknown users only spools nothing.
            c.mail("a@sender.test")
            assert rcpt(c, "eve@example.com")[0] == 550
            assert c.docmd("DATA")[0] == 554
        assert gw.count() == 1
        out = gw.queue()
        assert "eve@" not in out and "bob@example.com" in out, out
        log = gw.log()
        assert "recipient tables: 3 entries in 2 domains" in log, log[:2000]
        assert "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 550 5.1.1 <eve@example.com>" in log, log
        gw.stop()
        assert "recipients refused: 4 unknown users" in gw.log(), gw.log()[-2000:]


def check(*args):
    return subprocess.run([RINGMX, "--check", *args], capture_output=True, text=True,
                          timeout=30)


def test_bad_tables_are_refused_with_file_and_line():
    gw = Gateway()  # only for its temp dir
    try:
        good = table(gw, "good", "bob@example.com\n")
        r = check("--recipients-file", good)
        assert r.returncode == 0 and "1 recipient(s) in 1 domain table(s)" in r.stdout, r
        cases = {
            "noat": ("bob@example.com\nnobody\n", ":2: "),
            "binary": (b"bob@example.com\n\x00\x01\xff\xfe garbage\n", ":2: control character"),
            "longline": ("a" * (10 * 1024 * 1024) + "@example.com\n", ":1: line longer than"),
            "baddomain": ("bob@-example.com\n", ":1: "),
        }
        for name, (text, want) in cases.items():
            path = table(gw, name, text)
            r = check("--recipients-file", good, "--recipients-file", path)
            assert r.returncode == 2, (name, r)
            assert f"{path}{want}" in r.stderr, (name, r.stderr[:300])
            assert len(r.stderr) < 1000, (name, len(r.stderr))
        r = check("--recipients-file", os.path.join(gw.tmp.name, "missing"))
        assert r.returncode == 2 and "missing: No such file or directory" in r.stderr, r
        # And the gateway does not start with one.
        bad = subprocess.run([RINGMX, "--listen", "127.0.0.1:1", "--spool",
                              os.path.join(gw.tmp.name, "sp"), "--recipients-file",
                              table(gw, "bad2", "x\n")], capture_output=True, text=True,
                             timeout=30)
        assert bad.returncode == 2 and "bad2:1:" in bad.stderr, bad
    finally:
        gw.tmp.cleanup()


def reload(gw, ok=True):
    """`ringmx reload`, which waits for the gateway's answer: 0 when the
    new settings are in use, 1 when the reload failed and nothing changed."""
    r = subprocess.run([RINGMX, "reload", "--spool", gw.spool], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == (0 if ok else 1), r.stdout + r.stderr
    assert ("reloaded" if ok else "failed, nothing changed") in r.stdout, r.stdout
    return r


def reloads(gw):
    return gw.log().count("]: reload: ") + gw.log().count("reload failed")


def test_reload_new_users_and_held_snapshots():
    gw, path = with_table("bob@example.com\n")
    with gw:
        held = smtplib.SMTP("127.0.0.1", gw.port, timeout=10)
        held.ehlo("held.test")
        held.mail("a@sender.test")  # a transaction started before the reload
        with open(path, "a") as f:
            f.write("carol@example.com\n")
        n = reloads(gw)
        reload(gw)
        assert wait_until(lambda: reloads(gw) > n, 5), gw.log()[-2000:]
        assert "recipient tables 2 entries in 1 domains (were 1 in 1)" in gw.log(), gw.log()
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
            c.ehlo("new.test")
            c.mail("a@sender.test")
            assert rcpt(c, "carol@example.com")[0] == 250
        # The old transaction keeps the old table; its next one has the new.
        assert rcpt(held, "carol@example.com")[0] == 550
        assert rcpt(held, "bob@example.com")[0] == 250
        assert held.data(BODY)[0] == 250
        held.mail("a@sender.test")
        assert rcpt(held, "carol@example.com")[0] == 250
        held.rset()
        # A failed reload (a bad line, then a missing file) keeps what was.
        with open(path, "a") as f:
            f.write("broken line\n")
        n = reloads(gw)
        reload(gw, ok=False)
        assert wait_until(lambda: reloads(gw) > n, 5)
        assert f"reload failed, nothing changed: --recipients-file: {path}:3:" in gw.log()
        os.unlink(path)
        n = reloads(gw)
        reload(gw, ok=False)
        assert wait_until(lambda: reloads(gw) > n, 5)
        assert (f"reload failed, nothing changed: --recipients-file: {path}: "
                "No such file or directory") in gw.log(), gw.log()[-1000:]
        held.mail("a@sender.test")
        assert rcpt(held, "carol@example.com")[0] == 250
        assert rcpt(held, "dave@example.com")[0] == 550
        held.quit()


def test_reload_under_load_loses_nothing():
    if not os.path.exists(SMTP_SOURCE):
        print("skip: smtp-source not installed (Debian package postfix)")
        return
    users = "".join(f"u{i}@example.com\n" for i in range(1000)) + "dst@example.com\n"
    gw, path = with_table(users)
    with gw:
        done = threading.Event()
        count = [0]

        def reloader():
            while not done.is_set():
                reload(gw)
                count[0] += 1
                time.sleep(0.1)
        t = threading.Thread(target=reloader)
        t.start()
        try:
            r = subprocess.run([SMTP_SOURCE, "-s", "20", "-m", "3000", "-l", "1024",
                                "-f", "src@source.test", "-t", "dst@example.com",
                                f"127.0.0.1:{gw.port}"], capture_output=True, text=True,
                               timeout=180)
        finally:
            done.set()
            t.join(30)
        assert r.returncode == 0, r.stdout + r.stderr
        assert count[0] >= 3, count
        assert wait_until(lambda: gw.count() == 3000, 20), gw.count()
        assert "reload failed" not in gw.log()
        print(f"3000 messages with {count[0]} reloads during: all spooled")


def test_dictionary_attack_brake():
    gw, _ = with_table("bob@example.com\n", "--max-unknown-recipients", "5")
    with gw:
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
            c.ehlo("attacker.test")
            c.mail("a@sender.test")
            for i in range(5):
                assert rcpt(c, f"guess{i}@example.com")[0] == 550
            code, msg = rcpt(c, "bob@example.com")
            assert code == 421 and b"too many unknown recipients" in msg, (code, msg)
        # The session is closed; a new one may try again.
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
            assert c.sendmail("a@sender.test", ["bob@example.com"], BODY) == {}


def test_tarpit_delays_the_attacker_only():
    gw, _ = with_table("bob@example.com\n", "--unknown-recipient-delay", "400",
                       threads=1)
    with gw:
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
        f = s.makefile("rb")
        f.readline()
        t0 = time.time()
        # Pipelined: three unknown users and a known one, in one write.
        s.sendall(b"EHLO a.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<x1@example.com>\r\n"
                  b"RCPT TO:<x2@example.com>\r\nRCPT TO:<bob@example.com>\r\n"
                  b"RCPT TO:<x3@example.com>\r\nQUIT\r\n")
        # Meanwhile another client on the same (only) worker is served at once.
        t1 = time.time()
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
            assert c.sendmail("a@sender.test", ["bob@example.com"], BODY) == {}
        other = time.time() - t1
        lines = []
        while True:
            ln = f.readline()
            if not ln:
                break
            lines.append(ln)
            if ln.startswith(b"221"):
                break
        took = time.time() - t0
        codes = [ln[:3] for ln in lines if not ln.startswith(b"250-")]
        assert codes == [b"250", b"250", b"550", b"550", b"250", b"550", b"221"], lines
        assert took >= 1.1, took  # three delays of 0.4 s
        assert other < 0.4, other
        print(f"three unknown users took {took:.2f}s; another session meanwhile {other:.3f}s")
        s.close()


def test_two_delay_lengths_keep_their_own_time():
    """A session held 1.5 s (unknown user) does not hold back one held 0.2 s
    (an error after the third) that started after it on the same worker."""
    gw, _ = with_table("bob@example.com\n", "--unknown-recipient-delay", "1500",
                       "--error-delay", "200", threads=1)
    with gw:
        a = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
        a.makefile("rb").readline()
        a.sendall(b"EHLO a.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<x@example.com>\r\n")
        time.sleep(0.1)
        b = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
        fb = b.makefile("rb")
        fb.readline()
        t0 = time.time()
        b.sendall(b"FOO\r\n" * 4 + b"QUIT\r\n")
        codes = [fb.readline()[:3] for _ in range(5)]
        took = time.time() - t0
        assert codes == [b"500"] * 4 + [b"221"], codes
        assert 0.2 <= took < 1.0, took
        a.close()
        b.close()


if __name__ == "__main__":
    ck = Checks()
    ck.run_all(globals())
    ck.finish()
