"""The verify and authres steps, and the verdict in the store."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

from relist.core.verify import authserv_id
from relist.core.facts import Facts
from relist.core.message import RawMessage
from relist.core.model import Action, Context, Envelope, Record, Work
from relist.core.policy import RelayPolicy
from relist.core.steps import authres, verify
from relist.edge.store import MIGRATIONS, connect, verdict_rows
from tests.verify_support import MESSAGE, NOW, facts, public_record, rsa_key, sign

POLICY = RelayPolicy(hostname="relist.test", authserv_id="relist.test")
DNS = {"sel._domainkey.example.com": public_record(rsa_key()),
       "_dmarc.example.com": "v=DMARC1; p=reject"}


def run(raw: bytes, dns=DNS, policy=POLICY):
    ctx = Context(Envelope("list-bounces@lists.example.org", ("bob@example.net",)), policy, NOW,
                  "RID1", facts(dns))
    work = verify.apply(Work(RawMessage.parse(raw)), ctx)
    return work, authres.apply(work, ctx)


def test_verify_records_the_verdict_and_keeps_bytes():
    raw = sign(MESSAGE)
    work, _ = run(raw)
    assert work.message.to_bytes() == raw
    assert work.notes[-1].step == "verify" and work.notes[-1].action == Action.RECORDED
    v = work.known.verdict
    assert v.dkim[0].result == "pass" and v.dmarc.result == "pass" and v.arc.cv == "none"


def test_questions_ask_key_and_dmarc_then_nothing():
    msg = RawMessage.parse(sign(MESSAGE))
    first = {q.qname for q in verify.questions(msg, POLICY, Facts())}
    assert first == {"sel._domainkey.example.com", "_dmarc.example.com"}
    done = facts(DNS)
    assert {q for q in verify.questions(msg, POLICY, done) if q not in done.answers} == set()


def test_authres_prepends_results_and_drops_forged_own_fields():
    forged = (b"Authentication-Results: relist.test; arc=pass; dkim=pass header.d=example.com\r\n"
              b"Authentication-Results: (comment) RELIST.test 1; dmarc=pass\r\n"
              b"Authentication-Results: mx.example.net; dkim=pass\r\n")
    raw = forged + sign(MESSAGE)
    _, work = run(raw)
    out = work.message.to_bytes()
    assert out.startswith(b"Authentication-Results: relist.test;\r\n\tdkim=pass (2048-bit key) "
                          b"header.d=example.com header.s=sel header.a=rsa-sha256 header.b=")
    ars = RawMessage.parse(out).get_all("authentication-results")
    assert [authserv_id(f.text()) for f in ars] == ["relist.test", "mx.example.net"]
    text = ars[0].text()
    assert "arc=none" in text and "dmarc=pass (p=reject) header.from=example.com" in text
    assert "removed 2 incoming field(s)" in work.notes[-1].detail


def test_authres_reports_failures_with_reasons_and_quotes_hostile_values():
    raw = sign(MESSAGE).replace(b"this is a test", b"changed")
    raw = b'DKIM-Signature: v=1; a=rsa-sha256; d=evil";x=1.test; s=s; h=from; bh=AAAA; b=AAAA\r\n' + raw
    _, work = run(raw)
    ar = RawMessage.parse(work.message.to_bytes()).get_all("authentication-results")[0]
    text = ar.text()
    assert 'dkim=fail reason="body hash mismatch (the body changed)"' in text
    assert 'dkim=permerror reason="invalid d= domain' in text
    assert "dmarc=fail" in text and b"\n" not in ar.raw.rstrip(b"\r\n").replace(b"\r\n\t", b"")


def test_authres_without_verdict_only_removes_forgeries():
    ctx = Context(Envelope("", ()), POLICY, NOW, "RID", Facts())
    raw = b"Authentication-Results: relist.test; arc=pass\r\n" + MESSAGE
    work = authres.apply(Work(RawMessage.parse(raw)), ctx)
    assert work.message.to_bytes() == MESSAGE and work.notes[-1].action == Action.APPLIED


def test_authserv_id_parsing():
    assert authserv_id(" example.org; dkim=pass") == "example.org"
    assert authserv_id("(nested (c)) Example.ORG 1; none") == "example.org"
    assert authserv_id('"quoted.example"; none') == "quoted.example"
    assert authserv_id("") == ""


def test_store_writes_signature_and_verdict_rows(tmp_path):
    work, _ = run(sign(MESSAGE))
    record = Record("RID1", NOW, Envelope("a@b", ("c@d",)), "<m>", None, 1, 1, (),
                    verdict=work.known.verdict)
    sig_rows, verdict_row = verdict_rows(record)
    conn = connect(tmp_path / "db.sqlite")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    conn.executemany("INSERT INTO signatures VALUES (" + ",".join("?" * 15) + ")", sig_rows)
    conn.execute("INSERT INTO verdicts VALUES (" + ",".join("?" * 12) + ")", verdict_row)
    row = conn.execute("SELECT kind, domain, result, key_bits, body_hash_ok FROM signatures").fetchone()
    assert row == ("dkim", "example.com", "pass", 2048, 1)
    assert conn.execute("SELECT dmarc_result, dmarc_policy, arc_cv FROM verdicts").fetchone() == (
        "pass", "reject", "none")
    assert verdict_rows(replace(record, verdict=None)) == ([], None)


def test_migration_from_version_one(tmp_path):
    from relist.edge.store import MIGRATIONS
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    for statement in MIGRATIONS[0].split(";"):
        if statement.strip():
            old.execute(statement)
    old.execute("PRAGMA user_version = 1")
    old.commit()
    old.close()
    conn = connect(path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"transactions", "signatures", "verdicts"} <= tables
