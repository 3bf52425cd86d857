"""Integration: `meson install --destdir` puts what `meson introspect
--installed` promises where it promises: ringmx in sbin, ringmx-bench in
bin, the example ringmx.conf in sysconfdir/ringmx, the man pages in
man8/man5/man1 (when scdoc is there), the unit files and
their sysusers.d/tmpfiles.d companions (when built with libsystemd), with
ExecStart naming the installed ringmx; the installed binaries run. Skipped
(77) when meson is not on the PATH."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

from rmx import Checks

BUILD = os.environ.get("RINGMX_BUILD_ROOT") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build")
MESON = shutil.which("meson")


def introspect(what):
    r = subprocess.run([MESON, "introspect", BUILD, what], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_destdir_install_lands_every_file():
    opts = {o["name"]: o["value"] for o in introspect("--buildoptions")}
    prefix = opts["prefix"]
    installed = introspect("--installed")  # build path -> installed path
    dests = set(installed.values())
    want = [os.path.join(prefix, opts["sbindir"], "ringmx"),
            os.path.join(prefix, opts["bindir"], "ringmx-bench"),
            os.path.join(prefix, opts["sysconfdir"], "ringmx", "ringmx.conf.example")]
    units = [d for d in dests if d.endswith("/ringmx.service")]
    if shutil.which("scdoc") and any(d.endswith("/man8/ringmx.8") for d in dests):
        want += [os.path.join(prefix, opts["mandir"], "man8", "ringmx.8"),
                 os.path.join(prefix, opts["mandir"], "man5", "ringmx.conf.5"),
                 os.path.join(prefix, opts["mandir"], "man1", "ringmx-bench.1")]
    else:
        print("note: no scdoc at configure time: no man pages to check")
    if units:
        unitdir = os.path.dirname(units[0])
        want += [os.path.join(unitdir, "ringmx.service"), os.path.join(unitdir, "ringmx.socket"),
                 os.path.join(prefix, "lib", "sysusers.d", "ringmx.conf"),
                 os.path.join(prefix, "lib", "tmpfiles.d", "ringmx.conf")]
    else:
        print("note: built without libsystemd: no unit files to check")
    for w in want:
        assert w in dests, (w, sorted(dests))
    with tempfile.TemporaryDirectory(prefix="ringmx-install-") as d:
        r = subprocess.run([MESON, "install", "-C", BUILD, "--destdir", d, "--no-rebuild",
                            "--quiet"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        for w in want:
            assert os.path.isfile(d + w), (w, r.stdout)
        # The example is every key, commented out: as a file it changes nothing.
        ex = d + want[2]
        r = subprocess.run([d + want[0], "config", "-n", "--config", ex], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0 and r.stdout == "", (r.stdout, r.stderr)
        with open(ex) as f:
            assert "\n#max-sessions = 10000\n" in f.read()
        for exe in want[:2]:
            assert os.access(d + exe, os.X_OK), exe
            v = subprocess.run([d + exe, "--help"], capture_output=True, text=True,
                               timeout=30)
            assert v.returncode == 0 and v.stdout.strip(), (exe, v.stdout, v.stderr)
        if units:
            with open(d + os.path.join(unitdir, "ringmx.service")) as f:
                unit = f.read()
            assert f"ExecStart={want[0]} " in unit, unit
            assert "@" + "sbindir@" not in unit
        # Nothing outside the destdir's prefix.
        for root, _dirs, files in os.walk(d):
            for f in files:
                path = os.path.join(root, f)[len(d):]
                assert path.startswith(prefix.rstrip("/") + "/"), path


if __name__ == "__main__":
    if not MESON:
        print("skip: meson is not on the PATH")
        sys.exit(77)
    ck = Checks()
    ck.run_all(globals())
    ck.finish()
