"""The guard's cheap header re-check agrees with a full verification.

``guard.same_header_input(before, after, sig)`` decides without crypto whether a
header change keeps a poster signature valid (the body unchanged).  Every case here
is decided both ways: by that comparison and by re-verifying the signature over the
changed bytes with the real key (``recheck`` without ``before``).  Signatures are
dkimpy's, in relaxed and simple header canonicalization.
"""

from __future__ import annotations

import pytest

from relist.core import guard
from relist.core.verify.verdict import verify_message
from relist.core.message import HeaderField, RawMessage
from tests.modes_support import POST, context, relay_policy, sign

H = ("from", "to", "subject", "date", "message-id")


def _subject(msg: RawMessage, raw: bytes) -> RawMessage:
    return msg.replace_field("subject", HeaderField(raw, "subject"))


def _fields(msg: RawMessage, fields) -> RawMessage:
    return RawMessage(tuple(fields), msg.separator, msg.body, msg.eol)


# Each change: (label, function of the signed message, covers a signed field?)
CHANGES = [
    ("prefix", lambda m: _subject(m, b"Subject: [ant] hello list\r\n")),
    ("refold", lambda m: _subject(m, b"Subject: hello\r\n list\r\n")),
    ("more-space", lambda m: _subject(m, b"Subject:   hello \t list  \r\n")),
    ("name-case", lambda m: _subject(m, b"SUBJECT: hello list\r\n")),
    ("value-case", lambda m: _subject(m, b"Subject: Hello list\r\n")),
    ("lf-ending", lambda m: _subject(m, b"Subject: hello list\n")),
    ("second-from-on-top", lambda m: m.prepend(m.make_field("From", "Mallory <m@evil.example>"))),
    ("second-subject-on-top", lambda m: m.prepend(m.make_field("Subject", "other"))),
    ("second-subject-at-bottom", lambda m: m.append(m.make_field("Subject", "other"))),
    ("subject-removed", lambda m: m.remove("subject")),
    ("unsigned-added", lambda m: m.append(m.make_field("X-Unsigned", "yes"))),
    ("cc-added-oversigned", lambda m: m.append(m.make_field("Cc", "x@example.com"))),
    ("signed-fields-reordered", lambda m: _fields(m, sorted(m.fields, key=lambda f: f.name))),
    ("nothing", lambda m: m),
]


@pytest.mark.parametrize("canon", [(b"relaxed", b"relaxed"), (b"simple", b"simple")],
                         ids=["relaxed", "simple"])
@pytest.mark.parametrize("label, change", [c[:2] for c in CHANGES], ids=[c[0] for c in CHANGES])
def test_cheap_check_agrees_with_full_verification(canon, label, change):
    headers = H + ("cc",) if label == "cc-added-oversigned" else H
    raw = sign(POST, headers=headers, canon=canon)
    pol = relay_policy(mode="preserve")
    ctx = context(raw, pol)
    before = RawMessage.parse(raw)
    after = change(before)
    sig = verify_message(before, ctx.facts, ctx.now).passing("dkim")[0]
    full = guard.recheck(after, [sig], ctx, body_same=True)[sig.b]
    cheap = guard.same_header_input(before, after, sig)
    assert cheap is not None, "decided cheaply"
    assert cheap == full.passed, (label, full.reason)
    through_guard = guard.recheck(after, [sig], ctx, body_same=True, before=before)[sig.b]
    assert through_guard.passed == full.passed
    assert guard.why_broken(through_guard) == guard.why_broken(full)


def test_expected_outcomes_in_relaxed():
    """The comparison is not vacuous: relaxed survives refolding and extra space,
    not a changed value, a changed case of the value, or an added signed field."""
    raw = sign(POST)
    ctx = context(raw, relay_policy(mode="preserve"))
    before = RawMessage.parse(raw)
    sig = verify_message(before, ctx.facts, ctx.now).passing("dkim")[0]
    outcome = {label: guard.same_header_input(before, change(before), sig) for label, change in CHANGES}
    assert outcome["refold"] and outcome["more-space"] and outcome["name-case"] and outcome["nothing"]
    assert outcome["unsigned-added"] and outcome["lf-ending"]
    assert not outcome["prefix"] and not outcome["value-case"]
    assert not outcome["second-from-on-top"] and not outcome["second-subject-at-bottom"]
    assert not outcome["subject-removed"]


def test_undecidable_cases_fall_back_to_verification():
    raw = sign(POST)
    ctx = context(raw, relay_policy(mode="preserve"))
    before = RawMessage.parse(raw)
    sig = verify_message(before, ctx.facts, ctx.now).passing("dkim")[0]
    # White space before the colon: not a field as dkimpy reads it.
    odd = _subject(before, b"Subject : hello list\r\n")
    assert guard.same_header_input(before, odd, sig) is None
    # The signature field itself changed (refolded), its b= the same.
    own = before.get("dkim-signature")
    refolded = HeaderField(own.raw.replace(b"; ", b";\r\n\t", 1), "dkim-signature")
    assert guard.b_value(refolded) == sig.b
    changed = before.replace_field("dkim-signature", refolded)
    assert guard.same_header_input(before, changed, sig) is None
    # recheck then verifies, and gets the verifier's answer.
    assert guard.recheck(changed, [sig], ctx, body_same=True, before=before)[sig.b].passed
    assert not guard.recheck(odd, [sig], ctx, body_same=True, before=before)[sig.b].passed


def test_a_field_dkimpy_reads_as_two_is_not_decided_cheaply():
    """A field with a line break not followed by white space, or without its line
    ending, is one field to relist and two (or a different one) to dkimpy: verify."""
    raw = sign(POST)
    ctx = context(raw, relay_policy(mode="preserve"))
    before = RawMessage.parse(raw)
    sig = verify_message(before, ctx.facts, ctx.now).passing("dkim")[0]
    for odd in (b"X-Note: a\r\nSubject: hello list\r\n", b"X-Note: no line ending"):
        after = before.append(HeaderField(odd, "x-note"))
        assert guard.same_header_input(before, after, sig) is None
        full = guard.recheck(after, [sig], ctx, body_same=True)[sig.b]
        assert guard.recheck(after, [sig], ctx, body_same=True, before=before)[sig.b].passed == full.passed
