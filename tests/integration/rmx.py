"""Shared helpers for the integration tests: start the real ringmx binary on
127.0.0.1 with a private spool, talk to it, stop it. Every wait is bounded."""
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

RINGMX = os.environ.get("RINGMX") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "ringmx")


def free_port(family=socket.AF_INET, host="127.0.0.1"):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Gateway:
    """A running ringmx. Use as a context manager."""

    def __init__(self, *args, threads=2, spool=None, port=None, host="127.0.0.1", env=None):
        self.tmp = tempfile.TemporaryDirectory(prefix="ringmx-it-")
        self.spool = spool or os.path.join(self.tmp.name, "spool")
        self.host = host
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.port = port or free_port(fam, host)
        listen = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        self.log_path = os.path.join(self.tmp.name, "ringmx.log")
        self.argv = [RINGMX, "--listen", listen, "--spool", self.spool,
                     "--threads", str(threads), "--hostname", "mx.test",
                     "--domains", "example.com,localhost"] + list(args)
        self.proc = None
        self.env = dict(env or {})  # added to the environment at each start
        self.pass_fds = ()  # descriptors the gateway inherits (socket activation)

    def start(self, timeout=10):
        self.logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv, stdout=self.logf, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, **self.env), pass_fds=self.pass_fds)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("ringmx exited at start:\n" + self.log())
            if "listening on" in self.log():
                return self
            time.sleep(0.02)
        raise RuntimeError("ringmx did not start:\n" + self.log())

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, sig=signal.SIGTERM, timeout=40):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise RuntimeError("ringmx did not stop in time:\n" + self.log()[-4000:])
        self.check_log()
        return self.proc.returncode

    def check_log(self):
        """Fails on any sanitizer report in the gateway's output."""
        log = self.log()
        for mark in ("AddressSanitizer", "LeakSanitizer", "runtime error:", "ThreadSanitizer"):
            if mark in log:
                raise RuntimeError("sanitizer report in ringmx output:\n" + log[-6000:])

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        try:
            self.stop()
        finally:
            if self.proc and self.proc.poll() is None:
                self.proc.kill()
            self.logf.close()
            self.tmp.cleanup()

    def queue(self, *args):
        r = subprocess.run([RINGMX, "queue", "--spool", self.spool] + list(args),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def count(self):
        return int(self.queue("--count").strip())

    def connect(self, timeout=10):
        return Conn(self.host, self.port, timeout)


class Conn:
    """A raw SMTP client connection, for what smtplib will not send."""

    def __init__(self, host, port, timeout=10):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.s = socket.socket(fam, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect((host, port))
        self.rx = b""

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.s.sendall(data)

    def reply(self):
        """Reads one (possibly multi-line) reply; returns (code, text)."""
        lines = []
        while True:
            while b"\n" not in self.rx:
                chunk = self.s.recv(65536)
                if not chunk:
                    raise EOFError("connection closed; got %r" % (self.rx,))
                self.rx += chunk
            line, self.rx = self.rx.split(b"\n", 1)
            line = line.rstrip(b"\r").decode("utf-8", "replace")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return int(line[:3]), "\n".join(lines)

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def closed(self, timeout=5):
        """True when the server closes the connection within <timeout>."""
        self.s.settimeout(timeout)
        try:
            while True:
                chunk = self.s.recv(65536)
                if not chunk:
                    return True
                self.rx += chunk
        except (socket.timeout, TimeoutError):
            return False
        except ConnectionResetError:
            return True

    def close(self):
        self.s.close()


QUEUED = re.compile(r"^250 2\.0\.0 Ok: queued as ([0-9A-Za-z]+)$")


class Checks:
    """Tiny runner: each test is a function; failures are collected and the
    script exits 1 if any failed."""

    def __init__(self):
        self.failed = []

    def run(self, fn):
        t0 = time.time()
        try:
            fn()
            print(f"ok   {fn.__name__} ({time.time() - t0:.2f}s)", flush=True)
        except Exception as e:  # report and continue
            import traceback
            traceback.print_exc()
            print(f"FAIL {fn.__name__}: {e}", flush=True)
            self.failed.append(fn.__name__)

    def run_all(self, namespace):
        """Runs every test_* function of a module's namespace, in order."""
        for name, fn in list(namespace.items()):
            if name.startswith("test_"):
                self.run(fn)

    def finish(self):
        if self.failed:
            print("failed:", ", ".join(self.failed))
            sys.exit(1)
        print("all passed")


SEG_MAGIC = 0x52584d52  # "RMXR": queue/spool.h


def seg_records(data):
    """Yields (offset, env_len, body_len, qid or None) for each record of a
    segment file's bytes (format: queue/spool.h) whose header and lengths
    hold up, front to back, stopping at the first that does not. The CRC is
    checked by `ringmx queue`; callers cross-check with it."""
    import struct
    off = 0
    while off + 32 <= len(data):
        magic, version, env_len, _crc, body_len, _res = struct.unpack_from("<IIIIQQ", data, off)
        if magic != SEG_MAGIC or version != 1 or off + 32 + env_len + body_len > len(data):
            return
        env = data[off + 32:off + 32 + env_len].decode("utf-8", "replace")
        qid = next((ln[3:] for ln in env.split("\n") if ln.startswith("id ")), None)
        yield off, env_len, body_len, qid
        off += 32 + env_len + body_len


def read_spool(spool):
    """{qid: body bytes} of every record of the spool's segment files whose
    header and lengths hold up (seg_records())."""
    out = {}
    for name in sorted(os.listdir(spool)):
        if not (name.startswith("seg-") and name.endswith(".rmx")):
            continue
        with open(os.path.join(spool, name), "rb") as f:
            data = f.read()
        for off, env_len, body_len, qid in seg_records(data):
            if qid:
                out[qid] = data[off + 32 + env_len:off + 32 + env_len + body_len]
    return out


def queue_listing(gw_or_spool):
    """{qid: line fields} from `ringmx queue` (which validates every CRC)."""
    spool = gw_or_spool if isinstance(gw_or_spool, str) else gw_or_spool.spool
    r = subprocess.run([RINGMX, "queue", "--spool", spool], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    out = {}
    for line in r.stdout.splitlines():
        f = line.split()
        if f:
            out[f[0]] = f
    return out
