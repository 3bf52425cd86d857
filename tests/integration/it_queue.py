"""Integration: `ringmx queue` manages the queue (issue 17 item 3) against the
real gateway relaying to a next hop (nexthop.py: aiosmtpd) that is down, then
up: held mail stays (also across a restart and a SIGKILL), released mail
arrives once, requeued mail arrives at once, deleted mail never; holds made
while no gateway runs are kept at its start; --json parses, selectors pick
the right messages, `shape` counts them, `show` tells one message's story;
bad uses exit 2, unknown ids 1.

Every wait is bounded. Exit 77 (skipped) only if aiosmtpd cannot be imported."""
import json
import signal
import smtplib
import subprocess
import sys
import time

from rmx import RINGMX, Checks, Gateway, QUEUED
from nexthop import HAVE_AIOSMTPD, NextHop
from it_relay import wait_port_free, wait_until

# Retries far apart: what arrives early came by the operator's hand.
SLOW = ("--retry-min", "120", "--retry-max", "240")


def send(gw, sender, rcpts, token):
    with smtplib.SMTP(gw.host, gw.port, timeout=20) as c:
        c.ehlo()
        code, resp = c.mail(sender)
        assert code == 250, (code, resp)
        for r in rcpts:
            code, resp = c.rcpt(r)
            assert code == 250, (r, code, resp)
        code, resp = c.data(f"X-Token: {token}\r\nSubject: {token}\r\n\r\nqueue test\r\n")
        m = QUEUED.match("250 " + resp.decode())
        assert code == 250 and m, (code, resp)
        return m.group(1)


def tokens(hop):
    """{token: times it arrived}."""
    out = {}
    for m in hop.messages():
        i = m.content.find(b"X-Token: ")
        if i >= 0:
            t = m.content[i + 9:m.content.find(b"\r\n", i)].decode()
            out[t] = out.get(t, 0) + 1
    return out


def run(gw, *args):
    """`ringmx queue` with its exit status, stdout and stderr."""
    r = subprocess.run([RINGMX, "queue", "--spool", gw.spool] + list(args),
                       capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout, r.stderr


def jobs(gw, *args):
    """The --json listing, each line parsed on its own (json.loads fails the
    test on any format error)."""
    out = gw.queue("--json", *args)
    return [json.loads(line) for line in out.splitlines()]


def states(gw):
    return {j["queue_id"]: j["state"] for j in jobs(gw)}


def ids(gw, *args):
    return sorted(j["queue_id"] for j in jobs(gw, *args))


def all_deferred(gw, n):
    return wait_until(lambda: len(ids(gw, "--state", "deferred")) == n)


def test_hold_release_requeue_delete():
    hop = NextHop()  # down
    try:
        with Gateway("--relay-to", hop.spec, *SLOW) as gw:
            q = {t: send(gw, f"{t}@sender.test", [f"{t}@example.com"], t)
                 for t in ("held", "released", "requeued", "deleted", "kept")}
            assert all_deferred(gw, 5), gw.queue()

            out = gw.queue("hold", q["held"], q["released"])
            assert f"{q['held']}: held" in out and f"{q['released']}: held" in out, out
            assert ids(gw, "--state", "held") == sorted([q["held"], q["released"]])
            rc, out, _ = run(gw, "hold", q["held"])
            assert rc == 0 and "already held" in out, out
            rc, out, err = run(gw, "requeue", q["held"])
            assert rc == 0 and "held: release it instead" in out, (out, err)
            out = gw.queue("delete", q["deleted"])
            assert f"{q['deleted']}: deleted" in out, out
            assert q["deleted"] not in states(gw)
            # The gateway took the requests within a second (its log says so).
            assert wait_until(lambda: gw.log().count("operator: ") >= 3, 1.0), gw.log()[-2000:]

            hop.start()
            # requeue delivers at once: the next retry is two minutes away.
            t0 = time.time()
            out = gw.queue("requeue", q["requeued"])
            assert f"{q['requeued']}: requeued" in out, out
            assert hop.wait(lambda ms: "requeued" in tokens(hop), timeout=5), gw.log()[-2000:]
            print(f"requeued message arrived {time.time() - t0:.2f}s after requeue")
            time.sleep(2)
            got = tokens(hop)
            assert list(got) == ["requeued"], got
            # A flush makes every deferred message due; held ones stay.
            gw.queue("--flush")
            assert hop.wait(lambda ms: "kept" in tokens(hop)), gw.log()[-3000:]
            time.sleep(2)
            got = tokens(hop)
            assert "held" not in got and "released" not in got, got
            assert states(gw) == {q["held"]: "held", q["released"]: "held"}, states(gw)

            t0 = time.time()
            out = gw.queue("release", q["released"])
            assert f"{q['released']}: released" in out, out
            assert hop.wait(lambda ms: "released" in tokens(hop), timeout=5), gw.log()[-2000:]
            print(f"released message arrived {time.time() - t0:.2f}s after release")
            time.sleep(2)  # more than the done log's sync

            # Held across a clean restart and a crash (recovery compacts
            # the hold logs; the hold stays).
            gw.stop()
            gw.start()
            time.sleep(2)
            assert states(gw) == {q["held"]: "held"}, states(gw)
            gw.stop(signal.SIGKILL)
            wait_port_free(gw.port)  # the killed ring lets its socket go a moment later
            gw.start()
            gw.queue("--flush")
            time.sleep(2)
            assert states(gw) == {q["held"]: "held"}, states(gw)
            assert "held" not in tokens(hop)
            assert "id=%s on hold" % q["held"] in gw.log(), gw.log()[-2000:]

            gw.queue("release", "--all")
            assert hop.wait(lambda ms: "held" in tokens(hop), timeout=5), gw.log()[-2000:]
            assert wait_until(lambda: gw.count() == 0), gw.queue()
            time.sleep(1)
            got = tokens(hop)
            assert "deleted" not in got, got
            for t in ("held", "released", "requeued", "kept"):
                assert got.get(t) == 1, (t, got)
    finally:
        hop.stop()


def test_hold_while_no_gateway_runs():
    hop = NextHop()
    try:
        with Gateway("--relay-to", hop.spec, *SLOW) as gw:
            a = send(gw, "a@sender.test", ["a@example.com"], "offline-a")
            b = send(gw, "b@sender.test", ["b@example.com"], "offline-b")
            assert all_deferred(gw, 2)
            gw.stop()
            out = gw.queue("hold", a)
            assert f"{a}: held" in out and "no gateway running" in out, out
            hop.start()
            gw.start()  # recovered messages are tried at once; a stays
            assert hop.wait(lambda ms: "offline-b" in tokens(hop)), gw.log()[-2000:]
            time.sleep(1.5)
            assert "offline-a" not in tokens(hop)
            assert states(gw) == {a: "held"}
            gw.queue("release", a)
            assert hop.wait(lambda ms: "offline-a" in tokens(hop), timeout=5)
            assert b
    finally:
        hop.stop()


def test_selectors_json_and_shape():
    hop = NextHop()  # down throughout
    with Gateway("--relay-to", hop.spec, *SLOW) as gw:
        old = [send(gw, "x@one.test", ["u1@example.com", "u2@example.com"], "s-old1"),
               send(gw, "", ["postmaster@localhost"], "s-old2")]
        time.sleep(5)
        t_new = time.time()
        new = [send(gw, "y@two.test", ["v@example.com", "w@localhost"], "s-new1"),
               send(gw, "X@ONE.test", ["u1@example.com"], "s-new2")]
        assert all_deferred(gw, 4)
        everything = sorted(old + new)

        def older():
            """A --older-than that the old messages pass and the new ones not
            (they arrived 5 s apart)."""
            return f"{int(time.time() - t_new) + 2}s"

        js = jobs(gw)
        assert sorted(j["queue_id"] for j in js) == everything
        j = next(j for j in js if j["queue_id"] == new[0])
        assert j["queue_name"] == "deferred" and j["sender"] == "y@two.test", j
        assert isinstance(j["arrival_time"], int) and j["message_size"] > 0, j
        assert [r["address"] for r in j["recipients"]] == ["v@example.com", "w@localhost"], j
        assert all(r["state"] == "deferred" and "delay_reason" in r for r in j["recipients"]), j
        assert next(j for j in js if j["queue_id"] == old[1])["sender"] == ""

        assert ids(gw, "--from", "x@one.test") == sorted([old[0], new[1]])
        assert ids(gw, "--from", "one.test") == sorted([old[0], new[1]])
        assert ids(gw, "--from", "<>") == [old[1]]
        assert ids(gw, "--to", "@localhost") == sorted([old[1], new[0]])
        assert ids(gw, "--to", "u1@example.com") == sorted([old[0], new[1]])
        assert ids(gw, "--older-than", older()) == sorted(old)
        assert ids(gw, "--older-than", "1h") == []
        assert ids(gw, "--from", "one.test", "--older-than", older()) == [old[0]]
        n = int(gw.queue("--count", "--to", "example.com").strip())
        assert n == 3, n

        out = gw.queue("hold", "--to", "localhost")
        assert out.count(": held") == 2, out
        assert ids(gw, "--state", "held") == sorted([old[1], new[0]])
        assert ids(gw, "--state", "deferred") == sorted([old[0], new[1]])
        assert ids(gw, "--state", "held,deferred") == everything
        assert ids(gw, "--state", "active") == []
        # Plain listing: the sixth field says held.
        f = {ln.split()[0]: ln.split()[5] for ln in gw.queue().splitlines()}
        assert f == {old[0]: "deferred", old[1]: "held", new[0]: "held", new[1]: "deferred"}, f
        out = gw.queue("release", "--state", "held", "--from", "<>")
        assert out.strip() == f"{old[1]}: released", out
        assert ids(gw, "--state", "held") == [new[0]]

        shape = gw.queue("shape").splitlines()
        head = shape[0].split()
        assert head == ["T", "5", "10", "20", "40", "80", "160", "320", "640", "1280",
                        "1280+"], shape
        rows = {ln.split()[0]: [int(x) for x in ln.split()[1:]] for ln in shape[1:]}
        assert rows["TOTAL"][:2] == [4, 4] and sum(rows["TOTAL"][2:]) == 0, rows
        assert rows["example.com"][:2] == [3, 3], rows
        assert rows["localhost"][:2] == [2, 2], rows
        assert list(rows) == ["TOTAL", "example.com", "localhost"], rows
        rows = {ln.split()[0]: int(ln.split()[1])
                for ln in gw.queue("shape", "--sender").splitlines()[1:]}
        assert rows == {"TOTAL": 4, "one.test": 2, "two.test": 1, "(none)": 1}, rows
        rows = {ln.split()[0]: int(ln.split()[1])
                for ln in gw.queue("shape", "--older-than", older()).splitlines()[1:]}
        assert rows == {"TOTAL": 2, "example.com": 1, "localhost": 1}, rows

        out = gw.queue("show", new[0])
        assert f"queue id: {new[0]}\nstate: held" in out, out
        assert "sender: <y@two.test>" in out and "  <w@localhost> held" in out, out
        assert "history:\n  attempt 1 deferred" in out, out
        assert "headers:\n  Received: from " in out and "  X-Token: s-new1" in out, out
        assert "queue test" not in out, out

        out = gw.queue("delete", "--older-than", older())
        assert sorted(ln.split(":")[0] for ln in out.splitlines()) == sorted(old), out
        assert ids(gw) == sorted(new)
        assert [ln.split()[5] for ln in gw.queue("--all").splitlines()].count("deleted") == 2


def test_json_per_recipient_state():
    with NextHop() as hop, Gateway("--relay-to", hop.spec, *SLOW) as gw:
        hop.defer_rcpt = lambda a: a.startswith("slow")
        q = send(gw, "a@sender.test", ["fast@example.com", "slow@example.com"], "split")
        assert wait_until(lambda: states(gw).get(q) == "deferred"), gw.queue()
        assert hop.wait(lambda ms: "split" in tokens(hop))
        j = jobs(gw)[0]
        r = {x["address"]: x for x in j["recipients"]}
        assert r["fast@example.com"]["state"] == "sent", j
        assert "delay_reason" not in r["fast@example.com"], j
        assert r["slow@example.com"]["state"] == "deferred", j
        assert r["slow@example.com"]["delay_reason"].startswith(hop.temp_reply[:3]), j
        out = gw.queue("show", q)
        assert "  <fast@example.com> sent\n  <slow@example.com> deferred: " in out, out


def test_bad_uses():
    with Gateway() as gw:
        for args in (["hold"], ["release"], ["delete"], ["requeue"], ["show"],
                     ["--state", "bogus"], ["--older-than", "5x"], ["hold", "a b"],
                     ["frobnicate"], ["--json", "--count"], ["shape", "X1"],
                     ["hold", "--all", "X1"], ["--flush", "hold", "X1"]):
            rc, out, err = run(gw, *args)
            assert rc == 2 and err, (args, rc, out, err)
        for args in (["hold", "NOSUCHID"], ["delete", "NOSUCHID"], ["show", "NOSUCHID"]):
            rc, out, err = run(gw, *args)
            assert rc == 1 and "NOSUCHID: no such message waiting" in err, (args, rc, err)
        rc, out, err = run(gw, "--help")
        assert rc == 0
        for word in ("show", "shape", "hold", "release", "requeue", "delete", "--json",
                     "--from", "--to", "--older-than", "--state"):
            assert word in out, word
        rc, out, err = run(gw, "hold", "--all")
        assert rc == 0 and "no message selected" in out, (rc, out, err)


if __name__ == "__main__":
    if not HAVE_AIOSMTPD:
        print("skip: aiosmtpd is not installed (Debian package python3-aiosmtpd)")
        sys.exit(77)
    ck = Checks()
    only = sys.argv[1:]
    for name, fn in list(globals().items()):
        if name.startswith("test_") and (not only or name in only):
            ck.run(fn)
    ck.finish()
