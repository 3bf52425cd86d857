"""Integration: the real ringmx binary driven by Python's smtplib and raw
sockets on 127.0.0.1: delivery into the spool, every policy limit seen from
a real client, pipelining, smuggling attempts, timeouts and session limits."""
import glob
import os
import smtplib
import socket
import threading
import time

from rmx import Checks, Gateway, QUEUED

BODY = "Subject: test\r\n\r\nhello\r\n.leading dot\r\n"


def test_send_and_list():
    with Gateway() as gw:
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
            code, msg = c.ehlo("client.test")
            assert code == 250
            feats = msg.decode()
            for ext in ("PIPELINING", "SIZE 10240000", "8BITMIME", "SMTPUTF8",
                        "ENHANCEDSTATUSCODES", "CHUNKING"):
                assert ext in feats, (ext, feats)
            c.mail("alice@sender.test")
            c.rcpt("bob@example.com")
            code, resp = c.data(BODY)
            assert code == 250 and QUEUED.match("250 " + resp.decode()), resp
            qid = QUEUED.match("250 " + resp.decode()).group(1)
        out = gw.queue()
        assert qid in out and "alice@sender.test" in out and "bob@example.com" in out, out
        assert gw.count() == 1
        # The stored copy: Received: first, dot-stuffing removed.
        data = b"".join(open(f, "rb").read() for f in glob.glob(gw.spool + "/seg-*"))
        assert b"Received: from client.test ([127.0.0.1])" in data, data[:400]
        # smtplib sent "..leading dot"; the stored copy has the dot once.
        assert b"\r\n.leading dot\r\n" in data and b"..leading" not in data


def test_many_recipients_and_messages_one_session():
    with Gateway() as gw:
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
            for i in range(20):
                rc = c.sendmail("a@sender.test", [f"r{j}@example.com" for j in range(5)], BODY)
                assert rc == {}
        assert gw.count() == 20


def test_relay_denied_and_relay_network():
    with Gateway() as gw:
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
            c.ehlo("x.test")
            c.mail("a@sender.test")
            code, msg = c.rcpt("victim@elsewhere.test")
            assert code == 554 and msg.startswith(b"5.7.1"), (code, msg)
            code, _ = c.rcpt("ok@EXAMPLE.com")
            assert code == 250
    with Gateway("--relay-networks", "127.0.0.0/8") as gw:
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
            assert c.sendmail("a@s.test", ["x@elsewhere.test"], BODY) == {}
        assert gw.count() == 1


ROUTED = ["user%other.test@example.com", "other.test!user@example.com",
          '"user@other.test"@example.com', '"user%other.test"@example.com',
          "@other.test:user@example.com", "USER%Other.Test@EXAMPLE.COM."]


def test_untrusted_routing_refused():
    """user%other@accepted and its kin are never taken from an outside
    client: a next hop honouring the percent hack would relay them on."""
    with Gateway() as gw:
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
            c.ehlo("x.test")
            c.mail("a@sender.test")
            for rcpt in ROUTED:  # as written: smtplib's rcpt() reparses
                code, msg = c.docmd(f"RCPT TO:<{rcpt}>")
                assert code == 554 and msg.startswith(b"5.7.1 <" + rcpt.encode() + b">: Relay "
                                                      b"access denied"), (rcpt, code, msg)
            code, msg = c.docmd("DATA")
            assert code == 554 and b"no valid recipients" in msg, (code, msg)
        assert gw.count() == 0
    for flags in (("--relay-networks", "127.0.0.1"), ("--allow-untrusted-routing",)):
        with Gateway(*flags) as gw:
            with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
                c.ehlo("x.test")
                c.mail("a@sender.test")
                for rcpt in ROUTED:
                    code, msg = c.docmd(f"RCPT TO:<{rcpt}>")
                    assert code == 250, (flags, rcpt, code, msg)
                assert c.data(BODY)[0] == 250
            assert gw.count() == 1, flags
            out = gw.queue()
            assert "user%other.test@example.com" in out, out


def test_size_limits():
    with Gateway("--max-message-size", "2000") as gw:
        c = gw.connect()
        assert c.reply()[0] == 220
        code, text = c.cmd("EHLO x")
        assert "SIZE 2000" in text
        code, text = c.cmd("MAIL FROM:<a@b.test> SIZE=5000")
        assert code == 552 and "5.3.4" in text, text
        assert c.cmd("MAIL FROM:<a@b.test> SIZE=100")[0] == 250
        assert c.cmd("RCPT TO:<u@example.com>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(("x" * 70 + "\r\n") * 50 + ".\r\n")
        code, text = c.reply()
        assert code == 552 and "5.3.4" in text, text
        assert c.cmd("NOOP")[0] == 250
        c.close()
        assert gw.count() == 0


def test_max_recipients():
    with Gateway("--max-recipients", "3") as gw:
        c = gw.connect()
        c.reply()
        c.cmd("EHLO x")
        c.cmd("MAIL FROM:<a@b.test>")
        for i in range(3):
            assert c.cmd(f"RCPT TO:<u{i}@example.com>")[0] == 250
        code, text = c.cmd("RCPT TO:<u9@example.com>")
        assert code == 452 and "4.5.3" in text, text
        c.close()


def test_pipelining_one_write():
    with Gateway() as gw:
        c = gw.connect()
        c.reply()
        c.send("EHLO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.com>\r\n"
               "RCPT TO:<v@nowhere.test>\r\nDATA\r\n")
        codes = [c.reply()[0] for _ in range(5)]
        assert codes == [250, 250, 250, 554, 354], codes
        c.send("Subject: p\r\n\r\nbody\r\n.\r\nMAIL FROM:<b@b.test>\r\nRCPT TO:<w@example.com>\r\n"
               "DATA\r\n")
        codes = [c.reply() for _ in range(4)]
        assert codes[0][0] == 250 and "queued as" in codes[0][1], codes
        assert [x[0] for x in codes[1:]] == [250, 250, 354], codes
        c.send(".\r\nQUIT\r\n")
        assert c.reply()[0] == 250
        assert c.reply()[0] == 221
        assert c.closed()
        assert gw.count() == 2


def test_smuggling_variants_never_end_data():
    # Each payload carries a fake end of data followed by a smuggled
    # transaction; none may end the data, and the message is refused under
    # the default policy only after the real CRLF.CRLF.
    fakes = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r\n.\r", b"\r.\r\n"]
    with Gateway() as gw:
        for fake in fakes:
            c = gw.connect()
            c.reply()
            c.cmd("EHLO x")
            c.cmd("MAIL FROM:<a@b.test>")
            c.cmd("RCPT TO:<u@example.com>")
            assert c.cmd("DATA")[0] == 354
            c.send(b"Subject: s\r\n\r\nhi" + fake +
                   b"MAIL FROM:<evil@b.test>\r\nRCPT TO:<v@example.com>\r\nDATA\r\nsmuggled\r\n"
                   b"\r\n.\r\n")
            code, text = c.reply()
            assert code == 550 and "5.6.0" in text, (fake, code, text)
            assert c.cmd("NOOP")[0] == 250
            c.close()
        assert gw.count() == 0, gw.queue()
    with Gateway("--bare-lf", "normalize") as gw:
        c = gw.connect()
        c.reply()
        c.cmd("EHLO x")
        c.cmd("MAIL FROM:<a@b.test>")
        c.cmd("RCPT TO:<u@example.com>")
        c.cmd("DATA")
        c.send(b"a\nb\n.\nstill data\r\n.\r\n")
        code, text = c.reply()
        assert code == 250, text
        c.close()
        assert gw.count() == 1


def test_errors_and_limits():
    with Gateway("--max-errors", "5") as gw:
        c = gw.connect()
        code, text = c.reply()
        assert code == 220 and text.startswith("220 mx.test"), text
        assert c.cmd("MAIL FROM:<a@b.test>")[0] == 503
        assert c.cmd("EHLO x")[0] == 250
        code, text = c.cmd("FOO")
        assert code == 500 and "5.5.2" in text
        code, text = c.cmd("MAIL FROM:<no-at-sign>")
        assert code == 501 and "5.1.7" in text, text
        code, text = c.cmd("X" * 600)
        assert code == 500 and "5.5.6" in text, text
        assert c.cmd("NOOP")[0] == 250  # the session goes on
        code, text = c.cmd("VRFY bob")
        assert code == 252
        assert c.cmd("RCPT TO:<x@example.com>")[0] == 503
        code, text = c.cmd("BLAH")
        assert code == 421 and "4.7.0" in text, text
        assert c.closed()


def test_error_replies_slowed_after_the_third():
    """--error-delay: the 4th and 5th error replies wait 0.4 s each, on the
    ring: a second client on the same worker is answered meanwhile."""
    with Gateway("--error-delay", "400", threads=1) as gw:
        s = socket.create_connection((gw.host, gw.port), timeout=10)
        f = s.makefile("rb")
        f.readline()
        t0 = time.time()
        s.sendall(b"FOO\r\n" * 5 + b"QUIT\r\n")
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
            t1 = time.time()
            assert c.noop()[0] == 250
            other = time.time() - t1
        codes = [f.readline()[:3] for _ in range(6)]
        took = time.time() - t0
        assert codes == [b"500"] * 5 + [b"221"], codes
        assert 0.8 <= took < 3, took
        assert other < 0.3, other
        s.close()


def test_pregreet_refused():
    with Gateway("--greet-delay", "300") as gw:
        c = gw.connect()
        c.send("EHLO early\r\n")
        code, text = c.reply()
        assert code == 554, text
        code, text = c.cmd("MAIL FROM:<a@b.test>")
        assert code == 503
        assert c.cmd("QUIT")[0] == 221
        assert "talked before greeting" in gw.log() or "pregreet" in gw.log().lower()
        ok = gw.connect()
        assert ok.reply()[0] == 220  # a patient client is greeted
        ok.close()


def test_idle_timeout():
    with Gateway("--idle-timeout", "1") as gw:
        c = gw.connect()
        c.reply()
        t0 = time.time()
        code, text = c.reply()
        assert code == 421 and "4.4.2" in text, text
        assert time.time() - t0 < 4
        assert c.closed()


def test_max_sessions():
    with Gateway("--max-sessions", "3") as gw:
        held = [gw.connect() for _ in range(3)]
        for h in held:
            assert h.reply()[0] == 220
        extra = gw.connect()
        code, text = extra.reply()
        assert code == 421 and "4.3.2" in text, text
        assert extra.closed()
        held[0].cmd("QUIT")
        held[0].close()
        time.sleep(0.3)
        again = gw.connect()
        assert again.reply()[0] == 220


def test_ipv6_listener():
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
    except OSError:
        print("skip: no IPv6 loopback")
        return
    with Gateway(host="::1") as gw:
        with smtplib.SMTP("::1", gw.port, timeout=10) as c:
            assert c.sendmail("a@b.test", ["u@example.com"], BODY) == {}
        assert gw.count() == 1


def test_concurrent_clients():
    with Gateway(threads=2) as gw:
        errors = []

        def client(n):
            try:
                with smtplib.SMTP("127.0.0.1", gw.port, timeout=20) as c:
                    for i in range(10):
                        c.sendmail(f"s{n}@b.test", ["u@example.com"], BODY + f"{n}-{i}\r\n")
            except Exception as e:
                errors.append(e)

        ts = [threading.Thread(target=client, args=(n,)) for n in range(20)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        assert not errors, errors
        assert gw.count() == 200


def test_spool_survives_restart():
    with Gateway() as gw:
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
            c.sendmail("a@b.test", ["u@example.com"], BODY)
        gw.stop()
        assert gw.count() == 1
        gw.start()
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
            c.sendmail("a@b.test", ["u@example.com"], BODY)
        assert gw.count() == 2
        assert len(glob.glob(os.path.join(gw.spool, "seg-*"))) >= 2


def queue_stats(log):
    """Sums the workers' 'queue: N routed, N received, N held' stop lines."""
    import re
    tot = [0, 0, 0]
    for m in re.finditer(r"queue: (\d+) routed, (\d+) received, (\d+) held", log):
        for i in range(3):
            tot[i] += int(m.group(i + 1))
    return tot


def test_queue_routes_every_message_once():
    # Every spooled message's descriptor crosses the lock-free queue to the
    # worker that owns its route, exactly once; after a restart the
    # recovered ones are routed again.
    with Gateway("--relay-networks", "127.0.0.0/8", threads=2) as gw:
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
            for i in range(120):
                c.sendmail("a@b.test", [f"u@d{i % 7}.test"], BODY)
        gw.stop()
        assert queue_stats(gw.log()) == [120, 120, 120], queue_stats(gw.log())
        gw.start()  # the log starts afresh
        gw.stop()
        log = gw.log()
        assert "120 messages pending" in log, log
        assert queue_stats(log) == [120, 120, 120], queue_stats(log)


if __name__ == "__main__":
    ck = Checks()
    ck.run_all(globals())
    ck.finish()
