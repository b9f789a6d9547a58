"""The sign step hands its parsed message to arc-seal (relist.core.sign.signature.pass_on),
and the shortcuts around it give the bytes the long way gives.

The sign step prepends its DKIM-Signature(s) to a message it has just split, body-hashed
and canonicalized; arc-seal's ``prepare`` takes that work instead of splitting and hashing
the same message again.  Each test compares the shortcut with the long way on the same
input: the sealed bytes, the prepared message, the canonical forms the signers know
without canonicalizing, the covered fields built from a covered prefix.
"""

from __future__ import annotations

import random
from dataclasses import replace
from unittest import mock

import dkim
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from relist.core.message import HeaderField, RawMessage
from relist.core.model import Action, Work
from relist.core.sign import (
    SignError, SigningKey, dns_record, oversigned, prepare, seal_arc, sign_dkim, signature,
)
from relist.core.sign.arc_sealer import _aar_value
from relist.core.dkim.canon import Canon
from relist.core.sign.step_support import header_names
from relist.core.steps import arc_seal, dkim_sign as sign
from tests.test_step_sign import FULL, NOW, UPSTREAM_ARC, context, dnsfunc, policy, signed_post

RELAXED = Canon("relaxed", "relaxed")


def until_sign(raw: bytes, ctx) -> tuple[Work, Work]:
    """The Work that reaches the sign step, and the one it returns."""
    work = Work(RawMessage.parse(raw))
    for step in FULL:
        if step is sign:
            return work, sign.apply(work, ctx)
        work = step.apply(work, ctx)
    raise AssertionError("no sign step")


def upstream_chain(raw: bytes) -> bytes:
    up = seal_arc(raw, domain="upstream.example", selector="up", key=UPSTREAM_ARC,
                  authserv_id="upstream.example", cv="none", results="dkim=pass", now=NOW)
    return b"".join(up.fields) + raw


CASES = {
    "resign-rsa-ed25519": (signed_post(), {}),
    "rsa-only": (signed_post(), {"ed25519_selector": ""}),
    "simple-canonicalization": (signed_post(), {"canonicalization": "simple/simple"}),
    "preserve-poster-signature-kept": (signed_post(),
                                       {"mode": "preserve", "footer": "", "subject_prefix": ""}),
    "continues-upstream-chain": (upstream_chain(signed_post()), {}),
    "folded-and-spaced-fields": (signed_post(extra=b"X-Note: folded\r\n\tvalue  with  runs\r\n"), {}),
    "lf-line-ends": (signed_post().replace(b"\r\n", b"\n"), {}),
    # the sign step tidies these (RawMessage.signable); arc-seal takes its output as it is
    "tidied-by-the-sign-step": (signed_post().replace(b"\r\n\r\n", b"\r\nX-Spaced : v\r\n"
                                                      b"X-Edge: \x0bv\x0c\r\n\r\n", 1), {}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_arc_seal_with_the_handoff_seals_the_bytes_it_seals_without(name):
    raw, change = CASES[name]
    ctx = context(raw, policy(**change))
    _, signed = until_sign(raw, ctx)
    assert signed.notes[-1].action == Action.APPLIED, signed.notes[-1]
    # what arc-seal then takes without asking: the signed message is signable as it is
    assert signed.message.signable() == (signed.message, ())
    # the long way: the same message as another object, which nobody handed on
    again = replace(signed, message=RawMessage.parse(signed.message.to_bytes()))
    if name == "lf-line-ends":   # an LF message is never handed on (its split is not dkimpy's)
        handed = arc_seal.apply(signed, ctx)
    else:
        with mock.patch.object(signature, "_from_fields", side_effect=AssertionError("split again")):
            handed = arc_seal.apply(signed, ctx)
    long_way = arc_seal.apply(again, ctx)
    assert handed.notes[-1].action == Action.APPLIED, handed.notes[-1]
    out = handed.message.to_bytes()
    assert out == long_way.message.to_bytes()
    cv, _, reason = dkim.arc_verify(out, dnsfunc=dnsfunc)
    assert cv == dkim.CV_Pass, reason


def test_the_handoff_travels_in_the_work_and_serves_only_its_message():
    raw = signed_post()
    ctx = context(raw)
    before, signed = until_sign(raw, ctx)
    msg = signed.message
    handoff = signed.known.handoff
    assert isinstance(handoff, signature.Handoff) and handoff.message is msg
    first = prepare(msg, handoff)
    assert first.split is msg and first._bh      # reused: the body hash came with it
    second = prepare(msg)                       # without it: split again
    assert first is not second and not second._bh
    assert (first.headers, first.body, first.index, first.unfolded) == (
        second.headers, second.body, second.index, second.unfolded)
    # a handoff for another message is ignored
    other = msg.prepend(HeaderField(b"X-Other: 1\r\n", "x-other"))
    third = prepare(other, handoff)
    assert not third._bh and third.split is other
    # arc_seal = false: nothing is handed on (no step would take it)
    ctx_off = context(raw, policy(arc_seal=False))
    _, unsealed = until_sign(raw, ctx_off)
    assert unsealed.known.handoff is None


def _fresh(msg: RawMessage) -> signature.Prepared:
    return signature.prepare(RawMessage.parse(msg.to_bytes()))


def test_prepared_from_the_handoff_is_the_prepared_message():
    raw = signed_post(extra=b"X-Folded: a\r\n b\r\n")
    ctx = context(raw)
    before_work, signed = until_sign(raw, ctx)
    before = prepare(before_work.message)
    h = oversigned(header_names(ctx.policy.lists[0]), before)
    sign_dkim(before, domain="lists.example.org", selector="r1", key=ctx.keys["/k/rsa.key"], now=NOW,
              headers=h)   # fills in the body hash and the covered fields
    canonical: list = []
    field = sign_dkim(before, domain="lists.example.org", selector="r1", key=ctx.keys["/k/rsa.key"],
                      now=NOW, headers=h, canonical=canonical)
    after = before_work.message.prepend(HeaderField(field, "dkim-signature"))
    handed = signature._prepended(before, after, 1, canonical)
    fresh = _fresh(after)
    assert handed is not None and handed.split is after
    assert (handed.headers, handed.body, handed.index, handed.unfolded) == \
        (fresh.headers, fresh.body, fresh.index, fresh.unfolded)
    assert handed.body_hash(RELAXED) == fresh.body_hash(RELAXED)
    assert handed._canonical == {0: b"".join(n + b":" + v for n, v in RELAXED.headers(fresh.headers[:1]))}
    ams_h = oversigned(header_names(ctx.policy.lists[0]), handed) + (b"dkim-signature",)
    for names in (h, ams_h, (b"from", b"dkim-signature", b"subject"), (b"dkim-signature",) * 2):
        for canon in (RELAXED, Canon("simple", "simple")):
            assert signature.covered(handed, names, canon) == signature.covered(fresh, names, canon)


@pytest.mark.parametrize("tamper", ["field-below-changed", "body-changed", "lf-field", "bad-name", "count"])
def test_a_message_that_is_not_what_was_handed_on_is_split_again(tamper):
    msg = RawMessage.parse(signed_post())
    before = prepare(msg)
    before.body_hash(RELAXED)
    new = HeaderField(b"X-Top: 1\r\n", "x-top")
    after = msg.prepend(new)
    added = 1
    if tamper == "field-below-changed":
        after = after.replace_field("subject", HeaderField(b"Subject: other\r\n", "subject"))
    elif tamper == "body-changed":
        after = after.with_body(msg.body + b"more\r\n")
    elif tamper == "lf-field":
        after = msg.prepend(HeaderField(b"X-Top: 1\n", "x-top"))
    elif tamper == "bad-name":
        after = msg.prepend(HeaderField(b"X Top: 1\r\n", "x top"))
    else:
        added = 2
    assert signature._prepended(before, after, added) is None
    handoff = signature.pass_on(before, after, added)
    if tamper == "bad-name":   # split the long way: refused as parse refuses it
        with pytest.raises(SignError):
            prepare(after, handoff)
        return
    p, fresh = prepare(after, handoff), _fresh(after)
    assert (p.headers, p.body, p.index) == (fresh.headers, fresh.body, fresh.index)
    assert p.body_hash(RELAXED) == fresh.body_hash(RELAXED)


def test_only_a_message_split_from_a_raw_message_is_handed_on():
    msg = RawMessage.parse(signed_post())
    after = msg.prepend(HeaderField(b"X-N: 1\r\n", "x-n"))
    assert signature.pass_on(prepare(msg), after, 1) is not None
    assert signature.pass_on(prepare(msg.to_bytes()), after, 1) is None
    assert signature.pass_on(prepare(msg), after, 0) is None


# -- the canonical forms the signers know without canonicalizing ---------------------------

KEYS = [SigningKey("rsa-sha256", rsa.generate_private_key(public_exponent=65537, key_size=1024)),
        SigningKey("rsa-sha256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        SigningKey("ed25519-sha256", ed25519.Ed25519PrivateKey.generate())]


def key_dns(key: SigningKey, selector: str = "s", domain: str = "lists.example.org"):
    record = dns_record(key).encode()
    wanted = f"{selector}._domainkey.{domain}"
    return lambda name, timeout=5: record if name.decode().rstrip(".") == wanted else None


@pytest.mark.parametrize("key", KEYS, ids=["rsa1024", "rsa2048", "ed25519"])
@pytest.mark.parametrize("c", ["relaxed/relaxed", "simple/simple"])
@pytest.mark.parametrize("domain", ["lists.example.org", "a" * 60 + ".example.org"],
                         ids=["short", "hard-break"])
def test_the_signers_canonical_form_is_the_fields_relaxed_form(key, c, domain):
    message = signed_post()
    canonical: list = []
    field = sign_dkim(message, domain=domain, selector="s", key=key, now=NOW, canonicalization=c,
                      canonical=canonical)
    name, _, value = field.partition(b":")
    expected = b"".join(n + b":" + v for n, v in RELAXED.headers([(name, value)]))
    assert len(canonical) == 1 and canonical[0] in (expected, None)
    if domain == "lists.example.org":   # the usual case: known
        assert canonical[0] == expected
    if key.algorithm == "rsa-sha256" and domain == "lists.example.org":
        # the ARC-Seal hashes the AMS in the form signed_field gave: it verifies
        seal = seal_arc(field + message, domain=domain, selector="s", key=key, authserv_id="x.example",
                        cv="none", results="arc=none", now=NOW)
        cv, _, reason = dkim.arc_verify(b"".join(seal.fields) + field + message, dnsfunc=key_dns(key))
        assert cv == dkim.CV_Pass, reason


@pytest.mark.parametrize("head", [b"v=1; a=x;\tb=c; ", b"v=1;  a=x; ", b"v=1; z=" + b"w" * 100 + b"; "],
                         ids=["tab", "two-spaces", "hard-break"])
def test_signed_head_says_so_when_it_does_not_know_the_canonical_form(head):
    canonical: list = []
    field = signature.signed_head(b"DKIM-Signature", head, b"", RELAXED, KEYS[1], canonical)
    assert field is not None and canonical == [None]


def test_aar_on_one_line_canonicalizes_as_the_folded_field():
    rng = random.Random(8617)
    pieces = ["dkim=pass", " ", "  ", "\t", "\n", "\r\n", "\r", "(comment)", "é", "\x0b", ";", "arc=none"]
    for _ in range(500):
        results = "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 12)))
        authserv = rng.choice(["relist.test", "a b", " x ", ""])
        folded, line = _aar_value(rng.randrange(1, 51), authserv, results)
        assert RELAXED.headers([(b"ARC-Authentication-Results", b" " + folded + b"\r\n")]) == \
            RELAXED.headers([(b"ARC-Authentication-Results", b" " + line + b"\r\n")]), (authserv, results)


def test_covered_extends_a_covered_prefix_only_when_it_is_one():
    msg = RawMessage.parse(b"DKIM-Signature: v=1;\r\n b=x\r\nFrom: a\r\nSubject: s\r\nFrom: b\r\n"
                           b"DKIM-Signature: v=1; b=y\r\nTo: t\r\n\r\nbody\r\n")
    combos = [
        ((b"from", b"subject"), (b"dkim-signature",) * 2),   # a run of a new name: prefix + run
        ((b"from", b"subject"), (b"from",)),                  # the name again: a new run, no prefix
        ((b"from", b"dkim-signature"), (b"dkim-signature",)),  # the run's name in the prefix
        ((), (b"to",)),
    ]
    for prefix, run in combos:
        for canon in (RELAXED, Canon("simple", "simple")):
            p = prepare(msg)
            signature.covered(p, prefix, canon)      # remembered
            assert signature.covered(p, prefix + run, canon) == \
                signature.covered(prepare(msg.to_bytes()), prefix + run, canon), (prefix, run)


def test_h_with_a_semicolon_or_line_break_is_refused():
    for bad in ("x;y", "x\r\ny"):
        with pytest.raises(SignError, match="h= value contains"):
            sign_dkim(signed_post(), domain="lists.example.org", selector="s", key=KEYS[1], now=NOW,
                      headers=("from", bad))
