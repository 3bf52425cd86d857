"""Integration: ringmx-bench (bench/rb_main.c) against real servers and
against scripted bad ones.

- Against ringmx and against Postfix's smtp-sink the counts must agree: the
  messages ringmx-bench reports as 250'd are exactly the messages the server
  has (ringmx: `ringmx queue --count` and the spool's bodies; smtp-sink: one
  dump file per message with -d).
- Against scripted servers (Python sockets on 127.0.0.1) every kind of bad
  input must end in a clear error and a non-zero exit, quickly: refused
  connections, garbage, early close, silence, refused recipients, 421, bare
  LF line ends.
Every run has a subprocess timeout; every server thread is bounded."""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

from rmx import Checks, Gateway, free_port, read_spool

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.environ.get("RINGMX_BENCH") or os.path.join(
    HERE, "..", "..", "build", "bench", "ringmx-bench")
SMTP_SINK = "/usr/sbin/smtp-sink"


# The bench opens all its sessions from 127.0.0.1: one client to the
# gateway's per-client limits (--client-max-sessions, default 50).
ONE_CLIENT = ("--client-max-sessions", "0")

def bench(*args, timeout=120, env=None):
    """Runs ringmx-bench; returns (returncode, stdout, stderr, json or None)."""
    with tempfile.TemporaryDirectory(prefix="rb-it-") as d:
        jpath = os.path.join(d, "r.json")
        r = subprocess.run([BENCH, "--json", jpath] + [str(a) for a in args],
                           capture_output=True, text=True, timeout=timeout, env=env)
        doc = None
        if os.path.exists(jpath):
            with open(jpath) as f:
                doc = json.load(f)
        return r.returncode, r.stdout, r.stderr, doc


def check_ok(rc, out, err, doc):
    assert rc == 0, f"rc {rc}\n{out}\n{err}"
    assert doc["errors"] == 0 and doc["failed"] == 0, out
    assert doc["messages"] == doc["attempted"], out


def test_counts_agree_with_ringmx_by_duration():
    with Gateway("--max-sessions", "2000", *ONE_CLIENT) as gw:
        rc, out, err, doc = bench("--server", f"127.0.0.1:{gw.port}", "--sessions", 300,
                                  "--duration", 3)
        check_ok(rc, out, err, doc)
        n = gw.count()
        print(f"ringmx-bench: {doc['messages']} messages in 3 s "
              f"({doc['messages_per_s']:.0f}/s), spool count {n}")
        assert doc["messages"] > 0
        assert n == doc["messages"], (n, doc["messages"])
        assert doc["replies"]["250"] == 3 * doc["messages"] + doc["sessions_opened"]
        assert doc["replies"]["220"] == doc["sessions_opened"] == 300
        assert doc["series"] and sum(s["messages"] for s in doc["series"]) == n
        assert "p99" in doc["latency_ms"]["message"]


def test_counts_agree_sizes_recipients_no_pipelining_reconnects():
    with Gateway(*ONE_CLIENT) as gw:  # 40 sessions reconnecting: closes lag behind
        rc, out, err, doc = bench("--server", f"127.0.0.1:{gw.port}", "--sessions", 40,
                                  "--messages", 3000, "--rcpts", 3, "--no-pipelining",
                                  "--size", "200-20k", "--msgs-per-conn", 7)
        check_ok(rc, out, err, doc)
        assert doc["messages"] == 3000 and gw.count() == 3000
        # 3000 / 7 per connection: at least 429 connections, each QUIT answered
        assert doc["sessions_opened"] >= 429, doc["sessions_opened"]
        assert doc["replies"]["221"] == doc["sessions_opened"]
        # one RCPT reply per recipient: 3 each, plus MAIL and end of data
        assert doc["replies"]["250"] == 5 * 3000 + doc["sessions_opened"]
        bodies = read_spool(gw.spool)
        assert len(bodies) == 3000
        sizes = sorted(len(b) for b in bodies.values())
        # the spool adds a Received: header; the message itself is 200..20k
        assert sizes[0] >= 200 and sizes[-1] <= 20 * 1024 + 400, (sizes[0], sizes[-1])
        assert sizes[-1] - sizes[0] > 10000  # a spread, not one size


def check_phase(doc, name, count):
    p = doc["latency_ms"]["phases"][name]
    assert p["count"] == count, (name, p, count)
    assert 0 <= p["p50"] <= p["p90"] <= p["p99"] <= p["max"], (name, p)
    assert p["max"] > 0, (name, p)
    return p


def test_latency_per_phase():
    """Each phase of the session in the JSON, counted once per command:
    pipelined (MAIL, RCPT, DATA in one write, each reply timed from it) and
    one command per round trip."""
    with Gateway() as gw:
        rc, out, err, doc = bench("--server", f"127.0.0.1:{gw.port}", "--sessions", 5,
                                  "--messages", 500)
        check_ok(rc, out, err, doc)
        ph = doc["latency_ms"]["phases"]
        assert set(ph) == {"connect", "ehlo", "pipelined_mail", "pipelined_rcpt",
                           "pipelined_data", "end_of_data", "quit"}, set(ph)
        for name, n in (("connect", 5), ("ehlo", 5), ("pipelined_mail", 500),
                        ("pipelined_rcpt", 500), ("pipelined_data", 500),
                        ("end_of_data", doc["messages"]), ("quit", 5)):
            check_phase(doc, name, n)
        assert ph["connect"] == doc["latency_ms"]["connect_greeting"]
        # the replies to one pipelined group come in order, timed from one write
        assert ph["pipelined_mail"]["p50"] <= ph["pipelined_data"]["p50"], ph
        assert "latency by phase (ms)" in out and "pipelined_rcpt" in out, out
        rc, out, err, doc = bench("--server", f"127.0.0.1:{gw.port}", "--sessions", 2,
                                  "--messages", 200, "--rcpts", 2, "--no-pipelining")
        check_ok(rc, out, err, doc)
        ph = doc["latency_ms"]["phases"]
        assert set(ph) == {"connect", "ehlo", "mail", "rcpt", "data", "end_of_data",
                           "quit"}, set(ph)
        for name, n in (("mail", 200), ("rcpt", 400), ("data", 200), ("end_of_data", 200)):
            check_phase(doc, name, n)


def test_counts_agree_with_smtp_sink():
    if not os.path.exists(SMTP_SINK):
        raise RuntimeError("smtp-sink is not installed (Debian package postfix)")
    d = tempfile.mkdtemp(prefix="rb-sink-")
    os.chmod(d, 0o777)
    port = free_port()
    sink = subprocess.Popen([SMTP_SINK, "-u", "nobody", "-d", os.path.join(d, "m."),
                             f"127.0.0.1:{port}", "256"])
    try:
        wait_port(port)
        rc, out, err, doc = bench("--server", f"127.0.0.1:{port}", "--sessions", 50,
                                  "--messages", 2500, "--rcpts", 2)
        check_ok(rc, out, err, doc)
        files = os.listdir(d)
        assert doc["messages"] == 2500 and len(files) == 2500, (doc["messages"], len(files))
        with open(os.path.join(d, files[0]), "rb") as f:
            head = f.read(2000)
        assert head.count(b"X-Rcpt-Args:") == 2, head
        rc, out, err, doc = bench("--server", f"127.0.0.1:{port}", "--sessions", 20,
                                  "--duration", 2)
        check_ok(rc, out, err, doc)
        assert len(os.listdir(d)) == 2500 + doc["messages"]
    finally:
        sink.kill()
        sink.wait(10)
        shutil.rmtree(d, ignore_errors=True)


def test_sweep_against_ringmx_and_a_peer():
    """--sweep 1,4 with a --peer: the runs alternate between the targets
    within each session count, and the table and the JSON have a row for
    each."""
    if not os.path.exists(SMTP_SINK):
        raise RuntimeError("smtp-sink is not installed (Debian package postfix)")
    port = free_port()
    sink = subprocess.Popen([SMTP_SINK, "-u", "nobody", "-c", f"127.0.0.1:{port}", "1000"],
                            stdout=subprocess.DEVNULL)
    try:
        wait_port(port)
        with Gateway(*ONE_CLIENT) as gw:
            rc, out, err, doc = bench("--server", f"ringmx=127.0.0.1:{gw.port}",
                                      "--peer", f"smtp-sink=127.0.0.1:{port}",
                                      "--sweep", "1,4", "--messages", 300)
            assert rc == 0, f"rc {rc}\n{out}\n{err}"
            assert gw.count() == 2 * 300
    finally:
        sink.kill()
        sink.wait(10)
    rows = [(r["target"], r["sessions"]) for r in doc["rows"]]
    assert rows == [("ringmx", 1), ("smtp-sink", 1), ("ringmx", 4), ("smtp-sink", 4)], rows
    assert doc["sweep"]["sessions"] == [1, 4], doc["sweep"]
    assert [t["label"] for t in doc["sweep"]["targets"]] == ["ringmx", "smtp-sink"]
    assert doc["sweep"]["latency_phase"] == "end_of_data"
    for r in doc["rows"]:
        assert r["messages"] == 300 and r["errors"] == 0 and r["aborted"] is None, r
        assert r["sessions_opened"] == r["sessions"], r
        e = r["latency_ms"]["phases"]["end_of_data"]
        assert e["count"] == 300 and 0 < e["p50"] <= e["p99"] <= e["max"], e
    # one table: a row per session count, the two targets side by side
    lines = out.splitlines()
    head = next(i for i, l in enumerate(lines) if l.startswith("sessions"))
    assert "ringmx" in lines[head - 1] and "smtp-sink" in lines[head - 1], out
    assert lines[head].split() == ["sessions"] + ["msg/s", "p50", "p99"] * 2, out
    for i, n in enumerate((1, 4)):
        cells = lines[head + 1 + i].split()
        assert cells[0] == str(n) and len(cells) == 7, out
        assert all(float(c) > 0 for c in cells[1:]), out
    assert "p50 by phase (ms), 4 sessions" in out, out


def test_eml_directory_arrives_intact():
    """Real messages with dots at line starts and LF line ends: what ringmx
    spools must be the message, CRLF-normalised, after un-stuffing."""
    d = tempfile.mkdtemp(prefix="rb-eml-")
    msgs = {
        "a.eml": b"Subject: one\n\n.leading dot\n..two dots\n.\nend\n",
        "b.eml": b"Subject: two\r\n\r\nno final newline",
        "c.eml": b"Subject: three\r\n\r\n" + b"x" * 70 + b"\r\n" * 3,
    }
    for name, body in msgs.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(body)
    with open(os.path.join(d, "ignored.txt"), "wb") as f:
        f.write(b"not a message")
    want = [m.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") for m in msgs.values()]
    want = [w if w.endswith(b"\r\n") else w + b"\r\n" for w in want]
    try:
        with Gateway() as gw:
            rc, out, err, doc = bench("--server", f"127.0.0.1:{gw.port}", "--sessions", 10,
                                      "--messages", 300, "--eml-dir", d)
            check_ok(rc, out, err, doc)
            bodies = read_spool(gw.spool)
            assert len(bodies) == 300
            seen = set()
            for b in bodies.values():
                match = [i for i, w in enumerate(want) if b.endswith(w)]
                assert match, b[-200:]
                seen.add(match[0])
            assert seen == {0, 1, 2}, seen
            assert "3 files" in doc["config"]["size"], doc["config"]["size"]
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_bdat():
    """--bdat: the content as one BDAT LAST chunk (RFC 3030), pipelined after
    MAIL and RCPT; .eml files go as they are (no dot-stuffing in a chunk)."""
    d = tempfile.mkdtemp(prefix="rb-bdat-")
    eml = b"Subject: chunk\r\n\r\n.a dot line\r\n.\r\nlast\r\n"
    with open(os.path.join(d, "m.eml"), "wb") as f:
        f.write(eml)
    try:
        with Gateway() as gw:
            rc, out, err, doc = bench("--server", f"127.0.0.1:{gw.port}", "--sessions", 20,
                                      "--messages", 2000, "--bdat", "--size", "100-64k",
                                      "--rcpts", 2)
            check_ok(rc, out, err, doc)
            assert "354" not in doc["replies"], doc["replies"]  # no DATA at all
            assert doc["replies"]["250"] == 4 * 2000 + doc["sessions_opened"]
            rc, out, err, doc = bench("--server", f"127.0.0.1:{gw.port}", "--sessions", 3,
                                      "--messages", 30, "--bdat", "--eml-dir", d,
                                      "--no-pipelining")
            check_ok(rc, out, err, doc)
            bodies = read_spool(gw.spool)
            assert len(bodies) == 2030
            assert sum(1 for b in bodies.values() if b.endswith(eml)) == 30
            assert doc["bytes"] == 30 * len(eml), doc["bytes"]
    finally:
        shutil.rmtree(d, ignore_errors=True)
    with Fake(smtp_server({})) as f:  # no CHUNKING on offer: a clear error, at once
        rc, out, err, doc = bench("--server", f"127.0.0.1:{f.port}", "--sessions", 2,
                                  "--messages", 10, "--bdat", timeout=30)
    assert rc == 1 and "does not offer CHUNKING" in err, err


def test_tls_starttls_and_implicit():
    d = tempfile.mkdtemp(prefix="rb-tls-")
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=mx.test", "-days", "2",
                    "-keyout", key, "-out", cert], capture_output=True, check=True, timeout=60)
    tport = free_port()
    try:
        with Gateway("--tls-cert", cert, "--tls-key", key,
                     "--listen-tls", f"127.0.0.1:{tport}") as gw:
            rc, out, err, doc = bench("--server", f"127.0.0.1:{gw.port}", "--sessions", 20,
                                      "--messages", 1000, "--tls", "starttls")
            check_ok(rc, out, err, doc)
            assert doc["config"]["tls"] == "starttls"
            # the 220 to STARTTLS comes on top of each greeting
            assert doc["replies"]["220"] == 2 * doc["sessions_opened"]
            n = doc["sessions_opened"]
            for name, count in (("starttls", n), ("tls", n), ("ehlo", 2 * n)):
                check_phase(doc, name, count)
            rc, out, err, doc = bench("--server", f"127.0.0.1:{tport}", "--sessions", 20,
                                      "--messages", 1000, "--tls", "implicit",
                                      "--msgs-per-conn", 10)
            check_ok(rc, out, err, doc)
            assert doc["sessions_opened"] >= 100
            # implicit TLS: the handshake comes first, and inside connect
            check_phase(doc, "tls", doc["sessions_opened"])
            assert "starttls" not in doc["latency_ms"]["phases"]
            ph = doc["latency_ms"]["phases"]
            assert ph["tls"]["p50"] <= ph["connect"]["p50"], ph
            assert gw.count() == 2000
    finally:
        shutil.rmtree(d, ignore_errors=True)
    with Gateway() as gw:  # no STARTTLS on offer: a clear error, at once
        t0 = time.time()
        rc, out, err, doc = bench("--server", f"127.0.0.1:{gw.port}", "--sessions", 2,
                                  "--messages", 10, "--tls", "starttls", timeout=30)
        assert rc == 1 and "does not offer STARTTLS" in err, err
        assert time.time() - t0 < 10
        assert doc["messages"] == 0


def test_open_loop_rate():
    with Gateway() as gw:
        rc, out, err, doc = bench("--server", f"127.0.0.1:{gw.port}", "--sessions", 20,
                                  "--duration", 3, "--rate", 400)
        check_ok(rc, out, err, doc)
        # a fixed schedule: 400/s for 3 s is 1200 messages, not "as fast as possible"
        assert 1190 <= doc["messages"] <= 1210, doc["messages"]
        assert gw.count() == doc["messages"]
        assert doc["config"]["rate_asked"] == 400


def test_idle_sessions_held():
    with Gateway(*ONE_CLIENT) as gw:
        p = subprocess.Popen([BENCH, "--server", f"127.0.0.1:{gw.port}", "--idle",
                              "--sessions", "500", "--duration", "3"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        established = 0
        deadline = time.time() + 10
        while time.time() < deadline and established < 500:
            r = subprocess.run(["ss", "-Htn", "state", "established",
                                f"( sport = :{gw.port} )"], capture_output=True,
                               text=True, timeout=10)
            established = len(r.stdout.splitlines())
            time.sleep(0.1)
        out, err = p.communicate(timeout=30)
        assert established == 500, established
        assert p.returncode == 0, out + err
        assert "500 opened" in out and gw.count() == 0


def test_fifteen_thousand_sessions():
    """The issue's scale: 15,000 concurrent sessions from one process on a
    machine whose open-file hard limit is 20,000 (ringmx-bench raises its
    own soft limit)."""
    # Ten messages a session: with two, the first sessions could send them
    # all before the last of 15,000 had connected (a connect whose SYN met a
    # full backlog is retried a second later), and the run ended with some
    # never opened.
    with Gateway("--max-sessions", "16000", *ONE_CLIENT) as gw:
        rc, out, err, doc = bench("--server", f"127.0.0.1:{gw.port}", "--sessions", 15000,
                                  "--messages", 150000, timeout=240)
        check_ok(rc, out, err, doc)
        assert doc["sessions_opened"] == 15000, doc["sessions_opened"]
        assert doc["replies"]["220"] == 15000 and doc["replies"]["221"] == 15000
        assert gw.count() == 150000
        print(f"15,000 sessions: peak open {doc['sessions_peak']}, "
              f"{doc['messages_per_s']:.0f} msg/s")


def test_connect_rate_ramps_up():
    with Gateway(*ONE_CLIENT) as gw:
        rc, out, err, doc = bench("--server", f"127.0.0.1:{gw.port}", "--sessions", 200,
                                  "--connect-rate", 100, "--duration", 4)
        check_ok(rc, out, err, doc)
        assert doc["sessions_opened"] == 200
        # 100 connections a second: about 100 open after one second, all 200
        # after two (the series' t=3 slot, before the end at 4 s)
        open1 = doc["series"][0]["sessions"]
        assert 80 <= open1 <= 120, open1
        assert doc["series"][2]["sessions"] == 200, doc["series"]
        g = doc["latency_ms"]["connect_greeting"]
        assert g["count"] == 200


def test_progress_line_only_when_asked_or_on_a_terminal():
    with Gateway() as gw:
        rc, out, err, doc = bench("--server", f"127.0.0.1:{gw.port}", "--sessions", 5,
                                  "--duration", 1.2)
        assert rc == 0 and err == "", repr(err)  # no terminal: quiet until the end
        rc, out, err, doc = bench("--server", f"127.0.0.1:{gw.port}", "--sessions", 5,
                                  "--duration", 1.6, "--progress")
        assert rc == 0 and "msg/s now" in err and "\x1b[K" in err, repr(err)


def test_plots():
    if not shutil.which("gnuplot"):
        raise RuntimeError("gnuplot is not installed (Debian package gnuplot-nox)")
    d = tempfile.mkdtemp(prefix="rb-plot-")
    try:
        with Gateway() as gw:
            for label in ("first", "second"):
                rc, out, err, doc = bench("--server", f"127.0.0.1:{gw.port}", "--sessions", 10,
                                          "--duration", 1.5, "--plot", d, "--label", label)
                check_ok(rc, out, err, doc)
        for f in ("throughput.svg", "latency.svg"):
            with open(os.path.join(d, f)) as fh:
                svg = fh.read()
            assert "<svg" in svg and "first" in svg and "second" in svg, f
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_bad_options():
    for args in (["--sessions", "0"], ["--size", "10-5"], ["--tls", "maybe"],
                 ["--messages", "5", "--duration", "1"], ["--server", "nohostport"],
                 ["--bogus"], ["--sessions", "30000"], ["--to", "x@y>\r\nRSET"],
                 ["--from", "<a@b>"], ["--sweep", "1,0"], ["--sweep", "1,,2"],
                 ["--sweep", "1", "--sessions", "5"], ["--peer", "=127.0.0.1:25"],
                 ["--peer", "127.0.0.1:0"], ["--sweep", "1", "--plot", "/nonexistent"],
                 ["--sweep", "1", "--idle"]):
        r = subprocess.run([BENCH] + args, capture_output=True, text=True, timeout=10)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert r.stderr.startswith("ringmx-bench:") or "usage" in r.stderr, r.stderr


# ---- scripted servers ---------------------------------------------------

def wait_port(port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class Fake:
    """A listening socket on 127.0.0.1 whose connections are handled by
    <handler>(sock) in threads; everything closes on exit."""

    def __init__(self, handler):
        self.handler = handler
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(512)
        self.ls.settimeout(0.2)
        self.port = self.ls.getsockname()[1]
        self.stop = threading.Event()
        self.socks = []
        self.t = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        while not self.stop.is_set():
            try:
                c, _ = self.ls.accept()
            except OSError:
                continue
            c.settimeout(5)
            self.socks.append(c)
            threading.Thread(target=self.run, args=(c,), daemon=True).start()

    def run(self, c):
        try:
            self.handler(c)
        except OSError:
            pass

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join(5)
        for c in self.socks:
            try:
                c.close()
            except OSError:
                pass
        self.ls.close()


def smtp_server(replies):
    """A minimal SMTP server: <replies> maps a command verb to its reply;
    DATA content is read to the end and answered with replies['.'], a BDAT
    chunk is read whole and answered with replies['BDAT']."""
    def handler(c):
        c.sendall(replies.get("greet", b"220 fake ESMTP\r\n"))
        buf = b""
        data = False
        chunk_left = 0
        while True:
            chunk = c.recv(65536)
            if not chunk:
                return
            buf += chunk
            while True:
                if data:
                    i = buf.find(b"\r\n.\r\n")
                    if i < 0:
                        break
                    buf = buf[i + 5:]
                    data = False
                    c.sendall(replies.get(".", b"250 2.0.0 ok\r\n"))
                    continue
                if chunk_left:
                    take = min(chunk_left, len(buf))
                    buf, chunk_left = buf[take:], chunk_left - take
                    if chunk_left:
                        break
                    c.sendall(replies.get("BDAT", b"250 2.0.0 ok\r\n"))
                    continue
                i = buf.find(b"\r\n")
                if i < 0:
                    break
                line, buf = buf[:i], buf[i + 2:]
                verb = line.split(b" ")[0].split(b":")[0].upper().decode()
                r = replies.get(verb, b"250 2.0.0 ok\r\n")
                if verb == "QUIT" and verb not in replies:
                    r = b"221 2.0.0 bye\r\n"
                if verb == "EHLO" and verb not in replies:
                    r = b"250-fake\r\n250 PIPELINING\r\n"
                if verb == "DATA" and r.startswith(b"354"):
                    data = True
                if verb == "BDAT":
                    chunk_left = int(line.split()[1])
                    if chunk_left:
                        continue  # the reply comes after the chunk
                    r = replies.get("BDAT", r)
                c.sendall(r)
                if verb == "QUIT" or r.startswith(b"421"):
                    return
    return handler


def expect_failure(handler, kind, *extra, timeout_s=20):
    with Fake(handler) as f:
        t0 = time.time()
        rc, out, err, doc = bench("--server", f"127.0.0.1:{f.port}", "--sessions", 4,
                                  "--messages", 40, "--max-errors", 50, *extra,
                                  timeout=timeout_s + 30)
        dt = time.time() - t0
    assert rc == 1, f"rc {rc}\n{out}\n{err}"
    assert dt < timeout_s, dt
    assert doc["errors_by_kind"][kind] > 0, (kind, doc["errors_by_kind"], out)
    assert kind in out, out  # the summary names it
    return doc, out, err


def test_unreachable_server():
    port = free_port()  # nothing listens there
    t0 = time.time()
    rc, out, err, doc = bench("--server", f"127.0.0.1:{port}", "--sessions", 50,
                              "--messages", 100, timeout=30)
    assert rc == 1 and "cannot reach the server" in err, err
    assert "Connection refused" in err, err
    assert time.time() - t0 < 5
    assert doc["messages"] == 0 and doc["aborted"]


def test_garbage_server():
    def garbage(c):
        c.sendall(b"HELLO THERE, I AM NOT SMTP\r\n")
        while c.recv(4096):
            pass
    doc, out, err = expect_failure(garbage, "protocol")
    assert doc["messages"] == 0 and "not a reply line" in out, out


def test_server_closes_early():
    def close_at_once(c):
        c.close()
    expect_failure(close_at_once, "closed")

    def close_after_mail(c):
        c.sendall(b"220 hi\r\n")
        c.recv(4096)
        c.sendall(b"250-hi\r\n250 PIPELINING\r\n")
        c.recv(4096)
        c.close()
    doc, out, err = expect_failure(close_after_mail, "closed")
    assert doc["failed"] > 0


def test_silent_server_times_out():
    def silent(c):
        time.sleep(8)
    doc, out, err = expect_failure(silent, "timeout", "--timeout", "1", timeout_s=5)
    assert "greeting" in doc["first_error"]["timeout"], doc["first_error"]
    assert "no session got a greeting" in err, err


def test_refused_recipients_counted_by_code():
    handler = smtp_server({"RCPT": b"550 5.1.1 no such user\r\n",
                           "DATA": b"554 5.5.1 no valid recipients\r\n"})
    doc, out, err = expect_failure(handler, "reply")
    assert doc["messages"] == 0 and doc["failed"] == doc["attempted"] > 0
    assert doc["errors_by_code"]["550"] == doc["attempted"], doc["errors_by_code"]
    assert "554" not in doc["errors_by_code"]  # consequence, not news


def test_refused_big_chunk_is_counted():
    """A 554 to a BDAT chunk of megabytes, whose MAIL and RCPT replies
    arrive while the chunk is still being sent: the 554 must be the reply
    counted for the message (an early version parsed a stale 250)."""
    ehlo = b"250-fake\r\n250-PIPELINING\r\n250 CHUNKING\r\n"
    handler = smtp_server({"EHLO": ehlo, "BDAT": b"554 5.7.1 no thanks\r\n"})
    doc, out, err = expect_failure(handler, "reply", "--bdat", "--size", "8m",
                                   "--messages", "6", "--sessions", "2")
    assert doc["messages"] == 0 and doc["failed"] == doc["attempted"] == 6, out
    assert doc["errors_by_code"] == {"554": 6}, doc["errors_by_code"]


def talker(after, say):
    """A server that offers CHUNKING, reads <after> octets of the client's
    first transaction and then says <say> at once, while the client is
    still sending; it answers nothing else."""
    def handler(c):
        c.sendall(b"220 talker\r\n")
        buf = b""
        while b"\r\n" not in buf:
            d = c.recv(4096)
            if not d:
                return
            buf += d
        c.sendall(b"250-talker\r\n250-PIPELINING\r\n250 CHUNKING\r\n")
        got = 0
        while got < after:
            d = c.recv(65536)
            if not d:
                return
            got += len(d)
        c.sendall(say)
        while c.recv(1 << 20):
            pass
    return handler


def test_replies_while_a_long_send_is_in_flight():
    """Replies that come while an 8 MB chunk is still being sent wait until
    the send is done (in memory up to a bound, then in TCP's window) and are
    read in order; an overlong line among them is a protocol error. An early
    version took an SQE it never prepared once its reply buffer was full
    (a stray NOP with user_data 0, or an old operation replayed): it
    crashed here."""
    args = ("--sessions", 1, "--messages", 1, "--bdat", "--size", "8m", "--timeout", 5)
    # 320 KB of 250s: MAIL, RCPT and BDAT take three, the fourth answers QUIT
    with Fake(talker(100000, b"250 2.0.0 ok\r\n" * 25000)) as f:
        rc, out, err, doc = bench("--server", f"127.0.0.1:{f.port}", *args, timeout=60)
    assert rc == 1, f"rc {rc}\n{out}\n{err}"
    assert doc["messages"] == 1 and doc["errors_by_kind"]["reply"] == 1, out
    assert "to QUIT" in doc["first_error"]["reply"], doc["first_error"]
    with Fake(talker(100000, b"250 " + b"x" * 5000 + b"\r\n")) as f:
        rc, out, err, doc = bench("--server", f"127.0.0.1:{f.port}", *args, timeout=60)
    assert rc == 1, f"rc {rc}\n{out}\n{err}"
    assert doc["errors_by_kind"]["protocol"] == 1 and "line too long" in out, out
    assert doc["messages"] == 0 and doc["failed"] == 1, out


def test_open_loop_budget_with_reconnects():
    """--rate with --messages and --msgs-per-conn 1: every due message is
    sent even though the budget is all queued long before the end."""
    with Gateway() as gw:
        rc, out, err, doc = bench("--server", f"127.0.0.1:{gw.port}", "--sessions", 10,
                                  "--rate", 50000, "--messages", 600, "--msgs-per-conn", 1)
        check_ok(rc, out, err, doc)
        assert doc["messages"] == 600 and gw.count() == 600
        # the content as counted: the whole message, without the final "."
        assert doc["bytes"] == 600 * 1024, doc["bytes"]


def test_421_and_bare_lf():
    expect_failure(smtp_server({"MAIL": b"421 4.3.2 going away\r\n"}), "reply")
    doc, out, err = expect_failure(smtp_server({"greet": b"220 bare lf\n"}), "protocol")
    assert "bare" in out, out
    # a reply code changing inside a multi-line reply
    expect_failure(smtp_server({"EHLO": b"250-one\r\n251 two\r\n"}), "protocol")


if __name__ == "__main__":
    if not os.path.exists(BENCH):
        print(f"{BENCH} is missing: build it first")
        raise SystemExit(1)
    ck = Checks()
    ck.run_all(globals())
    ck.finish()
