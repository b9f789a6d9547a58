"""dmarc-mitigation over real bytes: the decision table, From munging, wrapping."""

from __future__ import annotations

import email
import re
from dataclasses import replace
from email import policy as email_policy

import pytest

from relist.core import mime, pipeline
from relist.core.verify import verify_message
from relist.core.message import RawMessage
from relist.core.model import Action, Known, Work
from relist.core.steps import dmarc_mitigation, verify
from tests.test_step_sign import (
    FULL, LP, TXT, context, dkimpy_ok, facts_for, list_sigs, note, policy, run, signed_post,
    verify_out,
)

LIST_DMARC = {"_dmarc.lists.example.org": "v=DMARC1; p=reject"}


# A poster signature that does not oversign: list fields and Sender can be added.
PLAIN_H = ("from", "to", "subject", "date", "message-id", "mime-version", "content-type")


def outcome_for(raw=None, txt=None, temperror=(), **lp):
    raw = raw or signed_post(poster_headers=lp.pop("poster_headers", None))
    return run(raw, context(raw, policy(**lp), txt=txt, temperror=temperror))


# (id, list settings, DMARC record of example.net (None: none), applied?, reason fragment)
TABLE = [
    ("p=none", {}, "v=DMARC1; p=none", False, "p=none for example.net"),
    ("p=quarantine", {}, "v=DMARC1; p=quarantine", True, "p=quarantine for example.net"),
    ("p=reject", {}, "v=DMARC1; p=reject", True, "p=reject for example.net"),
    ("reject t=y", {}, "v=DMARC1; p=reject; t=y", True, "p=quarantine (p=reject lowered by t=y)"),
    ("quarantine t=y", {}, "v=DMARC1; p=quarantine; t=y", False, "p=none (p=quarantine lowered by t=y)"),
    ("no record", {}, None, False, "no DMARC policy for example.net"),
    ("always p=none", {"dmarc_trigger": "always"}, "v=DMARC1; p=none", True, "dmarc_trigger = always"),
    ("always no record", {"dmarc_trigger": "always"}, None, True, "dmarc_trigger = always"),
    ("evidence broken", {"dmarc_trigger": "evidence"}, "v=DMARC1; p=reject", True,
     "no aligned poster signature survives (d=example.net: body hash"),
    ("evidence survives", {"dmarc_trigger": "evidence", "footer": "", "subject_prefix": "",
                           "poster_headers": PLAIN_H},
     "v=DMARC1; p=reject", False, "the aligned signature example.net/s1 survives"),
    ("policy survives", {"footer": "", "subject_prefix": "", "poster_headers": PLAIN_H},
     "v=DMARC1; p=reject", False, "no mitigation: the aligned signature example.net/s1 survives"),
    ("evidence removed", {"dmarc_trigger": "evidence", "footer": "", "subject_prefix": "",
                          "poster_headers": PLAIN_H, "remove_headers": ("DKIM-Signature",)},
     "v=DMARC1; p=reject", True, "the aligned poster signature was removed"),
    # evidence: whatever the policy, when nothing aligned survives
    ("evidence p=none", {"dmarc_trigger": "evidence"}, "v=DMARC1; p=none", True,
     "mitigating (dmarc_trigger = evidence): no aligned poster signature survives"),
    ("evidence no record", {"dmarc_trigger": "evidence"}, None, True, "dmarc_trigger = evidence"),
    ("mitigation none", {"dmarc_mitigation": "none"}, "v=DMARC1; p=reject", False,
     "dmarc_mitigation = none"),
]


@pytest.mark.parametrize("lp, record, applied, reason", [t[1:] for t in TABLE],
                         ids=[t[0] for t in TABLE])
def test_decision_table(lp, record, applied, reason):
    outcome = outcome_for(txt={"_dmarc.example.net": record}, **lp)
    n = note(outcome, "dmarc-mitigation")
    assert (n.action == Action.APPLIED) is applied, n.detail
    assert reason in n.detail
    frm = RawMessage.parse(outcome.message).header_text("from")
    assert (frm.endswith("<dev@lists.example.org>")) is applied


def test_temperror_on_the_policy_lookup_mitigates():
    outcome = outcome_for(temperror=("_dmarc.example.net",))
    n = note(outcome, "dmarc-mitigation")
    assert n.action == Action.APPLIED and "the DMARC policy of example.net is unknown" in n.detail


def test_unsigned_post_under_evidence_mitigates():
    raw = signed_post()
    raw = raw[raw.index(b"From: "):]          # drop the poster's signature
    outcome = outcome_for(raw, dmarc_trigger="evidence")
    n = note(outcome, "dmarc-mitigation")
    assert n.action == Action.APPLIED and "no aligned poster signature passed on arrival" in n.detail


def test_from_in_the_lists_own_domain_is_left():
    raw = signed_post(frm=b"Owner <dev-owner@lists.example.org>")
    outcome = outcome_for(raw, txt={"_dmarc.lists.example.org": "v=DMARC1; p=reject"},
                          dmarc_trigger="always")
    n = note(outcome, "dmarc-mitigation")
    assert n.action == Action.SKIPPED and "aligns with the list's signing domain" in n.detail


@pytest.mark.parametrize("chosen", ["preserve", "resign", ""])
def test_the_decision_does_not_depend_on_the_mode(chosen):
    # One rule in every mode: the poster's signature is broken, p=reject: mitigate.
    applied = True
    raw = signed_post()
    ctx = context(raw, policy(mode="auto"))
    before = pipeline.process(raw, ctx, FULL[:FULL.index(dmarc_mitigation)])
    lp = replace(ctx.policy.lists[0])
    verdict = before.record.verdict
    work = Work(RawMessage.parse(before.message),
                Known(list_policy=lp, verdict=verdict, mode_chosen=chosen))
    after = dmarc_mitigation.apply(work, ctx)
    assert (after.notes[-1].action == Action.APPLIED) is applied, after.notes[-1].detail


# -- munge_from ---------------------------------------------------------------------

def parsed(out: bytes):
    return email.message_from_bytes(out, policy=email_policy.default)


@pytest.mark.parametrize("frm, phrase", [
    (b"Alice Example <alice@example.net>", "Alice Example via Dev"),
    (b"alice@example.net", "alice via Dev"),
    (b"=?utf-8?q?Zo=C3=AB_=C3=9Cnic?= <alice@example.net>", "Zo\u00eb \u00dcnic via Dev"),
    (b'"Bob \\"The\\" Builder, Jr." <alice@example.net>', 'Bob "The" Builder, Jr. via Dev'),
    (b"{list_name} $list_name <alice@example.net>", "{list_name} $list_name via Dev"),
], ids=["name", "bare", "rfc2047", "quoted", "template-in-name"])
def test_munged_from_phrase(frm, phrase):
    out = outcome_for(signed_post(frm=frm)).message
    m = parsed(out)
    assert m["From"].addresses[0].display_name == phrase
    assert m["From"].addresses[0].addr_spec == "dev@lists.example.org"
    raw_from = RawMessage.parse(out).get("from").raw
    assert raw_from.isascii()                       # RFC 2047, never raw UTF-8
    assert RawMessage.parse(out).get("x-original-from").value == b" " + frm


def test_munge_phrase_template():
    out = outcome_for(munge_phrase="{name} (on {list_name}, {list_address})").message
    assert parsed(out)["From"].addresses[0].display_name == \
        "Alice Example (on Dev, dev@lists.example.org)"


@pytest.mark.parametrize("lp, extra, field, expect", [
    ({}, b"", "Reply-To", ["alice@example.net"]),
    ({}, b"Reply-To: other@example.com\r\n", "Reply-To", ["other@example.com", "alice@example.net"]),
    ({"reply_to": "list"}, b"Cc: carol@example.com\r\n", "Cc", ["carol@example.com", "alice@example.net"]),
    ({}, b"Reply-To: Dev <dev@lists.example.org>\r\n", "Cc", ["alice@example.net"]),
], ids=["reply-to", "reply-to-appended", "list-reply-to-cc", "existing-list-reply-to"])
def test_original_from_goes_to_reply_to_or_cc(lp, extra, field, expect):
    outcome = outcome_for(signed_post(extra=extra), **lp)
    m = parsed(outcome.message)
    assert [a.addr_spec for a in m[field].addresses] == expect
    assert "alice@example.net" not in str(m["From"])


def test_munged_fields_are_covered_by_the_list_signature():
    raw = signed_post(extra=b"Cc: carol@example.com\r\n")
    outcome = outcome_for(raw, reply_to="list")
    out = outcome.message
    msg = RawMessage.parse(out)
    h = [n.strip() for n in re.search(r"h=([^;]*);", msg.get("dkim-signature").text()).group(1).split(":")]
    for name in ("from", "reply-to", "cc", "x-original-from"):
        assert h.count(name) == len(msg.get_all(name)) + 1, name     # covered and oversigned
    relay = policy(reply_to="list")
    verdict = verify_out(out, relay)
    assert [str(s.result) for s in list_sigs(verdict)] == ["pass", "pass"]
    assert dkimpy_ok(out, 0)
    # The munged post passes DMARC for the list's domain when the list publishes a policy.
    facts = facts_for(out, relay, {**TXT, **LIST_DMARC}, steps=(verify,))
    assert verify_message(msg, facts, outcome.record.time).dmarc.result == "pass"
    # Changing any of them breaks the list's signature.
    for old, new in [(b"X-Original-From: Alice", b"X-Original-From: Mallory"),
                     (b"Cc: carol@", b"Cc: carl@")]:
        assert old in out
        assert not dkimpy_ok(out.replace(old, new), 0)


# -- wrap ----------------------------------------------------------------------------------

def wrap_input_and_output(raw: bytes, **lp):
    ctx = context(raw, policy(dmarc_mitigation="wrap", **lp))
    before = pipeline.process(raw, ctx, FULL[:FULL.index(dmarc_mitigation)]).message
    outcome = pipeline.process(raw, ctx, FULL)
    return before, outcome


@pytest.mark.parametrize("eol", [b"\r\n", b"\n"], ids=["crlf", "lf"])
@pytest.mark.parametrize("body", [b"Hello list\r\n", "Grüße\r\n".encode()], ids=["ascii", "8bit"])
def test_wrap_attaches_the_post_byte_identical(eol, body):
    raw = signed_post(body=body).replace(b"\r\n", eol)
    inner, outcome = wrap_input_and_output(raw)
    assert "wrapped as message/rfc822" in note(outcome, "dmarc-mitigation").detail
    out = outcome.message
    m = parsed(out)
    assert m.get_content_type() == "multipart/mixed"
    text, attached = m.get_payload()
    assert text.get_content_type() == "text/plain" and "Alice Example" in text.get_content()
    assert attached.get_content_type() == "message/rfc822"
    assert attached.get_payload()[0]["Subject"] == "[dev] hello"
    # byte level: the second part's body is exactly the message the step was given
    msg = RawMessage.parse(out)
    info = mime.content_info(msg.fields)
    layout = mime.scan_multipart(msg.body, info.boundary)
    start, end = layout.parts[1]
    part = RawMessage.parse(msg.body[start:end])
    assert part.body == inner
    assert (part.get("content-transfer-encoding") is not None) is (not inner.isascii())
    # outer: munged From, copied identity and list fields, no poster signature
    assert m["From"].addresses[0].addr_spec == "dev@lists.example.org"
    assert m["Reply-To"].addresses[0].addr_spec == "alice@example.net"
    for name in ("Subject", "To", "Date", "Message-ID", "List-Id", "List-Post"):
        assert m[name] == attached.get_payload()[0][name], name
    assert not any(b"d=example.net" in f.raw for f in msg.get_all("dkim-signature"))
    assert all(f.raw.endswith(eol) for f in msg.fields)
    verdict = verify_out(out)
    assert [str(s.result) for s in list_sigs(verdict)] == ["pass", "pass"]
    assert verdict.arc.cv == "pass"
    assert dkimpy_ok(out, 0)


@pytest.mark.parametrize("footer_text, survives", [("", True), ("-- \nDev\n", False)],
                         ids=["unchanged-body", "footer"])
@pytest.mark.replaces_core
def test_evidence_uses_guard_tracking_only_for_the_same_bytes(footer_text, survives, monkeypatch):
    from relist.core import guard
    raw = signed_post(poster_headers=PLAIN_H)
    ctx = context(raw, policy(footer=footer_text, subject_prefix=""))
    before = pipeline.process(raw, ctx, FULL[:FULL.index(dmarc_mitigation)])
    verdict = before.record.verdict
    msg = RawMessage.parse(before.message)
    opened = []
    real = guard.open_message
    monkeypatch.setattr(guard, "open_message", lambda raw: opened.append(1) or real(raw))
    slow = dmarc_mitigation.surviving(msg, verdict, ctx, Known())
    assert slow[0] is survives and opened == [1]        # verified over the bytes
    b = verdict.passing("dkim")[0].b
    tracked = Known(intact=(b,) if survives else (), intact_on=msg)
    fast = dmarc_mitigation.surviving(msg, verdict, ctx, tracked)
    assert fast[0] is survives and opened == [1]        # the guard's answer: not verified again
    # tracking made on other bytes is not trusted: verified again
    stale = Known(intact=(b,), intact_on=RawMessage.parse(raw))
    assert dmarc_mitigation.surviving(msg, verdict, ctx, stale) == slow and opened == [1, 1]


# The header's last field cut short after a fold: only white space follows its last line
# break, and no empty line, no body (issue 11's hostile input; found by
# test_hostile_fuzz: the comma relist added began a line of its own, which a reader
# takes for the start of the body, so List-*, Sender and the signature fields fell
# into the body).
CUT = b"\r\n "


@pytest.mark.parametrize("head, lp, field, expect", [
    (b"From: Alice <alice@example.net>\r\nCc: Carol <carol@example.com>" + CUT, {"reply_to": "list"},
     "Cc", ["carol@example.com", "alice@example.net"]),
    (b"From: Alice <alice@example.net>\r\nReply-To: Bob <bob@example.com>" + CUT, {},
     "Reply-To", ["bob@example.com", "alice@example.net"]),
    (b"Reply-To: Bob <bob@example.com>\r\nFrom: Alice <alice@example.net>" + CUT, {},
     "Reply-To", ["bob@example.com", "alice@example.net"]),
    (b"From: Alice <alice@example.net>" + CUT, {}, "Reply-To", ["alice@example.net"]),
], ids=["cc-last", "reply-to-last", "from-last", "from-only"])
def test_munge_after_a_value_that_ends_in_a_fold(head, lp, field, expect):
    msg = RawMessage.parse(b"Subject: hi\r\n" + head)
    assert not msg.separator and not msg.body     # the input as the fuzzer made it
    out, detail = dmarc_mitigation.munge(msg, replace(LP, **lp))
    assert out is not None, detail
    again = RawMessage.parse(out.to_bytes() + b"\r\nbody\r\n")
    # every header line is a field or a continuation of one, up to the empty line
    assert all(f.name for f in again.fields), [f.raw for f in again.fields if not f.name]
    assert again.body == b"body\r\n"
    assert [f.name for f in again.fields][-1] == "x-original-from"
    # no line of only white space in what relist wrote (RFC 5322 §3.2.2)
    written = [again.get(field), again.get("x-original-from")]
    assert not any(re.search(rb"\n[ \t]*\r?\n", f.raw) for f in written), [f.raw for f in written]
    m = parsed(again.to_bytes())
    assert [a.addr_spec for a in m[field].addresses] == expect
    assert str(m["X-Original-From"]) == "Alice <alice@example.net>"
