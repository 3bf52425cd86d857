"""Integration: Postfix's smtp-source sends 10,000 messages of 1 KB over 100
concurrent sessions (-d: connections reused); afterwards `ringmx queue
--count` must say exactly 10000."""
import os
import subprocess
import time

from rmx import Checks, Gateway

SMTP_SOURCE = "/usr/sbin/smtp-source"


def test_ten_thousand():
    with Gateway("--client-max-sessions", "0") as gw:  # smtp-source is one client
        t0 = time.time()
        r = subprocess.run([SMTP_SOURCE, "-d", "-s", "100", "-m", "10000", "-l", "1024",
                            "-f", "src@source.test", "-t", "dst@example.com",
                            f"127.0.0.1:{gw.port}"],
                           capture_output=True, text=True, timeout=240)
        dt = time.time() - t0
        assert r.returncode == 0, r.stdout + r.stderr
        n = gw.count()
        print(f"10000 messages in {dt:.2f}s ({10000 / dt:.0f} msg/s); spool count {n}")
        assert n == 10000, n


def test_recipients_many():
    with Gateway() as gw:
        r = subprocess.run([SMTP_SOURCE, "-s", "10", "-m", "100", "-r", "5", "-l", "512",
                            "-t", "dst@example.com", f"127.0.0.1:{gw.port}"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert gw.count() == 100


if __name__ == "__main__":
    if not os.path.exists(SMTP_SOURCE):
        print("smtp-source is not installed (Debian package postfix)")
        raise SystemExit(1)
    ck = Checks()
    ck.run_all(globals())
    ck.finish()
