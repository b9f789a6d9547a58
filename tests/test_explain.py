"""``relist explain``: the story of a post, read back from a store that real mail built
(tests/explain_store.py: LMTP ingress, SMTP egress, DNS and a bounce on loopback)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from tests.explain_store import ESC_ID, ROOT, build

CONTRACT = {"relist_ids", "message_id", "list", "arrival", "steps", "breakage", "transactions", "bounces"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build(tmp_path_factory.mktemp("explain"))


def explain(conf, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "relist", "explain", "-c", str(conf), *args],
                          capture_output=True, text=True, cwd=ROOT, check=check, timeout=60)


def story(store, ident: str, *args: str) -> dict:
    return json.loads(explain(store["conf"], ident, "--json", *args).stdout)


def rows(store, sql: str, params=()) -> list[tuple]:
    db = sqlite3.connect(store["db"])
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def test_a_post_by_message_id_tells_the_whole_fan_out(store):
    doc = story(store, "<plain-01@poster.example>")
    assert CONTRACT <= set(doc)
    ids = rows(store, "SELECT relist_id FROM transactions WHERE message_id = ? ORDER BY time",
               ("<plain-01@poster.example>",))
    assert doc["relist_ids"] == [r[0] for r in ids] and len(ids) == 3   # ingress + Mailman's 2 transactions
    assert doc["message_id"] == "<plain-01@poster.example>" and doc["list"] == "plain@lists.example.org"
    # Arrival: from the ingress leg, each signature with its result and reason.
    assert doc["arrival_from"]["leg"] == "ingress"
    assert ([(a["domain"], a["selector"], a["result"]) for a in doc["arrival"]]
            == [("poster.example", "s1", "pass")])
    assert all(set(a) >= {"domain", "selector", "result", "reason"} for a in doc["arrival"])
    assert doc["dmarc"]["result"] == "pass" and doc["dmarc"]["policy"] == "reject"
    assert doc["ingress_match"]["matched"] and doc["ingress_match"]["ingress_copy"] == ids[0][0]
    # Only the steps that did something, each with its reason.
    assert doc["steps"] and all(set(s) == {"step", "action", "detail"} for s in doc["steps"])
    assert all(s["action"] != "skipped" for s in doc["steps"])
    assert {"verify", "sign", "attribution"} <= {s["step"] for s in doc["steps"]}
    assert doc["breakage"] == [{"signature": "poster.example/s1", "broken_by": "survived"}]
    # The MTA's reply per recipient, every egress transaction, as the sink saw them.
    egress = [t for t in doc["transactions"] if t["leg"] == "egress"]
    assert len(egress) == 2
    for t in egress:
        # recipients: those the MTA accepted; replies: every one relist asked for
        assert t["recipients"] and set(t["recipients"]) <= set(t["replies"]) and t["reply"].startswith("250")
    replies = {r: reply for t in egress for r, reply in t["replies"].items()}
    assert replies.pop("m12@members.example") == "450 4.2.1 m12 mailbox busy"   # the MTA deferred it
    assert all(r.startswith("250") for r in replies.values())
    reached = sorted(replies)
    sunk = sorted(r for m in store["sink"] if b"<plain-01@poster.example>" in m.data for r in m.rcpt_tos)
    assert reached == sunk
    # The DMARC bounce that came back for it.
    assert [(b["cause"], b["recipient"]) for b in doc["bounces"]] == [("dmarc", "m01@members.example")]
    assert doc["bounces"][0]["relist_id"] in doc["relist_ids"]


def test_same_post_by_relist_id_and_without_angle_brackets(store):
    by_mid = story(store, "plain-01@poster.example")
    second = by_mid["relist_ids"][-1]
    by_id = story(store, second)
    assert by_id["relist_ids"] == by_mid["relist_ids"] and by_id["steps_of"] == second
    assert by_mid["found_by"] == "Message-ID" and by_id["found_by"] == "relist id"
    assert story(store, second.lower())["steps_of"] == second


def test_all_shows_the_skipped_steps(store):
    short = story(store, "<plain-01@poster.example>")
    full = story(store, "<plain-01@poster.example>", "--all")
    skipped = [s for s in full["steps"] if s["action"] == "skipped"]
    assert skipped and len(full["steps"]) == len(short["steps"]) + len(skipped)
    assert all(s["detail"] for s in skipped)   # each with its reason
    text = explain(store["conf"], "<plain-01@poster.example>").stdout
    assert f"{len(skipped)} skipped step(s) not shown (--all shows them)" in text


def test_repaired_post_says_what_was_undone(store):
    doc = story(store, "<plain-03@poster.example>")
    assert doc["repairs"] and any(s["step"] == "repair" and s["action"] == "applied" for s in doc["steps"])
    assert doc["breakage"] == [{"signature": "poster.example/s1", "broken_by": "survived"}]


def test_decorated_post_names_the_breakage_and_the_mitigation(store):
    doc = story(store, "<decorated-01@poster.example>")
    assert doc["breakage"] == [{"signature": "poster.example/s1", "broken_by": "mailman"}]
    assert doc["mitigation"]["applied"] and "p=reject" in doc["mitigation"]["detail"]
    assert doc["mode"].startswith("resign")
    assert any(m["step"] == "sign" and "d=lists.example.org" in m["detail"] for m in doc["signatures_made"])
    text = explain(store["conf"], "<decorated-01@poster.example>").stdout
    assert "poster.example/s1: broken by Mailman" in text and "DMARC mitigation: mitigating: p=reject" in text


def test_unmatched_egress_copy_names_the_first_difference(store):
    doc = story(store, "<plain-05@poster.example>")
    m = doc["ingress_match"]
    assert not m["matched"] and "none matching in content" in m["reason"]
    ingress = doc["relist_ids"][0]
    assert m["first_difference"] == (f"{ingress}: body line 1: ingress 'Copying Bob and Carol.', "
                                     "egress 'Inserted by someone on the way.'")
    assert doc["breakage"] == [{"signature": "poster.example/s1", "broken_by": "mailman (no ingress match)"}]
    text = explain(store["conf"], "<plain-05@poster.example>").stdout
    assert "the egress copy matched no ingress copy" in text and "first difference from" in text


def test_text_output_escapes_what_came_from_the_message(store):
    (rid,), = rows(store, "SELECT relist_id FROM transactions WHERE message_id = ?", (ESC_ID,))
    out = explain(store["conf"], rid).stdout
    assert "\x1b" not in out and "post <esc?[31mred@poster.example>" in out
    assert story(store, rid)["message_id"] == ESC_ID   # JSON escapes it its own way


def test_unknown_id_exit_1_and_store_errors_exit_2(store, tmp_path):
    r = explain(store["conf"], "<nobody@nowhere.example>", check=False)
    assert r.returncode == 1 and r.stdout == ""
    assert "no transaction with relist id or Message-ID '<nobody@nowhere.example>'" in r.stderr
    missing = tmp_path / "missing.toml"
    missing.write_text(f'[store]\npath = "{tmp_path / "nothing-here.db"}"\n')
    r = explain(missing, "X", check=False)
    assert r.returncode == 2 and "cannot read the store" in r.stderr and "nothing-here.db" in r.stderr
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[store]\npath = "{junk}"\n')
    r = explain(bad, "X", check=False)
    assert r.returncode == 2 and "cannot read the store" in r.stderr


def test_a_refused_and_a_deferred_transaction(store):
    verp = story(store, "<verp-01@poster.example>")
    last = verp["transactions"][-1]
    assert (last["reply"].startswith("554 5.7.1 refused by policy")
            and last["data_replies"]["DATA"].startswith("554"))
    plain17 = story(store, "<plain-17@poster.example>")
    replies = [t["reply"][:3] for t in plain17["transactions"] if t["leg"] == "egress"]
    assert replies == ["451", "250", "250"]   # deferred, Mailman's retry delivered, its second transaction
    text = explain(store["conf"], "<plain-17@poster.example>").stdout
    assert "reply: 451 4.3.0 try again later" in text
