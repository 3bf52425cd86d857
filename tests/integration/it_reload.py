"""Integration: the configuration file and live reload against the real
binary. A gateway run from a file (--config) only; under smtp-source load (one run after
another until the reloads are done) the test rewrites the file and runs `ringmx reload` 20 times (a new domain,
the other TLS certificate, another recipient limit), with a broken file and
a bad certificate in between: no session fails, every message is spooled,
the new settings are in effect (the new domain accepted and the old one
gone, the new certificate served to openssl s_client, the new limit), a
failed reload changes nothing, and options that need a restart are named
in `ringmx reload`'s answer. `ringmx config -n` round-trips through a file."""
import os
import smtplib
import socket
import subprocess
import tempfile
import threading
import time

from rmx import RINGMX, Checks, Gateway, free_port
from it_relay import SMTP_SOURCE, wait_until

CERTS = tempfile.mkdtemp(prefix="ringmx-reload-certs-")


def make_cert(name):
    key, crt = os.path.join(CERTS, name + ".key"), os.path.join(CERTS, name + ".crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=" + name, "-addext",
                    "subjectAltName=DNS:" + name, "-days", "2", "-keyout", key, "-out", crt],
                   check=True, capture_output=True, timeout=60)
    return crt, key


ONE = make_cert("one.mx.test")
TWO = make_cert("two.mx.test")


class FileGateway(Gateway):
    """A gateway whose every option is in its configuration file."""

    def __init__(self, **keys):
        super().__init__()
        self.conf = os.path.join(self.tmp.name, "ringmx.conf")
        self.base = {"listen": f"127.0.0.1:{self.port}", "spool": self.spool,
                     "threads": "2", "hostname": "mx.test", "client-max-sessions": "0"}
        self.write(**keys)
        self.argv = [RINGMX, "--config", self.conf]

    def write(self, text=None, **keys):
        with open(self.conf + ".new", "w") as f:
            if text is not None:
                f.write(text)
            else:
                for k, v in dict(self.base, **keys).items():
                    f.write(f"{k} = {v}\n")
        os.rename(self.conf + ".new", self.conf)

    def reload(self, ok=True):
        r = subprocess.run([RINGMX, "reload", "--spool", self.spool], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == (0 if ok else 1), r.stdout + r.stderr
        return r.stdout


def served_cn(port):
    r = subprocess.run(["openssl", "s_client", "-starttls", "smtp", "-connect",
                        f"127.0.0.1:{port}", "-servername", "mx.test"],
                       input="QUIT\r\n", capture_output=True, text=True, timeout=30)
    for line in r.stdout.splitlines():
        if line.startswith("subject="):
            return line.split("CN", 1)[1].strip(" =")
    raise AssertionError("no certificate from openssl s_client:\n" + r.stdout + r.stderr)


def rcpt_code(port, addr):
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
        c.ehlo("client.test")
        c.mail("s@sender.test")
        return c.rcpt(addr)[0]


def test_reload_under_load():
    if not os.path.exists(SMTP_SOURCE):
        raise AssertionError("smtp-source missing (Debian package postfix)")
    keys = {"domains": "example.com, new0.test", "tls-cert": ONE[0], "tls-key": ONE[1],
            "max-recipients": "50"}
    gw = FileGateway(**keys)
    with gw:
        assert served_cn(gw.port) == "one.mx.test"
        done = threading.Event()
        runs = []  # one smtp-source run of 500 messages after another, until the reloads end

        def source():
            while not done.is_set() or not runs:
                runs.append(subprocess.run(
                    [SMTP_SOURCE, "-s", "5", "-m", "500", "-l", "1024", "-f",
                     "src@source.test", "-t", "dst@example.com", f"127.0.0.1:{gw.port}"],
                    capture_output=True, text=True, timeout=240))
        t = threading.Thread(target=source)
        t.start()
        try:
            for i in range(1, 21):
                cert = TWO if i % 2 else ONE
                keys = {"domains": f"example.com, new{i}.test", "tls-cert": cert[0],
                        "tls-key": cert[1], "max-recipients": str(50 + i)}
                gw.write(**keys)
                out = gw.reload()
                assert "\nreloaded\n" in out, out
                assert "domains" in out and "max-recipients" in out, out
                if i == 7:  # a broken file: nothing changes
                    gw.write(text=open(gw.conf).read() + "max-recipients = many\n")
                    out = gw.reload(ok=False)
                    assert "failed, nothing changed" in out and "ringmx.conf:" in out, out
                    assert rcpt_code(gw.port, "u@new7.test") == 250
                if i == 13:  # a certificate that does not load: the old stays
                    bad = os.path.join(gw.tmp.name, "bad.crt")
                    with open(bad, "w") as f:
                        f.write("not a certificate\n")
                    gw.write(**dict(keys, **{"tls-cert": bad}))
                    out = gw.reload(ok=False)
                    assert "failed, nothing changed" in out and "bad.crt" in out, out
                    assert served_cn(gw.port) == "two.mx.test"
        finally:
            done.set()
            t.join(240)
        for r in runs:
            assert r.returncode == 0 and not r.stderr.strip(), r.stdout + r.stderr
        sent = 500 * len(runs)
        assert wait_until(lambda: gw.count() == sent, 20), (gw.count(), sent)
        # The last good file is in effect; the earlier domain is gone.
        assert rcpt_code(gw.port, "u@new20.test") == 250
        assert rcpt_code(gw.port, "u@new19.test") == 554
        assert served_cn(gw.port) == "one.mx.test"
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
            c.ehlo("client.test")
            c.mail("s@sender.test")
            codes = [c.rcpt(f"u{k}@example.com")[0] for k in range(71)]
        assert codes[:70] == [250] * 70 and codes[70] == 452, codes
        assert "reload failed, nothing changed" in gw.log()
        print(f"{sent} messages spooled with 20 reloads (2 failed ones) during")


def test_restart_only_named():
    gw = FileGateway(domains="example.com")
    with gw:
        gw.write(domains="example.com", threads="3", **{"queue-capacity": "8192"})
        out = gw.reload()
        assert "needs a restart: threads, queue-capacity" in out, out
        assert "changed: nothing" in out, out
        assert "needs a restart (the running values stay): threads, queue-capacity" in gw.log()
        # SIGHUP itself does the same (ringmx reload only sends it).
        gw.write(domains="example.com, sig.test")
        n = gw.log().count("]: reload: ")
        gw.proc.send_signal(1)
        assert wait_until(lambda: gw.log().count("]: reload: ") > n, 10), gw.log()[-800:]
        assert rcpt_code(gw.port, "u@sig.test") == 250


def messages_until_refused(port, n):
    """MAIL codes of <n> messages in one session."""
    codes = []
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
        c.ehlo("client.test")
        for i in range(n):
            code = c.mail("s@sender.test")[0]
            codes.append(code)
            if code != 250:
                break
            c.rcpt(f"u{i}@example.com")
            c.data("Subject: rate\r\n\r\nhi\r\n")
    return codes


def test_client_limits_reload_live():
    # Started with no per-client limit at all (the table is made by the
    # reload that sets the first one), then tightened, then lifted.
    gw = FileGateway(domains="example.com")
    with gw:
        assert messages_until_refused(gw.port, 4) == [250] * 4
        gw.write(domains="example.com", **{"client-message-rate": "2/1m",
                                           "client-max-sessions": "1"})
        out = gw.reload()
        assert "client-max-sessions" in out.split("needs a restart")[0], out
        assert "client-message-rate" in out.split("needs a restart")[0], out
        assert messages_until_refused(gw.port, 4) == [250, 250, 452]
        # The session before ends on the gateway's side a moment after QUIT:
        # until then its place is taken (421), so the one held may retry.
        held = None

        def greeted():
            nonlocal held
            if held:
                held.close()
            held = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
            return held.makefile("rb").readline().startswith(b"220 ")
        assert wait_until(greeted, 5)
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
        line = s.makefile("rb").readline()
        assert line.startswith(b"421 4.7.0"), line
        s.close()
        held.close()
        gw.write(domains="example.com", **{"client-max-sessions": "3"})
        out = gw.reload()
        assert "client-message-rate" in out.split("needs a restart")[0], out
        assert wait_until(lambda: messages_until_refused(gw.port, 3) == [250] * 3, 5)


def test_next_hops_reload_live():
    # The next hops change live: a message on its way to the old hop gets
    # there (once), what comes after goes to the new one; a hop name that
    # does not resolve fails the reload; switching delivery off needs a
    # restart. The retry schedule changes with them.
    from nexthop import NextHop
    with NextHop() as a, NextHop() as b:
        base = {"domains": "example.com", "retry-min": "1", "retry-max": "2"}
        gw = FileGateway(**base, **{"relay-to": a.spec})
        with gw:
            for i in range(3):
                assert rcpt_code(gw.port, f"a{i}@example.com") == 250  # no DATA: nothing sent
            with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
                for i in range(3):
                    c.sendmail("s@sender.test", [f"first{i}@example.com"],
                               f"Subject: first {i}\r\n\r\nhi\r\n")
            assert len(a.wait_messages(3)) == 3
            a.delay = 3.0  # the next one is still on its connection at the reload
            with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
                c.sendmail("s@sender.test", ["slow@example.com"], "Subject: slow\r\n\r\nhi\r\n")
            time.sleep(1.0)
            gw.write(**dict(base, **{"relay-to": b.spec, "retry-min": "2"}))
            out = gw.reload()
            assert "relay-to" in out.split("needs a restart")[0], out
            assert "retry-min" in out.split("needs a restart")[0], out
            with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
                for i in range(5):
                    c.sendmail("s@sender.test", [f"second{i}@example.com"],
                               f"Subject: second {i}\r\n\r\nhi\r\n")
            assert len(b.wait_messages(5)) == 5, gw.log()[-1500:]
            assert [m for m in a.wait_messages(4) if "slow@example.com" in m.rcpt_tos]
            assert len(a.messages()) == 4  # the slow one once, the new ones not there
            assert wait_until(lambda: "delivers to the new next hops" in gw.log(), 10)
            # A name that does not resolve: nothing changes.
            gw.write(**base, **{"relay-to": "no-such-host.invalid:25"})
            out = gw.reload(ok=False)
            assert "\nfailed, nothing changed: next hop" in out, out
            # Delivery off needs a restart: the running hops stay.
            gw.write(**base)
            out = gw.reload()
            assert "needs a restart: relay-to" in out, out
            with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
                c.sendmail("s@sender.test", ["third@example.com"], "Subject: 3\r\n\r\nhi\r\n")
            assert len(b.wait_messages(6)) == 6


def test_config_changed_only_round_trips():
    tmp = tempfile.mkdtemp(prefix="ringmx-config-")
    args = ["--max-sessions", "77", "--domains", "a.test, b.test", "--listen",
            f"127.0.0.1:{free_port()}", "--data-buffer", "512k", "--nul", "strip",
            "--route", "a.test=10.0.0.1:25,10.0.0.2:25", "--client-message-rate", "10/1m"]
    full = subprocess.run([RINGMX, "config"] + args, capture_output=True, text=True, timeout=10)
    changed = subprocess.run([RINGMX, "config", "-n"] + args, capture_output=True, text=True,
                             timeout=10)
    assert full.returncode == 0 and changed.returncode == 0, full.stderr + changed.stderr
    assert "max-sessions = 77\n" in changed.stdout and "max-recipients" not in changed.stdout
    path = os.path.join(tmp, "ringmx.conf")
    with open(path, "w") as f:
        f.write(changed.stdout)
    again = subprocess.run([RINGMX, "config", "--config", path], capture_output=True,
                           text=True, timeout=10)
    assert again.stdout == full.stdout, again.stdout + again.stderr
    one = subprocess.run([RINGMX, "config", "--config", path, "max-sessions", "route"],
                         capture_output=True, text=True, timeout=10)
    assert one.stdout == "max-sessions = 77\nroute = a.test=10.0.0.1:25,10.0.0.2:25\n", one.stdout
    bad = subprocess.run([RINGMX, "config", "no-such-key"], capture_output=True, text=True,
                         timeout=10)
    assert bad.returncode == 2 and "unknown key 'no-such-key'" in bad.stderr, bad.stderr
    chk = subprocess.run([RINGMX, "--config", path, "--check"], capture_output=True, text=True,
                         timeout=10)
    assert chk.returncode == 0 and "configuration OK" in chk.stdout, chk.stdout + chk.stderr
    with open(path, "a") as f:
        f.write("max-sessions = 5\n")
    chk = subprocess.run([RINGMX, "--config", path, "--check"], capture_output=True, text=True,
                         timeout=10)
    assert chk.returncode == 2 and f"{path}:" in chk.stderr and "given twice" in chk.stderr, \
        chk.stderr
    ex = subprocess.run([RINGMX, "config", "--example"], capture_output=True, text=True,
                        timeout=10)
    assert "\n#max-sessions = 10000\n" in ex.stdout, ex.stdout[:500]


if __name__ == "__main__":
    c = Checks()
    c.run_all(dict(globals()))
    c.finish()
