"""Integration: SIGTERM stops accepting, lets a transaction in progress
finish within the grace period, answers 421 to the others, exits 0; a
transaction that does not finish in time gets 421 when the grace ends."""
import signal
import socket
import time

from rmx import Checks, Gateway


def test_sigterm_drains():
    gw = Gateway("--grace", "5")
    with gw:
        idle = gw.connect()
        idle.reply()
        idle.cmd("EHLO idle")
        busy = gw.connect()
        busy.reply()
        busy.cmd("EHLO busy")
        busy.cmd("MAIL FROM:<a@b.test>")
        busy.cmd("RCPT TO:<u@example.com>")
        assert busy.cmd("DATA")[0] == 354
        busy.send("Subject: x\r\n\r\npart one\r\n")
        gw.proc.send_signal(signal.SIGTERM)
        code, text = idle.reply()
        assert code == 421 and "4.3.2" in text, text
        assert idle.closed()
        time.sleep(0.3)
        # New connections are refused (or answered 421) while draining.
        try:
            c = socket.create_connection(("127.0.0.1", gw.port), timeout=2)
            c.settimeout(2)
            data = c.recv(100)
            assert data == b"" or data.startswith(b"421"), data
        except OSError:
            pass
        busy.send("part two\r\n.\r\n")
        code, text = busy.reply()
        assert code == 250 and "queued as" in text, text
        code, text = busy.reply()
        assert code == 421, text
        assert gw.proc.wait(10) == 0
        assert gw.count() == 1


def test_grace_expires():
    gw = Gateway("--grace", "1")
    with gw:
        slow = gw.connect()
        slow.reply()
        slow.cmd("EHLO slow")
        slow.cmd("MAIL FROM:<a@b.test>")
        t0 = time.time()
        gw.proc.send_signal(signal.SIGINT)
        code, text = slow.reply()
        assert code == 421, text
        assert 0.5 < time.time() - t0 < 5
        assert gw.proc.wait(10) == 0


if __name__ == "__main__":
    ck = Checks()
    ck.run_all(globals())
    ck.finish()
