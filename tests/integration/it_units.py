"""Integration: `systemd-analyze verify` finds nothing to say about the
unit files the build made (build/dist/ringmx.service, dist/ringmx.socket),
with ExecStart pointed at the binary just built (the installed path does
not exist here); and the hardening lines the unit promises are there.
Skipped (77), with the reason printed, without systemd-analyze or when
ringmx is built without libsystemd (no units then)."""
import os
import re
import shutil
import subprocess
import sys
import tempfile

from rmx import RINGMX, Checks

BUILD = os.environ.get("RINGMX_BUILD_ROOT") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build")
SRC = os.path.join(os.path.dirname(__file__), "..", "..")
SERVICE = os.path.join(BUILD, "dist", "ringmx.service")
SOCKET = os.path.join(SRC, "dist", "ringmx.socket")


def test_systemd_analyze_verify_is_silent():
    with open(SERVICE) as f:
        unit = f.read()
    m = re.search(r"^ExecStart=(\S+)", unit, re.M)
    assert m, unit
    with tempfile.TemporaryDirectory(prefix="ringmx-units-") as d:
        with open(os.path.join(d, "ringmx.service"), "w") as f:
            f.write(unit.replace(m.group(1), os.path.abspath(RINGMX), 1))
        shutil.copy(SOCKET, d)
        r = subprocess.run(["systemd-analyze", "verify", "--man=no", "ringmx.service",
                            "ringmx.socket"], cwd=d, capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, SYSTEMD_LOG_LEVEL="notice"))
        out = (r.stdout + r.stderr).strip()
        assert r.returncode == 0 and not out, (r.returncode, out)


def test_unit_is_hardened():
    with open(SERVICE) as f:
        unit = f.read()
    for line in ["Type=notify", "WatchdogSec=", "ExecReload=", "ProtectSystem=strict",
                 "ReadWritePaths=/var/spool/ringmx", "NoNewPrivileges=yes",
                 "CapabilityBoundingSet=\n", "PrivateTmp=yes",
                 "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
                 "SystemCallFilter=@system-service io_uring_setup io_uring_enter "
                 "io_uring_register", "Requires=ringmx.socket"]:
        assert line in unit, line
    # The spool the unit may write is the one it passes.
    assert "--spool /var/spool/ringmx" in unit
    # Each ListenStream= has its --listen, and the other way round.
    with open(SOCKET) as f:
        streams = re.findall(r"^ListenStream=(\S+)", f.read(), re.M)
    execstart = re.search(r"^ExecStart=.*$", unit, re.M).group(0)
    listens = re.findall(r"--listen(?:-tls)?(?:-proxy)? (\S+)", execstart)
    assert sorted(streams) == sorted(listens), (streams, listens)


if __name__ == "__main__":
    if not os.path.exists(SERVICE):
        print("skip: no unit files: ringmx is built without libsystemd")
        sys.exit(77)
    if not shutil.which("systemd-analyze"):
        print("skip: systemd-analyze is not installed (Debian package systemd)")
        sys.exit(77)
    ck = Checks()
    ck.run_all(globals())
    ck.finish()
