"""Integration: the command line of the real binary: --help, --version,
--check, bad options (one line on stderr, exit status 2), the queue
subcommand, and the no-option default (127.0.0.1:2525, ./spool)."""
import os
import signal
import socket
import subprocess
import tempfile
import time

from rmx import RINGMX, Checks

OPTIONS = ["--listen", "--threads", "--spool", "--hostname", "--domains", "--domains-file",
           "--relay-networks", "--max-message-size", "--max-recipients", "--max-sessions",
           "--idle-timeout", "--log-level", "--check", "--help", "--version", "--bare-lf",
           "--max-errors", "--grace", "--greet-delay", "--segment-size", "--done-log-size",
           "--commit-window", "--durability", "--queue-capacity", "--spool-min-free",
           "--max-line-length", "--long-lines", "--listen-tls", "--tls-cert", "--tls-key",
           "--tls-ciphers", "--tls-handshake-timeout", "--relay-to", "--route", "--relay-pool",
           "--retry-min", "--retry-max", "--max-queue-lifetime", "--relay-timeout", "--relay-tls",
           "--user"]


def run(*args, cwd=None):
    return subprocess.run([RINGMX] + list(args), capture_output=True, text=True, timeout=30,
                          cwd=cwd)


def test_help_lists_every_option():
    r = run("--help")
    assert r.returncode == 0
    for o in OPTIONS:
        assert o in r.stdout, o
    assert "default" in r.stdout


def test_version():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("ringmx "), r.stdout


def test_check():
    r = run("--check", "--listen", "127.0.0.1:2600", "--listen", "[::1]:2600",
            "--domains", "a.test,b.test", "--relay-networks", "10.0.0.0/8,::1/128")
    assert r.returncode == 0, r.stderr
    r = run("--check", "--domains-file", "/nonexistent/file")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr


def test_bad_options_exit_2_one_line():
    bad = [["--bogus"], ["--threads", "x"], ["--listen", "300.1.1.1:25"],
           ["--listen", "127.0.0.1"], ["--max-recipients", "-4"], ["--log-level", "loud"],
           ["--relay-networks", "10.0.0.0/33"], ["--max-message-size", "12Q"],
           ["--idle-timeout"], ["stray-argument"], ["--bare-lf", "maybe"]]
    for args in bad:
        r = run(*args)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert r.stderr.count("\n") == 1 and r.stderr.strip(), (args, r.stderr)
        assert r.stdout == "", args


def test_queue_subcommand():
    with tempfile.TemporaryDirectory() as d:
        os.mkdir(os.path.join(d, "spool"))
        r = run("queue", "--spool", os.path.join(d, "spool"), "--count")
        assert r.returncode == 0 and r.stdout.strip() == "0", (r.stdout, r.stderr)
        r = run("queue", "--spool", os.path.join(d, "nope"))
        assert r.returncode == 1 and r.stderr
        r = run("queue", "--bogus")
        assert r.returncode == 2


def test_defaults_start_on_2525():
    # The no-option default; skipped when something else holds the port.
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 2525))
    except OSError:
        print("skip: 127.0.0.1:2525 is busy")
        return
    finally:
        s.close()
    with tempfile.TemporaryDirectory() as d:
        p = subprocess.Popen([RINGMX], cwd=d, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.time() + 10
            while time.time() < deadline:
                try:
                    c = socket.create_connection(("127.0.0.1", 2525), timeout=2)
                    break
                except OSError:
                    time.sleep(0.05)
            else:
                raise AssertionError("no listener on 127.0.0.1:2525")
            assert c.recv(512).startswith(b"220 ")
            c.sendall(b"EHLO x\r\n")
            time.sleep(0.1)
            c.sendall(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<root@localhost>\r\nQUIT\r\n")
            data = b""
            while True:
                chunk = c.recv(4096)
                if not chunk:
                    break
                data += chunk
            assert b"250 2.1.5" in data, data
            assert os.path.isdir(os.path.join(d, "spool"))
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(30)
        assert p.returncode == 0


def test_spool_parents_created():
    # --spool /new/dir/spool where /new/dir is absent: made like mkdir -p,
    # the spool itself 0750; a file in the way is an error at start.
    import smtplib
    from rmx import Gateway, free_port
    with tempfile.TemporaryDirectory() as d:
        spool = os.path.join(d, "new", "dir", "spool")
        with Gateway(spool=spool + "//") as gw:
            with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
                assert c.sendmail("a@b.test", ["u@example.com"], "Subject: p\r\n\r\nx\r\n") == {}
            assert gw.count() == 1
        assert os.stat(spool).st_mode & 0o777 == 0o750 & ~current_umask()
        open(os.path.join(d, "file"), "w").close()
        r = subprocess.run([RINGMX, "--listen", f"127.0.0.1:{free_port()}", "--spool",
                            os.path.join(d, "file", "spool")], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 1 and "Not a directory" in r.stderr, (r.returncode, r.stderr)


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_second_instance_on_same_port_refused():
    # SO_REUSEPORT would let a second process share the port and split the
    # traffic; ringmx refuses to start instead.
    from rmx import Gateway
    with Gateway() as gw:
        with tempfile.TemporaryDirectory() as d:
            r = subprocess.run([RINGMX, "--listen", f"127.0.0.1:{gw.port}", "--spool",
                                os.path.join(d, "spool")], capture_output=True, text=True,
                               timeout=30)
            assert r.returncode == 1, (r.returncode, r.stderr)
            assert "already in use" in r.stderr, r.stderr


def test_user_drops_root():
    # Binds as root, then runs as --user: the process and the spool files
    # belong to that user. Needs root (skipped otherwise).
    import pwd
    from rmx import Gateway
    if os.geteuid() != 0:
        print("skip: not root")
        return
    nobody = pwd.getpwnam("nobody")
    r = run("--check", "--user", "no-such-user-here")
    assert r.returncode == 2 and "no such user" in r.stderr, r.stderr
    gw = Gateway("--user", "nobody")
    os.chmod(gw.tmp.name, 0o755)  # the user must reach its spool
    with gw:
        import smtplib
        with open(f"/proc/{gw.proc.pid}/status") as f:
            uids = [l for l in f if l.startswith("Uid:")][0].split()[1:]
        assert all(int(u) == nobody.pw_uid for u in uids), uids
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
            assert c.sendmail("a@b.test", ["u@example.com"], "Subject: u\r\n\r\nx\r\n") == {}
        segs = [f for f in os.listdir(gw.spool) if f.startswith("seg-")]
        assert segs and all(os.stat(os.path.join(gw.spool, f)).st_uid == nobody.pw_uid
                            for f in segs)
        assert "running as nobody" in gw.log()


if __name__ == "__main__":
    ck = Checks()
    ck.run_all(globals())
    ck.finish()
