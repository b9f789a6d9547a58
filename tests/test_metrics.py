"""Prometheus metrics (``[metrics] listen``, docs/metrics.md), from outside.

The real ``relist serve`` with two worker processes: posts really signed by the poster
(key published on the loopback DNS server) go over SMTP into the sink, and the
exposition is scraped over HTTP and read with ``prometheus_client``'s own parser.  The
counts must be what was sent, summed over both workers (the log says which worker
relayed each message), and stay when a worker dies.
"""

from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dkim
import pytest
from prometheus_client.parser import text_string_to_metric_families

from relist.config import ConfigError, parse
from tests.test_workers import _free_port, _wait_log

ROOT = Path(__file__).resolve().parent.parent
LIST = "ant@lists.example.org"
BOUNCES = "ant-bounces@lists.example.org"


def post(pem: bytes, n: int, to: str = LIST) -> bytes:
    """A post signed by the poster's domain (p=reject), as Mailman hands it over."""
    data = (f"From: Alice <alice@poster.example>\r\nTo: {to}\r\nSubject: post {n}\r\n"
            f"Date: Wed, 01 May 2024 10:00:00 +0000\r\nMessage-ID: <m{n}@poster.example>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
            f"Hello list, number {n}.\r\n").encode()
    return dkim.sign(data, b"s1", b"poster.example", pem, canonicalize=(b"relaxed", b"relaxed"),
                     include_headers=[b"from", b"to", b"subject", b"date", b"message-id"]) + data


def _config(tmp_path, sink_port: int, nameserver: str, port: int, metrics: str) -> Path:
    conf = tmp_path / "relist.toml"
    conf.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
workers = 2
hostname = "relist.test"

[upstream]
host = "127.0.0.1"
port = {sink_port}
timeout = 5

[store]
path = "{tmp_path / 'relist.db'}"

[dns]
nameservers = ["{nameserver}"]
timeout = 1

[metrics]
listen = "{metrics}"

[list_defaults]
sign = false

[lists."{LIST}"]
mode = "resign"
footer = "-- \\nant list\\n"
""")
    return conf


def _serve(tmp_path, sink, dns_server, with_metrics: bool):
    """``relist serve`` with two workers, once both accept: (proc, smtp port, metrics port, log)."""
    for attempt in range(3):
        port, mport = _free_port(), _free_port()   # taken meanwhile: relist exits, try again
        conf = _config(tmp_path, sink.port, dns_server.nameserver, port,
                       f"127.0.0.1:{mport}" if with_metrics else "")
        log = tmp_path / "relist.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "relist", "serve", "-c", str(conf)],
                                    cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        try:
            _wait_log(log, proc, r"worker \d accepting", count=2)
            return proc, port, mport, log
        except AssertionError:
            proc.kill()
            proc.wait(20)
            if attempt == 2 or "already in use" not in log.read_text(errors="replace"):
                raise


@pytest.fixture
def serving(tmp_path, sink, dns_server, poster_key, request):
    dns_server.set("s1._domainkey.poster.example", [poster_key[1]])
    dns_server.set("_dmarc.poster.example", ["v=DMARC1; p=reject"])
    proc, port, mport, log = _serve(tmp_path, sink, dns_server, request.param)
    try:
        yield proc, port, mport, log
    finally:
        proc.terminate()
        proc.wait(30)


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample of the exposition: (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples, name: str, **labels) -> float:
    """The sum of ``name`` over the samples whose labels include ``labels``."""
    return sum(v for (n, lbl), v in samples.items()
               if n == name and all(dict(lbl).get(k) == want for k, want in labels.items()))


def _pids(log: Path, proc, count: int) -> list[str]:
    """The process ids of the first ``count`` egress log lines."""
    return _wait_log(log, proc, r"relist\[(\d+)\]: \S+: message-id=", count=count)[:count]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True,
                         check=False)
    return [int(p) for p in out.stdout.split()]


def listening_ports(pid: int) -> set[int]:
    """TCP ports process ``pid`` holds a listening socket for (/proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(m.group(1))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:   # LISTEN
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def _send_on_two_connections(port: int, messages: list[bytes]) -> None:
    """Half the messages on each of two connections opened apart (one per worker)."""
    clients = []
    try:
        for _ in range(2):
            c = smtplib.SMTP("127.0.0.1", port, timeout=20)
            c.ehlo("mailman.test")
            clients.append(c)
            time.sleep(0.2)
        for i, raw in enumerate(messages):
            clients[i % 2].sendmail(BOUNCES, [f"member{i}@example.com"], raw)
    finally:
        for c in clients:
            c.quit()


@pytest.mark.parametrize("serving", [True], indirect=True)
def test_counts_over_two_workers_match_what_was_sent(serving, sink, poster_key):
    proc, port, mport, log = serving
    pem = poster_key[0]
    n = 6
    _send_on_two_connections(port, [post(pem, i) for i in range(n)])
    # Mailman's fan-out: one post in two transactions, same bytes: two transactions, one post.
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as c:
        for rcpt in ("x1@example.com", "x2@example.com"):
            c.sendmail(BOUNCES, [rcpt], post(pem, 100))
        # A list relist has no section for: counted under "other", never by its name.
        c.sendmail("hostile-list-bounces@evil.example", ["y@example.com"], post(pem, 200))
        # The MTA refuses with a 4xx: a deferral, the MTA's own.
        sink.inject("DATA", "451 4.3.0 queue file write error")
        with pytest.raises(smtplib.SMTPDataError) as refused:
            c.sendmail(BOUNCES, ["z@example.com"], post(pem, 300))
        assert refused.value.smtp_code == 451
    assert len(sink.messages) == n + 3
    # Both workers relayed some of the first n (so the scrape sums over processes).
    assert len(set(_pids(log, proc, n))) == 2

    s = scrape(mport)
    tx = "relist_transactions_total"
    assert total(s, tx) == n + 4
    assert total(s, tx, leg="egress", list=LIST, outcome="relayed") == n + 2
    assert total(s, tx, leg="egress", list="other", outcome="relayed") == 1
    assert total(s, tx, leg="egress", list=LIST, outcome="deferred") == 1
    assert total(s, "relist_deferrals_total", leg="egress", reason="next_hop") == 1
    assert total(s, "relist_deferrals_total") == 1
    # per post, not per transaction; the deferred post was never relayed
    assert total(s, "relist_posts_total", list=LIST, mode="resign") == n + 1
    assert total(s, "relist_posts_total", list="other") == 1
    assert total(s, "relist_arrival_signatures_total", leg="egress", list=LIST, result="pass") == n + 1
    assert total(s, "relist_arrival_dmarc_total", leg="egress", list=LIST, result="pass") == n + 1
    # the footer breaks the poster's body hash; p=reject: From munged
    assert total(s, "relist_signature_breakage_total", list=LIST, cause="footer") == n + 1
    assert total(s, "relist_mitigations_total", list=LIST, method="munge_from",
                 reason="policy_reject") == n + 1
    # latency: one observation per transaction that reached DATA; none that ended earlier
    assert total(s, "relist_pipeline_latency_seconds_count", leg="egress") == n + 4
    assert total(s, "relist_upstream_latency_seconds_count", leg="egress") == n + 4
    assert total(s, "relist_pipeline_latency_seconds_bucket", leg="egress", le="+Inf") == n + 4
    assert total(s, "relist_store_errors_total") == 0
    assert total(s, "relist_internal_errors_total") == 0
    # Every label value is from the configuration or a fixed vocabulary.
    values = {v for _, labels in s for k, v in labels if k != "le"}
    assert not [v for v in values if "evil" in v or "poster.example" in v or "@" in v and v != LIST]

    # The main process serves the exposition; the workers hold no copy of its socket.
    workers = _children(proc.pid)
    assert len(workers) == 2
    assert listening_ports(proc.pid) == {port, mport}
    for pid in workers:
        assert mport not in listening_ports(pid)

    # A worker that dies takes nothing with it: its counts stay in the sums.
    os.kill(workers[0], signal.SIGKILL)
    _wait_log(log, proc, r"worker \d \(pid \d+\) exited with signal SIGKILL")
    assert total(scrape(mport), tx) == n + 4


@pytest.mark.parametrize("serving", [False], indirect=True)
def test_metrics_off_listens_on_nothing_more(serving, poster_key):
    proc, port, mport, log = serving
    _send_on_two_connections(port, [post(poster_key[0], 1)])
    assert listening_ports(proc.pid) == {port}
    for pid in _children(proc.pid):
        assert listening_ports(pid) == {port}
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", mport), timeout=5).close()
    assert "metrics" not in log.read_text()


def test_metrics_off_does_not_import_the_library():
    code = ("import sys, relist.cli, relist.server, relist.app, relist.edge.metrics as m\n"
            "from relist.config import parse\n"
            "from relist.app import Relay\n"
            "m.store_failed(3)\n"
            "assert Relay(parse({})).metrics is None\n"
            "assert 'prometheus_client' not in sys.modules, 'imported'\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stderr


def test_a_metrics_port_in_use_stops_relist_with_exit_2(tmp_path, sink, dns_server):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        mport = taken.getsockname()[1]
        conf = _config(tmp_path, sink.port, dns_server.nameserver, _free_port(), f"127.0.0.1:{mport}")
        out = subprocess.run([sys.executable, "-m", "relist", "serve", "-c", str(conf)], cwd=ROOT,
                             capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2, out.stderr
    assert f"[metrics] cannot listen on 127.0.0.1:{mport}" in out.stderr


@pytest.mark.parametrize("listen, allow, expected", [
    ("", False, None),
    ("127.0.0.1:9464", False, ("127.0.0.1", 9464)),
    ("[::1]:9464", False, ("::1", 9464)),
    ("localhost:9464", False, ("localhost", 9464)),
    ("0.0.0.0:9464", True, ("0.0.0.0", 9464)),
    ("192.0.2.7:9464", True, ("192.0.2.7", 9464)),
])
def test_listen_values(listen, allow, expected):
    cfg = parse({"metrics": {"listen": listen, "allow_remote": allow}})
    assert cfg.metrics["listen"] == expected
    assert parse({}).metrics == {"listen": None, "allow_remote": False}


@pytest.mark.parametrize("section, message", [
    ({"listen": "9464"}, "[metrics] listen = '9464': expected \"HOST:PORT\""),
    ({"listen": "127.0.0.1:0"}, "[metrics] listen = '127.0.0.1:0': expected \"HOST:PORT\" with a port"),
    ({"listen": 9464}, "[metrics] listen = 9464: expected str"),
    ({"listen": "0.0.0.0:9464"}, "[metrics] listen = '0.0.0.0:9464': not a loopback address"),
    ({"listen": "metrics.example.org:9464"}, "not a loopback address"),
    ({"listen": "127.0.0.1:9464", "allow_remote": "yes"}, "[metrics] allow_remote = 'yes': expected bool"),
    ({"port": 9464}, "[metrics] port: unknown key"),
])
def test_bad_values_name_the_key(section, message):
    with pytest.raises(ConfigError) as err:
        parse({"metrics": section})
    assert message in str(err.value)


def test_ingress_leg_counts_posts_and_bounces_by_cause(tmp_path, sink, dns_server, poster_key):
    """In one process (``relist serve`` with workers = 1 runs so): the ingress leg over
    LMTP, a signed post to the list and bounces for its bounce address."""
    from relist.edge import metrics
    from relist.sandbox.sink import Sink
    from relist.server import ThreadedServer
    from tests.helpers import make_config
    from tests.test_bounces_ingress import BOUNCES, lmtp_bounce

    dns_server.set("s1._domainkey.poster.example", [poster_key[1]])
    dns_server.set("_dmarc.poster.example", ["v=DMARC1; p=reject"])
    plain = "plain@lists.example.org"
    mailman = Sink(lmtp=True).start()
    exporter = metrics.start(("127.0.0.1", 0))
    try:
        cfg = make_config(tmp_path, sink.port, {"ingress": {"deliver_to": f"lmtp:127.0.0.1:{mailman.port}"},
                                                "lists": {plain: {"sign": False}}},
                          nameserver=dns_server.nameserver, ingress={"listen": ("127.0.0.1", 0)})
        with ThreadedServer(cfg) as srv:
            c = smtplib.LMTP("127.0.0.1", srv.ingress_port, timeout=10)
            c.sendmail("alice@poster.example", [plain], post(poster_key[0], 1, to=plain))
            c.quit()
            for name in ("gmail-dmarc", "mailbox"):   # 1 dmarc failure; 2 mailbox failures
                raw = (BOUNCES / "postfix" / f"{name}.eml").read_bytes()
                assert lmtp_bounce(srv.ingress_port, "plain-bounces@lists.example.org", raw)[0] == 250
            metrics.store_failed(2)   # as the store's writer does for records it could not write
            s = scrape(exporter.address[1])
    finally:
        exporter.stop()
        mailman.stop()
    assert total(s, "relist_transactions_total", leg="ingress", outcome="relayed") == 3
    assert total(s, "relist_transactions_total", leg="ingress", list=plain) == 1
    assert total(s, "relist_transactions_total", leg="ingress", list="none") == 2   # bounces: no list
    assert total(s, "relist_arrival_signatures_total", leg="ingress", list=plain, result="pass") == 1
    assert total(s, "relist_bounces_total", list=plain, cause="dmarc", action="mailman") == 1
    assert total(s, "relist_bounces_total", list=plain, cause="mailbox", action="mailman") == 2
    assert total(s, "relist_upstream_latency_seconds_count", leg="ingress") == 3
    assert total(s, "relist_posts_total") == 0    # posts are counted on the egress leg
    assert total(s, "relist_store_errors_total") == 2
    assert not Path(exporter.directory).exists()
    assert metrics.recorder("egress", cfg.relay) is None   # off again


def test_a_killed_relists_directory_is_removed_at_the_next_start(tmp_path, monkeypatch):
    import tempfile

    from relist.edge import metrics
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = tmp_path / f"relist-metrics-{gone.pid}-abc_123"   # a relist that got SIGKILL
    stale.mkdir()
    (stale / "counter_1.db").write_bytes(b"\0" * 8)
    running = tmp_path / f"relist-metrics-{os.getpid()}-xyz"  # one that still runs
    running.mkdir()
    exporter = metrics.start(("127.0.0.1", 0))
    try:
        assert not stale.exists() and running.exists()
        assert Path(exporter.directory).parent == tmp_path
    finally:
        exporter.stop()
    assert not Path(exporter.directory).exists()


def _record(steps=(), reply=None):
    from datetime import UTC, datetime

    from relist.core.model import Action, Envelope, Record, StepNote
    notes = tuple(StepNote(s, Action.RECORDED) for s in steps)
    return Record("R", datetime.now(UTC), Envelope("a@b.example", ()), "", None, 0, 0, notes, reply)


@pytest.mark.parametrize("case, expected", [
    ("mta-data", "next_hop"),
    ("mta-mail", "next_hop"),
    ("unknown-list-defer", "relist_refused"),
    ("connect", "unreachable"),
    ("timeout", "upstream_failed"),
    ("bug", "internal_error"),
    ("reissue", "reissue_refused"),
    ("odd", "other"),
])
def test_deferral_reasons(case, expected):
    from relist.core.model import Reply
    from relist.edge.metrics import deferral_reason
    mta = Reply(451, "4.3.0", "Error: queue file write error")
    own = {"connect": Reply(451, "4.4.1", "relist: cannot connect to upstream MTA"),
           "timeout": Reply(451, "4.4.2", "relist: upstream MTA timed out"),
           "bug": Reply(451, "4.3.0", "relist: internal error"),
           "reissue": Reply(451, "4.5.0", "relist: upstream MTA refused the transaction re-issued"),
           "odd": Reply(421, "4.7.0", "relist: something new")}
    core = Reply(451, "4.7.0", "relist: not list mail (unknown_list = defer)")
    record, upstream, reply = {
        "mta-data": (_record(("parse",)), {"x@y.example": Reply(250, "2.1.5", "Ok"), "DATA": mta}, mta),
        "mta-mail": (_record(), {"MAIL": mta}, mta),
        "unknown-list-defer": (_record(("parse", "identify"), core), {}, core),
    }.get(case) or (_record((), own[case]), {}, own[case])
    assert deferral_reason(record, upstream, reply) == expected


def test_a_cross_posted_message_counts_as_a_post_of_each_list(tmp_path, sink, dns_server):
    """Posts are counted once for all of Mailman's transactions of one post, per list:
    the same Message-ID sent on by two lists is a post of each."""
    from relist.edge import metrics
    from relist.server import ThreadedServer
    from tests.helpers import client, make_config

    lists = ["ants@lists.example.org", "bees@lists.example.org"]
    exporter = metrics.start(("127.0.0.1", 0))
    try:
        settings = {"lists": {a: {"sign": False, "mode": "preserve"} for a in lists}}
        cfg = make_config(tmp_path, sink.port, settings, nameserver=dns_server.nameserver)
        msg = (b"From: Poster <poster@poster.example>\r\n"
               b"To: ants@lists.example.org, bees@lists.example.org\r\nSubject: both\r\n"
               b"Message-ID: <cross-1@poster.example>\r\n\r\nHello both.\r\n")
        with ThreadedServer(cfg) as srv:
            for address in lists:
                name = address.split("@")[0]
                for member in ("m1@member.example", "m2@member.example"):   # two transactions each
                    with client(srv.port) as c:
                        assert c.sendmail(f"{name}-bounces@lists.example.org", [member], msg) == {}
            s = scrape(exporter.address[1])
    finally:
        exporter.stop()
    assert total(s, "relist_transactions_total", leg="egress", outcome="relayed") == 4
    assert total(s, "relist_posts_total", list=lists[0]) == 1
    assert total(s, "relist_posts_total", list=lists[1]) == 1
