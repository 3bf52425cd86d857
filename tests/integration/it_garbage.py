"""Robustness: seeded random and hostile byte streams from many clients at
once (random bytes, long lines, NULs, half commands, pipelined junk, DATA
with random content, sudden disconnects) must never crash or wedge the
gateway: afterwards it still answers a well-behaved client, and under the
sanitizer build its log has no report. Bounded: about 10 seconds.

env: GARBAGE_SEED (default 20261125)."""
import os
import random
import socket
import threading
import time

from rmx import Checks, Conn, Gateway

SEED = int(os.environ.get("GARBAGE_SEED", "20261125"))
WORDS = [b"EHLO x", b"HELO", b"MAIL FROM:<a@b.test>", b"MAIL FROM:<>", b"RCPT TO:<u@example.com>",
         b"RCPT TO:<x@elsewhere.test>", b"DATA", b"BDAT 10", b"BDAT 0 LAST", b"RSET", b"NOOP",
         b"VRFY x", b"STARTTLS", b"QUIT", b".", b"..", b"\x00", b"MAIL FROM:<" + b"a" * 600 + b">"]


def chunk(rng):
    kind = rng.randrange(6)
    if kind == 0:
        return bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 2000)))
    if kind == 1:
        return b"X" * rng.randrange(400, 5000) + b"\r\n"
    if kind == 2:
        return rng.choice(WORDS) + rng.choice([b"\r\n", b"\n", b"\r", b""])
    if kind == 3:
        return b"".join(rng.choice(WORDS) + b"\r\n" for _ in range(rng.randrange(1, 30)))
    if kind == 4:
        return bytes(rng.choice(b"\r\n.a ") for _ in range(rng.randrange(1, 3000)))
    return b"EHLO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.com>\r\nDATA\r\n" + \
        bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 5000)))


def hostile(port, seed, deadline):
    rng = random.Random(seed)
    while time.time() < deadline:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            s.settimeout(0.05)
            for _ in range(rng.randrange(1, 20)):
                s.sendall(chunk(rng))
                try:
                    s.recv(65536)
                except (socket.timeout, TimeoutError):
                    pass
            if rng.random() < 0.5:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
        except OSError:
            pass


def test_hostile_clients():
    with Gateway("--max-errors", "50", "--idle-timeout", "5", "--bare-lf", "normalize",
                 "--greet-delay", "0") as gw:
        deadline = time.time() + 8
        ts = [threading.Thread(target=hostile, args=(gw.port, SEED + i, deadline))
              for i in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        assert gw.proc.poll() is None, "ringmx died:\n" + gw.log()[-3000:]
        c = Conn("127.0.0.1", gw.port)
        assert c.reply()[0] == 220
        assert c.cmd("EHLO ok.test")[0] == 250
        assert c.cmd("QUIT")[0] == 221
        gw.stop()
        assert gw.proc.returncode == 0, gw.log()[-3000:]


if __name__ == "__main__":
    ck = Checks()
    ck.run(test_hostile_clients)
    ck.finish()
