"""Integration: the gateway under a service manager, played by the test.
sd_notify: the test's own AF_UNIX datagram socket as $NOTIFY_SOCKET gets
READY=1 once the port accepts (sent by the gateway's pid), a STATUS= line
that follows the open sessions, RELOADING=1 with MONOTONIC_USEC then
READY=1 around a SIGHUP, STOPPING=1 at SIGTERM; WATCHDOG=1 pings every
half $WATCHDOG_USEC when $WATCHDOG_PID is the gateway (none when it is
another pid), withheld while a worker's loop is stuck (RINGMX_FAULT=
worker-stall) and resumed after. Socket activation: a socket bound and
listening in the test, passed as descriptor 3 with $LISTEN_FDS/$LISTEN_PID,
is the one the gateway accepts on (no socket of its own: exactly one
listener on the port, the passed one's inode); a passed socket no --listen
names, or a --listen with no socket, stops the start. Skipped (77) when the
binary is built without libsystemd."""
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time

from rmx import RINGMX, Checks, Gateway, free_port


def built_with_systemd():
    try:
        out = subprocess.run(["ldd", RINGMX], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return True
    return "libsystemd" in out


class Notify:
    """$NOTIFY_SOCKET: collects the datagrams with the sender's pid."""

    def __init__(self, tmpdir):
        self.path = os.path.join(tmpdir, "notify.sock")
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.s.bind(self.path)
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.msgs = []  # (time.monotonic(), pid, {key: value})

    def poll(self, timeout):
        """Reads what arrives within <timeout> seconds."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.s], [], [], left)[0]:
                return
            data, anc, _flags, _addr = self.s.recvmsg(4096, socket.CMSG_SPACE(12))
            pid = None
            for level, kind, body in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", body[:12])[0]
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
            self.msgs.append((time.monotonic(), pid, fields))

    def wait_for(self, key, value=None, timeout=10, since=0):
        """The first message from index <since> on with <key> (= <value>),
        reading for at most <timeout> seconds; returns its index."""
        end = time.monotonic() + timeout
        while True:
            for i in range(since, len(self.msgs)):
                f = self.msgs[i][2]
                if key in f and (value is None or f[key] == value):
                    return i
            left = end - time.monotonic()
            assert left > 0, f"no {key}={value} within {timeout}s: {self.msgs[since:]}"
            self.poll(min(left, 0.2))

    def close(self):
        self.s.close()


def test_ready_status_reload_stopping():
    gw = Gateway("--grace", "1")
    n = Notify(gw.tmp.name)
    # The watchdog is another process's: the gateway must not ping.
    gw.env = {"NOTIFY_SOCKET": n.path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}
    try:
        with gw:
            i = n.wait_for("READY", "1")
            # READY=1 means the port accepts and greets.
            c = gw.connect()
            assert c.reply()[0] == 220
            assert n.msgs[i][1] == gw.proc.pid, (n.msgs[i], gw.proc.pid)
            assert "0 sessions" in n.msgs[i][2].get("STATUS", ""), n.msgs[i]
            # A status line now and then that follows the sessions.
            k = n.wait_for("STATUS", "1 session, 0 messages queued, 2 workers", timeout=6)
            c.close()
            # SIGHUP: RELOADING=1 with the monotonic clock, then READY=1.
            gw.proc.send_signal(signal.SIGHUP)
            r = n.wait_for("RELOADING", "1", since=k + 1)
            usec = int(n.msgs[r][2]["MONOTONIC_USEC"])
            assert abs(usec / 1e6 - time.monotonic()) < 5, (usec, time.monotonic())
            n.wait_for("READY", "1", since=r + 1)
            gw.proc.send_signal(signal.SIGTERM)
            s = n.wait_for("STOPPING", "1", since=r + 1)
            assert gw.proc.wait(10) == 0
            n.poll(0.1)
            assert not any("WATCHDOG" in m[2] for m in n.msgs), n.msgs
            assert all(m[1] == gw.proc.pid for m in n.msgs), n.msgs
            assert s == len(n.msgs) - 1, n.msgs[s:]
    finally:
        n.close()


def watchdog_gateway(*args, env=None):
    gw = Gateway(*args)
    # WATCHDOG_PID must be the gateway's own pid, known only after the fork:
    # the shell's $$ is the pid that exec keeps.
    gw.argv = ["sh", "-c", 'WATCHDOG_PID=$$ exec "$@"', "sh"] + gw.argv
    n = Notify(gw.tmp.name)
    gw.env = dict({"NOTIFY_SOCKET": n.path, "WATCHDOG_USEC": "1000000"}, **(env or {}))
    return gw, n


def pings(n, since=0):
    return [m[0] for m in n.msgs[since:] if m[2].get("WATCHDOG") == "1"]


def test_watchdog_pings_while_workers_run():
    gw, n = watchdog_gateway()
    try:
        with gw:
            n.wait_for("READY", "1")
            t0 = time.monotonic()
            n.poll(2.2)
            p = pings(n)
            # Every half period: about four in two seconds.
            assert 3 <= len(p) <= 6, (len(p), n.msgs)
            assert all(m[1] == gw.proc.pid for m in n.msgs)
            assert "systemd watchdog" in gw.log(), gw.log()
            assert time.monotonic() - t0 < 5
    finally:
        n.close()


def test_watchdog_withheld_while_a_worker_is_stuck():
    # Worker 0 sleeps 5 s at its first tick (1 s after the start): the
    # pings stop once its heartbeat is 3 s old, and come back after.
    gw, n = watchdog_gateway(env={"RINGMX_FAULT": "worker-stall"})
    try:
        with gw:
            n.wait_for("READY", "1")
            n.poll(8.5)
            p = pings(n)
            gaps = [b - a for a, b in zip(p, p[1:])]
            assert gaps and max(gaps) > 1.4, gaps  # normally 0.5 s apart
            # ...and they resumed: pings after the longest gap.
            assert gaps.index(max(gaps)) < len(gaps) - 1, gaps
            log = gw.log()
            assert "no more watchdog pings" in log and "makes progress again" in log, log
    finally:
        n.close()


def passed_socket_gateway(*listens):
    """A Gateway whose listener is a socket bound here and passed as fd 3,
    with a --listen for each of <listens> ("{port}": the passed one's)."""
    port = free_port()
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(64)
    gw = Gateway(port=port)
    i = gw.argv.index("--listen")
    del gw.argv[i:i + 2]
    for a in listens:
        gw.argv[i:i] = ["--listen", a.format(port=port)]
    # Descriptor 3 and $LISTEN_PID, which only the child knows, as
    # systemd-socket-activate would set them.
    wrapper = ("import os, sys; fd = int(sys.argv[1]); os.dup2(fd, 3); fd != 3 and os.close(fd); "
               "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid())); "
               "os.execv(sys.argv[2], sys.argv[2:])")
    gw.argv = [sys.executable, "-c", wrapper, str(ls.fileno())] + gw.argv
    gw.pass_fds = (ls.fileno(),)
    return gw, ls


def listeners_on(port):
    """Inodes of the TCP sockets listening on <port> (IPv4 and IPv6)."""
    out = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    fl = line.split()
                    if fl[3] == "0A" and int(fl[1].rsplit(":", 1)[1], 16) == port:
                        out.append(int(fl[9]))
        except OSError:
            pass
    return out


def test_socket_activation_accepts_on_the_passed_socket():
    import smtplib
    gw, ls = passed_socket_gateway("127.0.0.1:{port}")
    inode = os.fstat(ls.fileno()).st_ino
    try:
        with gw:
            ls.close()  # only the gateway holds it now
            assert "socket from systemd" in gw.log(), gw.log()
            for _ in range(4):  # the workers share the one socket
                with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
                    assert c.sendmail("a@b.test", ["u@example.com"],
                                      "Subject: s\r\n\r\nx\r\n") == {}
            assert gw.count() == 4
            # No socket of its own: the one listener on the port is ours.
            assert listeners_on(gw.port) == [inode], (listeners_on(gw.port), inode)
    finally:
        ls.close()


def activation_refused(listens, want):
    gw, ls = passed_socket_gateway(*listens)
    try:
        r = subprocess.run(gw.argv, capture_output=True, text=True, timeout=30,
                           pass_fds=gw.pass_fds)
        assert r.returncode == 1, (r.returncode, r.stderr)
        assert want in r.stderr, r.stderr
    finally:
        ls.close()
        gw.tmp.cleanup()


def test_socket_activation_mismatch_stops_the_start():
    # The passed socket is on a port no --listen names.
    activation_refused([f"127.0.0.1:{free_port()}"], "no --listen option names")
    # A --listen with no socket passed for it.
    activation_refused(["127.0.0.1:{port}", "127.0.0.1:1"], "passed no socket for 127.0.0.1:1")


if __name__ == "__main__":
    if not built_with_systemd():
        print("skip: ringmx built without libsystemd (-Dsystemd=disabled)")
        sys.exit(77)
    ck = Checks()
    ck.run_all(globals())
    ck.finish()
