"""Integration: logs a pipeline can parse (issue 17 item 2). A relay run of
the real binary (next hop: nexthop.py's aiosmtpd server) with accepted,
unknown (550 5.1.1) and bounced (next hop 550) recipients, one recipient
deferred once then delivered, and a DSN; then its log is parsed back:

- text (--log-format text, the default): every line has the syslog prefix
  "<RFC 3339 time> <host> ringmx/<program>[<pid>]: ", each message's lines
  come in order (client=, message-id=, from= (queue active), to= ...
  status=, removed), sizes match the bytes the next hop got, and the real
  pflogsumm (Debian package, --syslog-name=ringmx) counts as many messages
  received, delivered, deferred, bounced and rejected as the test caused;
- JSON (--log-format json): every line is one JSON object, with the same
  fields, and the same checks hold on them.

Both forms are read into the same event dicts and checked by one function:
the JSON keys are the text's field names. Every wait is bounded."""
import json
import os
import re
import smtplib
import subprocess
import sys
import time

from rmx import Checks, Gateway, QUEUED
from nexthop import HAVE_AIOSMTPD, NextHop

PFLOGSUMM = "/usr/sbin/pflogsumm"
FAST = ("--retry-min", "1", "--retry-max", "2")
WAIT = 30

PREFIX = re.compile(r"^(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (?P<host>\S+) "
                    r"(?P<program>ringmx/[a-z]+)\[(?P<pid>\d+)\]: (?P<rest>.*)$")
QID = r"(?P<qid>[0-9A-Za-z]+)"
TEXT_EVENTS = [
    ("connect", re.compile(r"^connect from (?P<client>\S+)$")),
    ("disconnect", re.compile(r"^disconnect from (?P<client>\S+)(?P<cmds>( [a-z]+=\d+(/\d+)?)+)$")),
    ("client", re.compile(rf"^{QID}: client=(?P<client>\S+)$")),
    ("message-id", re.compile(rf"^{QID}: message-id=(?P<message_id>.*)$")),
    ("queued", re.compile(rf"^{QID}: from=<(?P<from>[^>]*)>, size=(?P<size>\d+), "
                          r"nrcpt=(?P<nrcpt>\d+) \(queue active\)$")),
    ("delivery", re.compile(rf"^{QID}: to=<(?P<to>[^>]*)>, relay=(?P<relay>[^,]+), "
                            r"delay=(?P<delay>\d+), delays=(?P<delays>[0-9./]+), "
                            r"dsn=(?P<dsn>\d\.\d+\.\d+), status=(?P<status>\w+) "
                            r"\((?P<reply>.*)\)$")),
    ("removed", re.compile(rf"^{QID}: removed$")),
    ("bounce", re.compile(rf"^{QID}: sender non-delivery notification: "
                          r"(?P<bounce_qid>[0-9A-Za-z]+)$")),
    ("reject", re.compile(r"^NOQUEUE: reject: (?P<verb>[A-Z]+) from (?P<client>\S+?): "
                          r"(?P<reply>.*?); from=<(?P<from>[^>]*)> to=<(?P<to>[^>]*)> "
                          r"proto=(?P<proto>E?SMTP) helo=<(?P<helo>[^>]*)>$")),
]
WORDS = {"warning: ": "warn", "error: ": "error", "debug: ": "debug"}


def parse_text(log):
    """The events of a text log, as the JSON form names them. Every line must
    carry the syslog prefix."""
    events = []
    for n, line in enumerate(log.splitlines()):
        m = PREFIX.match(line)
        assert m, f"line {n + 1} has no syslog prefix: {line!r}"
        ev = {"time": m["time"], "host": m["host"], "program": m["program"],
              "pid": int(m["pid"]), "level": "info"}
        rest = m["rest"]
        for name, rx in TEXT_EVENTS:
            e = rx.match(rest)
            if e:
                ev["event"] = name
                ev.update({k: v for k, v in e.groupdict().items() if v is not None})
                break
        else:
            for w, lvl in WORDS.items():
                if rest.startswith(w):
                    ev["level"] = lvl
                    rest = rest[len(w):]
            ev["message"] = rest
        for k in ("size", "nrcpt", "delay"):
            if k in ev:
                ev[k] = int(ev[k])
        if ev.get("event") == "disconnect":
            cmds = {}
            for verb, ok, sent in re.findall(r" ([a-z]+)=(\d+)(?:/(\d+))?", ev.pop("cmds")):
                cmds[verb] = [int(ok), int(sent or ok)]
            ev["commands_total"] = cmds.pop("commands")
            ev["commands"] = cmds
        events.append(ev)
    return events


def parse_json(log):
    events = []
    for n, line in enumerate(log.splitlines()):
        try:
            ev = json.loads(line)
        except ValueError as e:
            raise AssertionError(f"line {n + 1} is not JSON ({e}): {line!r}")
        assert isinstance(ev, dict), line
        for k in ("time", "host", "program", "pid", "level"):
            assert k in ev, f"line {n + 1} has no {k}: {line}"
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", ev["time"]), line
        assert ev["level"] in ("error", "warn", "info", "debug"), line
        assert ("event" in ev) != ("message" in ev), line
        events.append(ev)
    return events


def send_all(gw):
    """The traffic: 4 sessions of 3 messages; known users u<i>, unknown
    nobody<i> (550 5.1.1 at RCPT), late@ (the next hop defers it once),
    bad@ (the next hop refuses it: a bounce to the sender). Returns what was
    sent and what the gateway answered."""
    sent = {"msgs": {}, "rejected": [], "sessions": []}
    i = 0
    for s in range(4):
        sess = {"rcpt_ok": 0, "rcpt": 0, "mail": 0, "data": 0}
        with smtplib.SMTP(gw.host, gw.port, timeout=20) as c:
            c.ehlo("client.test")
            for _ in range(3):
                sender = f"s{i}@sender.test"
                rcpts = [f"u{i}@example.com"]
                if i % 3 == 1:
                    rcpts.append(f"u{i}b@example.com")
                if i == 4:
                    rcpts.append("late@example.com")
                if i == 7:
                    rcpts.append("bad@example.com")
                unknown = [f"nobody{i}@example.com"] * (1 if i % 2 == 0 else 0)
                if i == 9:
                    unknown.append("nobody9b@example.com")
                token = f"X-Token: t{i}\r\n"
                mid = f"<m{i}.log@sender.test>" if i % 4 != 3 else None
                body = (token + (f"Message-ID: {mid}\r\n" if mid else "") +
                        f"Subject: log test {i}\r\n\r\nline one\r\n..dot\r\n").encode()
                assert c.mail(sender)[0] == 250
                sess["mail"] += 1
                order = rcpts[:1] + unknown + rcpts[1:]
                for r in order:
                    code, msg = c.rcpt(r)
                    sess["rcpt"] += 1
                    if r in unknown:
                        assert code == 550, (r, code, msg)
                        sent["rejected"].append((sender, r))
                    else:
                        assert code == 250, (r, code, msg)
                        sess["rcpt_ok"] += 1
                code, resp = c.data(body)
                sess["data"] += 1
                m = QUEUED.match("250 " + resp.decode())
                assert code == 250 and m, (code, resp)
                sent["msgs"][m.group(1)] = {"from": sender, "rcpts": rcpts, "mid": mid,
                                            "token": f"t{i}", "body": body}
                i += 1
        sent["sessions"].append(sess)
    return sent


def run(fmt):
    """One relay run; returns (log text, what was sent, next hop messages)."""
    late = {"n": 0}

    def defer(addr):
        if addr.startswith("late@"):
            late["n"] += 1
            return late["n"] == 1
        return False
    users = "".join(f"u{i}@example.com\nu{i}b@example.com\n" for i in range(20))
    users += "late@example.com\nbad@example.com\n"
    with NextHop() as hop:
        hop.defer_rcpt = defer
        gw = Gateway("--relay-to", hop.spec, "--log-format", fmt, *FAST)
        path = os.path.join(gw.tmp.name, "users")
        with open(path, "w") as f:
            f.write(users)
        gw.argv += ["--recipients-file", path]
        with gw:
            sent = send_all(gw)
            n_rm = len(sent["msgs"]) + 1  # and the DSN
            word = '"event":"removed"' if fmt == "json" else ": removed"

            def done():
                return gw.count() == 0 and gw.log().count(word) >= n_rm
            deadline = time.time() + WAIT
            while not done() and time.time() < deadline:
                time.sleep(0.2)
            assert done(), f"not all delivered and removed:\n{gw.queue()}\n{gw.log()[-3000:]}"
            assert late["n"] == 2, late
            gw.stop()  # every worker's lines out
            log = gw.log()
        return log, sent, hop.messages(), hop.port


def check_events(events, sent, hop_msgs, port):
    """The checks both forms must pass, on their events."""
    msgs = sent["msgs"]
    mail = [e for e in events if "event" in e]
    assert all(e["level"] == "info" for e in mail)
    assert len({e["pid"] for e in events}) == 1 and {e["host"] for e in events} == {"mx.test"}
    by_qid = {}
    for e in mail:
        if "qid" in e:
            by_qid.setdefault(e["qid"], []).append(e)
    # The DSN: the only message the test did not send.
    dsn_qids = [q for q in by_qid if q not in msgs]
    assert len(dsn_qids) == 1, dsn_qids
    dsn = dsn_qids[0]
    progs = {"client": "ringmx/smtpd", "message-id": "ringmx/cleanup", "queued": "ringmx/qmgr",
             "delivery": "ringmx/smtp", "removed": "ringmx/qmgr", "bounce": "ringmx/bounce",
             "connect": "ringmx/smtpd", "disconnect": "ringmx/smtpd", "reject": "ringmx/smtpd"}
    for e in mail:
        assert e["program"] == progs[e["event"]], e
    contents = {}
    for m in hop_msgs:
        tok = re.search(rb"X-Token: (t\d+)", m.content)  # a DSN quotes it too
        contents.setdefault(tok.group(1).decode() if tok and m.mail_from else "dsn",
                            []).append(m)
    for qid, want in msgs.items():
        evs = by_qid.get(qid, [])
        kinds = [e["event"] for e in evs]
        # client=, [message-id=], from= ... (queue active), to= lines, [bounce], removed
        head = ["client"] + (["message-id"] if want["mid"] else []) + ["queued"]
        assert kinds[:len(head)] == head, (qid, kinds)
        assert kinds[-1] == "removed" and kinds.count("removed") == 1, (qid, kinds)
        middle = kinds[len(head):-1]
        assert set(middle) <= {"delivery", "bounce"}, (qid, kinds)
        assert evs[0]["client"] == "unknown[127.0.0.1]", evs[0]
        if want["mid"]:
            assert evs[1]["message_id"] == want["mid"], evs[1]
        q = evs[len(head) - 1]
        assert q["from"] == want["from"] and q["nrcpt"] == len(want["rcpts"]), (q, want)
        # size= is what the next hop got: the Received: header and the content
        got = contents[want["token"]]
        assert all(len(m.content) == q["size"] for m in got), (q["size"], [len(m.content) for m in got])
        assert q["size"] > len(want["body"])
        dl = [e for e in evs if e["event"] == "delivery"]
        final = {}
        for e in dl:
            assert e["relay"] == f"127.0.0.1[127.0.0.1]:{port}", e
            assert re.match(r"^\d+(\.\d\d)?(/\d+(\.\d\d)?){3}$", e["delays"]), e
            assert e["dsn"][0] == {"sent": "2", "deferred": "4", "bounced": "5"}[e["status"]], e
            assert e["to"] not in final, f"{e['to']} has a line after its final status: {evs}"
            if e["status"] != "deferred":
                final[e["to"]] = e["status"]
        want_final = {r: ("bounced" if r.startswith("bad@") else "sent") for r in want["rcpts"]}
        assert final == want_final, (qid, final, want_final)
        if "late@example.com" in want["rcpts"]:
            late = [e["status"] for e in dl if e["to"] == "late@example.com"]
            assert late == ["deferred", "sent"], late
            assert "4.3.0" in [e["dsn"] for e in dl if e["status"] == "deferred"][0]
        if "bad@example.com" in want["rcpts"]:
            b = [e for e in evs if e["event"] == "bounce"]
            assert len(b) == 1 and b[0]["bounce_qid"] == dsn, (b, dsn)
            assert kinds.index("bounce") > max(i for i, k in enumerate(kinds) if k == "delivery")
            bounce_from = want["from"]
        else:
            assert "bounce" not in kinds, kinds
    # The DSN: from <>, to the sender of the bounced recipient, no client=.
    kinds = [e["event"] for e in by_qid[dsn]]
    assert kinds == ["queued", "delivery", "removed"], kinds
    assert by_qid[dsn][0]["from"] == "" and by_qid[dsn][0]["nrcpt"] == 1
    assert [len(m.content) for m in contents["dsn"]] == [by_qid[dsn][0]["size"]], contents["dsn"]
    assert by_qid[dsn][1]["to"] == bounce_from and by_qid[dsn][1]["status"] == "sent"
    # Sessions: one connect and one disconnect each, with what they did.
    conns = [e for e in mail if e["event"] == "connect"]
    discs = [e for e in mail if e["event"] == "disconnect"]
    assert len(conns) == len(discs) == len(sent["sessions"]), (len(conns), len(discs))
    assert all(e["client"] == "unknown[127.0.0.1]" for e in conns + discs)
    got = sorted((d["commands"]["rcpt"], d["commands"]["mail"], d["commands"]["data"],
                  d["commands"]["ehlo"], d["commands"]["quit"]) for d in discs)
    want = sorted(([s["rcpt_ok"], s["rcpt"]], [s["mail"]] * 2, [s["data"]] * 2, [1, 1], [1, 1])
                  for s in sent["sessions"])
    assert got == want, (got, want)
    for d in discs:
        ok = sum(v[0] for v in d["commands"].values())
        n = sum(v[1] for v in d["commands"].values())
        assert d["commands_total"] == [ok, n], d
    # Rejections: one line per refused recipient, with the envelope.
    rej = [e for e in mail if e["event"] == "reject"]
    assert sorted((e["from"], e["to"]) for e in rej) == sorted(sent["rejected"]), rej
    for e in rej:
        assert e["verb"] == "RCPT" and e["proto"] == "ESMTP" and e["helo"] == "client.test", e
        assert e["reply"].startswith(f"550 5.1.1 <{e['to']}>: Recipient address rejected"), e
        assert e["client"] == "unknown[127.0.0.1]", e


def expected_counts(sent):
    msgs = sent["msgs"].values()
    delivered = sum(1 for m in msgs for r in m["rcpts"] if not r.startswith("bad@")) + 1  # + DSN
    return {"received": len(sent["msgs"]), "delivered": delivered, "deferred": 1,
            "bounced": 1, "rejected": len(sent["rejected"])}


def pflogsumm(path):
    """pflogsumm's Grand Totals: {"received": n, ...}."""
    r = subprocess.run([PFLOGSUMM, "--syslog-name=ringmx", path], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = {}
    for m in re.finditer(r"^\s*(\d+)([km]?)\s+(received|delivered|forwarded|deferred|bounced|"
                         r"rejected|bytes received)\b", r.stdout, re.M):
        assert not m.group(2), m.group(0)
        out.setdefault(m.group(3), int(m.group(1)))
    return out, r.stdout


# ------------------------------------------------------------------ tests
def test_text_log_parses_back_and_pflogsumm_counts_match():
    log, sent, hop_msgs, port = run("text")
    events = parse_text(log)
    check_events(events, sent, hop_msgs, port)
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"it_logs.{os.getpid()}.log")
    with open(path, "w") as f:
        f.write(log)
    try:
        got, report = pflogsumm(path)
    finally:
        os.unlink(path)
    want = expected_counts(sent)
    for k, v in want.items():
        assert got.get(k) == v, f"pflogsumm {k}: {got.get(k)}, sent {v}\n{report[:3000]}"
    # Bytes received: the sizes of the client messages, as the next hop got them.
    sizes = sum(e["size"] for e in events if e.get("event") == "queued" and e["qid"] in sent["msgs"])
    assert got["bytes received"] == sizes, (got["bytes received"], sizes)
    print(f"pflogsumm: {got}")


def test_json_log_same_fields():
    log, sent, hop_msgs, port = run("json")
    events = parse_json(log)
    check_events(events, sent, hop_msgs, port)
    # Keys beyond the text's: numbers for the delays, the attempt.
    dl = [e for e in events if e.get("event") == "delivery"]
    for e in dl:
        assert isinstance(e["delays_ms"], list) and len(e["delays_ms"]) == 4, e
        assert isinstance(e["delay"], int) and isinstance(e["attempt"], int), e
    late = [e["attempt"] for e in dl if e["to"] == "late@example.com"]
    assert late == [1, 2], late


if __name__ == "__main__":
    if not HAVE_AIOSMTPD:
        print("aiosmtpd is not installed (Debian package python3-aiosmtpd)")
        raise SystemExit(77)
    if not os.path.exists(PFLOGSUMM):
        print("pflogsumm is not installed (Debian package pflogsumm): .ci/deps")
        raise SystemExit(1)
    ck = Checks()
    ck.run_all(globals())
    ck.finish()
