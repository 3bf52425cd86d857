"""Integration: TLS with real clients against the real binary: openssl
s_client -starttls smtp, Python smtplib.starttls() and SMTP_SSL, swaks
--tls/--tlsc; SNI picks the certificate; STARTTLS command injection is
refused; the session restarts after STARTTLS; a stalled handshake is cut
off without disturbing other sessions."""
import glob
import os
import shutil
import socket
import ssl
import smtplib
import subprocess
import tempfile
import time

from rmx import Checks, Conn, Gateway, free_port, read_spool

CERTS = tempfile.mkdtemp(prefix="ringmx-tls-certs-")


def make_cert(name, *alt):
    key, crt = os.path.join(CERTS, name + ".key"), os.path.join(CERTS, name + ".crt")
    san = ",".join("DNS:" + n for n in (name,) + alt)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=" + name, "-addext",
                    "subjectAltName=" + san, "-days", "2", "-keyout", key, "-out", crt],
                   check=True, capture_output=True, timeout=60)
    return crt, key


MX = make_cert("mx.test")
OTHER = make_cert("other.test", "*.wild.test")


def tls_gateway(*args):
    tport = free_port()
    gw = Gateway("--tls-cert", MX[0], "--tls-key", MX[1], "--tls-cert", OTHER[0],
                 "--tls-key", OTHER[1], "--listen-tls", f"127.0.0.1:{tport}", *args)
    gw.tls_port = tport
    return gw


def ctx():
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


BODY = "Subject: tls\r\n\r\nover TLS\r\n"


def test_openssl_s_client_starttls():
    with tls_gateway() as gw:
        r = subprocess.run(["openssl", "s_client", "-starttls", "smtp", "-connect",
                            f"127.0.0.1:{gw.port}", "-servername", "mx.test", "-crlf", "-quiet",
                            "-brief"],
                           input="EHLO client.test\nQUIT\n", capture_output=True, text=True,
                           timeout=30)
        out = r.stdout + r.stderr
        assert "TLSv1.3" in out, out
        assert "250" in out and "221" in out, out
        assert "STARTTLS" not in r.stdout, r.stdout  # not offered again after TLS


def test_smtplib_starttls_and_smtps():
    with tls_gateway() as gw:
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
            c.ehlo("x.test")
            assert c.has_extn("starttls")
            c.starttls(context=ctx())
            c.ehlo("x.test")
            assert not c.has_extn("starttls")
            assert c.sendmail("a@b.test", ["u@example.com"], BODY) == {}
        with smtplib.SMTP_SSL("127.0.0.1", gw.tls_port, timeout=10, context=ctx()) as c:
            assert not c.has_extn("starttls")
            assert c.sendmail("a@b.test", ["u@example.com"], BODY) == {}
        assert gw.count() == 2
        bodies = list(read_spool(gw.spool).values())
        for b in bodies:
            assert b"with ESMTPS" in b and b"(using TLSv1." in b, b[:300]
        assert "tls: client=" in gw.log() and "cipher=" in gw.log()


def test_swaks_tls():
    if not shutil.which("swaks"):
        raise AssertionError("swaks missing")
    with tls_gateway() as gw:
        for args in (["--server", f"127.0.0.1:{gw.port}", "--tls"],
                     ["--server", f"127.0.0.1:{gw.tls_port}", "--tlsc"]):
            r = subprocess.run(["swaks", "--to", "u@example.com", "--from", "s@swaks.test"] + args,
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0 and "TLS started" in r.stdout, r.stdout + r.stderr
        assert gw.count() == 2


def peer_cn(port, sni):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with ctx().wrap_socket(s, server_hostname=sni) as t:
            der = t.getpeercert(binary_form=True)
    pem = ssl.DER_cert_to_PEM_cert(der)
    r = subprocess.run(["openssl", "x509", "-noout", "-subject"], input=pem,
                       capture_output=True, text=True, timeout=30)
    return r.stdout.strip()


def test_sni_picks_certificate():
    with tls_gateway() as gw:
        assert "mx.test" in peer_cn(gw.tls_port, "mx.test")
        assert "other.test" in peer_cn(gw.tls_port, "other.test")
        assert "other.test" in peer_cn(gw.tls_port, "a.wild.test")
        assert "mx.test" in peer_cn(gw.tls_port, None)  # no SNI: the first pair


def test_starttls_injection_refused():
    with tls_gateway() as gw:
        c = Conn("127.0.0.1", gw.port)
        c.reply()
        c.cmd("EHLO x.test")
        c.send("STARTTLS\r\nNOOP\r\n")  # NOOP injected in the clear
        code, _ = c.reply()
        assert code == 220
        t = ctx().wrap_socket(c.s, server_hostname="mx.test")
        t.settimeout(1.0)
        try:
            data = t.recv(1024)
            raise AssertionError(f"server answered the injected command: {data!r}")
        except (socket.timeout, TimeoutError):
            pass
        t.settimeout(10)
        t.sendall(b"MAIL FROM:<a@b.test>\r\n")  # the session restarted: EHLO first
        assert t.recv(1024).startswith(b"503"), "MAIL before EHLO after STARTTLS"
        t.sendall(b"EHLO x.test\r\n")
        ehlo = b""
        while b"250 " not in ehlo:
            ehlo += t.recv(4096)
        assert b"STARTTLS" not in ehlo
        t.sendall(b"STARTTLS\r\n")
        assert t.recv(1024).startswith(b"503"), "second STARTTLS"
        t.close()


def test_starttls_in_transaction_refused():
    with tls_gateway() as gw:
        c = Conn("127.0.0.1", gw.port)
        c.reply()
        c.cmd("EHLO x.test")
        c.cmd("MAIL FROM:<a@b.test>")
        code, text = c.cmd("STARTTLS")
        assert code == 503 and "5.5.1" in text, text
        c.close()


def test_stalled_handshake_cut_off():
    with tls_gateway("--tls-handshake-timeout", "1") as gw:
        stall = socket.create_connection(("127.0.0.1", gw.tls_port), timeout=10)
        t0 = time.time()
        # Another session works normally meanwhile.
        with smtplib.SMTP_SSL("127.0.0.1", gw.tls_port, timeout=10, context=ctx()) as c:
            assert c.sendmail("a@b.test", ["u@example.com"], BODY) == {}
        stall.settimeout(5)
        assert stall.recv(100) == b""  # closed by the server
        assert time.time() - t0 < 4.5
        assert "handshake timeout" in gw.log()
        garbage = socket.create_connection(("127.0.0.1", gw.tls_port), timeout=10)
        garbage.sendall(b"EHLO not-tls\r\n" * 4)
        garbage.settimeout(5)
        try:
            while garbage.recv(100):
                pass
        except ConnectionResetError:
            pass
        time.sleep(0.2)
        assert "handshake failed" in gw.log()


def test_no_certificate_no_starttls():
    with Gateway() as gw:
        c = Conn("127.0.0.1", gw.port)
        c.reply()
        code, text = c.cmd("EHLO x.test")
        assert "STARTTLS" not in text
        code, text = c.cmd("STARTTLS")
        assert code == 454 and "4.7.0" in text, text


def test_relay_starttls_to_next_hop():
    # A relays to B; B offers STARTTLS, so A's client uses it (--relay-tls
    # may, the default): B records ESMTPS in its Received: header.
    with tls_gateway() as b:
        with Gateway("--relay-to", f"127.0.0.1:{b.port}") as a:
            with smtplib.SMTP("127.0.0.1", a.port, timeout=10) as c:
                assert c.sendmail("s@a.test", ["u@example.com"], BODY) == {}
            deadline = time.time() + 20
            while time.time() < deadline and b.count() < 1:
                time.sleep(0.1)
            assert b.count() == 1, a.log()
            body = list(read_spool(b.spool).values())[0]
            assert b"with ESMTPS" in body, body[:400]
            assert "relay: 127.0.0.1:" in a.log() and "TLSv1.3" in a.log(), a.log()


def test_relay_tls_required_but_not_offered():
    # --relay-tls encrypt to a next hop without TLS: nothing is delivered in
    # clear; the message is deferred with 4.7.0.
    with Gateway() as plain:
        with Gateway("--relay-to", f"127.0.0.1:{plain.port}", "--relay-tls", "encrypt",
                     "--retry-min", "60") as a:
            with smtplib.SMTP("127.0.0.1", a.port, timeout=10) as c:
                assert c.sendmail("s@a.test", ["u@example.com"], BODY) == {}
            deadline = time.time() + 20
            while time.time() < deadline and "4.7.0" not in a.log():
                time.sleep(0.1)
            assert "4.7.0 TLS required" in a.log(), a.log()
            assert plain.count() == 0
            assert "deferred" in a.queue()


if __name__ == "__main__":
    ck = Checks()
    try:
        ck.run_all(globals())
    finally:
        shutil.rmtree(CERTS, ignore_errors=True)
    ck.finish()
