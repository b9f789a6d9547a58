"""sign and arc-seal steps over real bytes, and "sign once per post" (signcache).

Signatures the steps produce are checked twice: with relist's own verifier
(``verify_message`` with the public keys in ``Facts``) and with dkimpy.
The helpers here (keys, facts, the full step order) are shared with
test_step_dmarc.py and test_step_downgrade.py.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import dkim
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from relist.core import pipeline, signcache
from relist.core.verify import verify_message
from relist.core.facts import Answer, Facts, Status
from relist.core.message import RawMessage
from relist.core.model import Action, Context, Envelope
from relist.core.policy import ListPolicy, RelayPolicy
from relist.core.sign import SigningKey, dns_record, seal_arc, sign_dkim
from relist.core.steps import (
    arc_seal, authres, dmarc_mitigation, downgrade, footer, identify, list_headers, parse,
    remove_headers, reply_to, sender, dkim_sign as sign, subject_prefix, trace, verify,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
LIST = "dev@lists.example.org"
POSTER_KEY = SigningKey("rsa-sha256", rsa.generate_private_key(public_exponent=65537, key_size=1024))
LIST_RSA = SigningKey("rsa-sha256", rsa.generate_private_key(public_exponent=65537, key_size=2048))
LIST_ED = SigningKey("ed25519-sha256", ed25519.Ed25519PrivateKey.generate())
UPSTREAM_ARC = SigningKey("rsa-sha256", rsa.generate_private_key(public_exponent=65537, key_size=1024))
KEYS = {"/k/rsa.key": LIST_RSA, "/k/ed.key": LIST_ED}

# The order recommended for pipeline.STEPS (see docs/signing.md).
FULL = (parse, identify, verify, trace, authres,
        remove_headers, subject_prefix, footer, list_headers, sender, reply_to,
        downgrade, dmarc_mitigation, sign, arc_seal)

LP = ListPolicy(address=LIST, configured=True, display_name="Dev", subject_prefix="[dev] ",
                footer="-- \nDev list\n", selector="r1", private_key="/k/rsa.key",
                ed25519_selector="e1", ed25519_private_key="/k/ed.key")


def policy(**changes) -> RelayPolicy:
    return RelayPolicy(hostname="relist.test", authserv_id="relist.test",
                       lists=(replace(LP, **changes),))


TXT = {
    "s1._domainkey.example.net": dns_record(POSTER_KEY),
    "r1._domainkey.lists.example.org": dns_record(LIST_RSA),
    "e1._domainkey.lists.example.org": dns_record(LIST_ED),
    "up._domainkey.upstream.example": dns_record(UPSTREAM_ARC),
    "_dmarc.example.net": "v=DMARC1; p=reject",
}


def facts_for(raw: bytes, relay: RelayPolicy, txt: dict | None = None, steps=FULL,
              temperror: tuple[str, ...] = ()) -> Facts:
    """Answer every question the core asks, as an edge would: from ``txt``, else NXDOMAIN."""
    txt = {**TXT, **(txt or {})}
    facts = Facts()
    for _ in range(16):
        wanted = pipeline.plan(raw, relay, facts, steps)
        if not wanted:
            break
        new = {}
        for q in wanted:
            if q.qname in temperror:
                new[q] = Answer(Status.TEMPERROR, (), "timeout")
            elif txt.get(q.qname) is not None:
                new[q] = Answer(Status.FOUND, (txt[q.qname].encode(),))
            else:
                new[q] = Answer(Status.ABSENT, (), "NXDOMAIN")
        facts = facts.merged(Facts(new))
    return facts


def context(raw: bytes, relay: RelayPolicy | None = None, *, txt=None, keys=KEYS, rcpt="m@example.com",
            relist_id="R1", now=NOW, upstream_8bitmime=True, temperror=()) -> Context:
    relay = relay or policy()
    return Context(envelope=Envelope("dev-bounces@lists.example.org", (rcpt,), client_ip="127.0.0.1",
                                 client_helo="mailman.test"),
               policy=relay, now=now, relist_id=relist_id,
               facts=facts_for(raw, relay, txt, temperror=temperror), keys=keys,
               upstream_8bitmime=upstream_8bitmime)


def signed_post(body: bytes = b"Hello list\r\n", frm: bytes = b"Alice Example <alice@example.net>",
                extra: bytes = b"", poster_headers=None) -> bytes:
    """A post as Mailman hands it over, carrying the poster's aligned DKIM signature."""
    msg = (b"From: " + frm + b"\r\n"
           b"To: dev@lists.example.org\r\n"
           b"Subject: hello\r\n"
           b"Date: Sun, 1 Mar 2026 11:58:00 +0000\r\n"
           b"Message-ID: <abc@example.net>\r\n"
           b"List-Id: Dev <dev.lists.example.org>\r\n" + extra +
           b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
           b"\r\n" + body)
    return sign_dkim(msg, domain="example.net", selector="s1", key=POSTER_KEY,
                     now=NOW - timedelta(minutes=2), headers=poster_headers) + msg


def run(raw: bytes, ctx: Context | None = None, steps=FULL):
    ctx = ctx or context(raw)
    return pipeline.process(raw, ctx, steps)


def note(outcome, step: str):
    return next(n for n in outcome.record.steps if n.step == step)


def verify_out(out: bytes, relay: RelayPolicy | None = None):
    """relist's own verdict on the output, DNS from TXT (list keys published)."""
    relay = relay or policy()
    facts = facts_for(out, relay, steps=(verify,))
    return verify_message(RawMessage.parse(out), facts, NOW + timedelta(minutes=1))


def dnsfunc(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    value = TXT.get(name.rstrip("."))
    return value.encode() if value else None


def dkimpy_ok(message: bytes, idx: int) -> bool:
    try:
        return bool(dkim.DKIM(message).verify(idx=idx, dnsfunc=dnsfunc))
    except dkim.DKIMException:
        return False


def list_sigs(verdict):
    return [s for s in verdict.dkim if s.domain == "lists.example.org"]


# -- sign ---------------------------------------------------------------------------------

@pytest.mark.parametrize("eol", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_rsa_and_ed25519_signatures_verify_with_relist_and_dkimpy(eol):
    raw = signed_post().replace(b"\r\n", eol)
    outcome = run(raw)
    out = outcome.message
    assert note(outcome, "sign").action == Action.APPLIED
    fields = RawMessage.parse(out).get_all("dkim-signature")
    mine = [f for f in fields if b"d=lists.example.org" in f.raw]
    assert [b"a=rsa-sha256" in f.raw for f in mine] == [True, False]   # RSA on top, then Ed25519
    assert all(f.raw.endswith(eol) and (eol == b"\r\n" or b"\r" not in f.raw) for f in mine)
    verdict = verify_out(out)
    assert [(s.algorithm, str(s.result)) for s in list_sigs(verdict)] == [
        ("rsa-sha256", "pass"), ("ed25519-sha256", "pass")]
    # dkimpy: every signature, by index (0 and 1 are the list's; 2 the poster's, broken
    # by the footer and the Subject prefix).
    assert dkimpy_ok(out, 0) and dkimpy_ok(out, 1)
    assert not dkimpy_ok(out, 2)
    tampered = out.replace(b"Hello list", b"Hello lisp")
    assert not dkimpy_ok(tampered, 0) and not dkimpy_ok(tampered, 1)


def test_ttl_canonicalization_and_custom_headers_are_applied():
    relay = policy(canonicalization="simple/simple", signature_ttl=3600,
                   sign_headers=("Subject", "Date"), ed25519_selector="")
    raw = signed_post()
    out = run(raw, context(raw, relay)).message
    field = RawMessage.parse(out).get("dkim-signature")
    tags = dict(t.strip().split("=", 1) for t in re.sub(rb"\r\n[ \t]", b"", field.value).decode().split(";"))
    assert tags["c"] == "simple/simple" and int(tags["x"]) - int(tags["t"]) == 3600
    # configured names oversigned, From and X-Original-From always added
    assert [n.strip() for n in tags["h"].split(":")] == ["subject", "subject", "date", "date", "from", "from",
                                    "x-original-from", "x-original-from"]
    assert str(list_sigs(verify_out(out, relay))[0].result) == "pass"


@pytest.mark.parametrize("lp_change, expect", [
    ({"selector": "", "ed25519_selector": ""}, "no selector configured"),
], ids=["no-selector"])
def test_sign_skips_with_reason(lp_change, expect):
    raw = signed_post()
    outcome = run(raw, context(raw, policy(**lp_change)))
    n = note(outcome, "sign")
    assert n.action == Action.SKIPPED and expect in n.detail
    assert b"d=lists.example.org" not in outcome.message


def test_unknown_list_is_skipped_by_every_signing_step():
    raw = signed_post().replace(b"List-Id: Dev <dev.lists.example.org>\r\n", b"")
    ctx = context(raw)
    ctx = replace(ctx, envelope=replace(ctx.envelope, mail_from="someone@example.com"))
    outcome = pipeline.process(raw, ctx, FULL)
    for step in ("downgrade", "dmarc-mitigation", "sign", "arc-seal"):
        assert note(outcome, step).action == Action.SKIPPED
        assert note(outcome, step).detail.startswith("no list")


@pytest.mark.parametrize("keys", [{}, {"/k/rsa.key": LIST_RSA}], ids=["none", "ed25519-missing"])
def test_missing_key_defers(keys):
    raw = signed_post()
    outcome = run(raw, context(raw, keys=keys))
    assert outcome.message is None
    assert outcome.reply.code == 451 and "signing key not loaded" in outcome.reply.text
    assert "/k/" not in outcome.reply.text            # no path, no key material in replies


# -- arc-seal -------------------------------------------------------------------------------

def test_arc_seal_cv_none_verifies_with_relist_and_dkimpy():
    raw = signed_post()
    outcome = run(raw)
    n = note(outcome, "arc-seal")
    assert n.action == Action.APPLIED and "i=1 cv=none" in n.detail
    out = outcome.message
    verdict = verify_out(out)
    assert verdict.arc.cv == "pass" and verdict.arc.instances == 1
    cv, _, reason = dkim.arc_verify(out, dnsfunc=dnsfunc)
    assert cv == dkim.CV_Pass, reason
    msg = RawMessage.parse(out)
    # the AMS covers the list's DKIM-Signatures, the AAR carries relist's own results
    ams = msg.get("arc-message-signature").text()
    assert ams.count("dkim-signature") == 3
    aar = msg.get("arc-authentication-results").text()
    assert aar.startswith("i=1; relist.test;") and "dkim=pass" in aar and "dmarc=pass" in aar


def test_arc_seal_continues_a_passing_chain_and_ignores_forged_results():
    inner = signed_post()
    up = seal_arc(inner, domain="upstream.example", selector="up", key=UPSTREAM_ARC,
                  authserv_id="upstream.example", cv="none", results="dkim=pass", now=NOW)
    # A forged AR claiming relist's authserv-id and arc=fail must not reach the AAR.
    forged = b"Authentication-Results: relist.test; arc=fail; dkim=fail\r\n"
    raw = forged + b"".join(up.fields) + inner
    outcome = run(raw)
    assert "i=2 cv=pass" in note(outcome, "arc-seal").detail
    out = outcome.message
    verdict = verify_out(out)
    assert verdict.arc.cv == "pass" and verdict.arc.instances == 2
    cv, _, reason = dkim.arc_verify(out, dnsfunc=dnsfunc)
    assert cv == dkim.CV_Pass, reason
    aar = [f.text() for f in RawMessage.parse(out).get_all("arc-authentication-results")
           if f.text().startswith("i=2")][0]
    assert "arc=pass" in aar and "arc=fail" not in aar


@pytest.mark.parametrize("change, expect", [
    ({"arc_seal": False}, "arc_seal = false"),
    ({"selector": ""}, "no RSA selector"),
])
def test_arc_seal_skips_with_reason(change, expect):
    raw = signed_post()
    outcome = run(raw, context(raw, policy(**change)))
    n = note(outcome, "arc-seal")
    assert n.action == Action.SKIPPED and expect in n.detail
    assert b"ARC-Seal" not in outcome.message


def test_arc_seal_skips_when_the_chain_is_over():
    inner = signed_post()
    up = seal_arc(inner, domain="upstream.example", selector="up", key=UPSTREAM_ARC,
                  authserv_id="upstream.example", cv="none", results="dkim=pass", now=NOW)
    raw = b"".join(up.fields).replace(b"cv=none", b"cv=fail") + inner
    outcome = run(raw)
    n = note(outcome, "arc-seal")
    assert n.action == Action.SKIPPED and "cv=fail" in n.detail


# -- sign once per post -------------------------------------------------------------------------

class CountingKey:
    """Wraps a cryptography private key and counts RSA signing operations."""

    def __init__(self, private):
        self.private, self.calls = private, 0

    def sign(self, *args):
        self.calls += 1
        return self.private.sign(*args)

    def __getattr__(self, name):
        return getattr(self.private, name)


def test_500_transactions_sign_once():
    counting = CountingKey(LIST_RSA.private)
    keys = {"/k/rsa.key": SigningKey("rsa-sha256", counting), "/k/ed.key": LIST_ED}
    raw = signed_post()
    base = context(raw, keys=keys)
    one = pipeline.process(raw, base, FULL)
    per_post = counting.calls
    assert per_post == 3                      # DKIM + AMS + ARC-Seal
    counting.calls = 0
    cache = signcache.SignCache()
    outputs = set()
    for n in range(500):
        rcpts = tuple(f"m{n}-{i}@example.com" for i in range(1 + n % 10))
        ctx = replace(base, relist_id=f"R{n:04d}", now=NOW + timedelta(seconds=n % 60),
                      envelope=replace(base.envelope, rcpt_tos=rcpts))
        outcome, cache = signcache.process_with(cache, raw, ctx, FULL)
        out = outcome.message
        outputs.add(out)
        assert outcome.record.relist_id == f"R{n:04d}"
        # relist's own Received names this transaction; the rest is the first one's
        received = RawMessage.parse(out).get_all("received")[0].text()
        assert f"id R{n:04d}" in received
        if n:
            assert note(outcome, "sign-cache").action == Action.RECORDED
    assert counting.calls == per_post          # one DKIM signature and one ARC set in total
    assert len(outputs) == 500
    strip = [re.sub(rb"Received: from mailman.test[^;]*;[^\r]*\r\n", b"", o) for o in outputs]
    assert len(set(strip)) == 1
    # the reused output still verifies (Received is covered by nothing)
    verdict = verify_out(next(iter(outputs)))
    assert [str(s.result) for s in list_sigs(verdict)] == ["pass", "pass"]
    assert verdict.arc.cv == "pass"
    assert one.message != next(iter(outputs))  # different Received (relist id)


def test_cache_respects_expiry_policy_and_input():
    counting = CountingKey(LIST_RSA.private)
    keys = {"/k/rsa.key": SigningKey("rsa-sha256", counting), "/k/ed.key": LIST_ED}
    raw = signed_post()
    ctx = context(raw, keys=keys)
    cache = signcache.SignCache(ttl=60)
    _, cache = signcache.process_with(cache, raw, ctx, FULL)
    assert counting.calls == 3
    _, cache = signcache.process_with(cache, raw, replace(ctx, now=NOW + timedelta(seconds=59)), FULL)
    assert counting.calls == 3                                  # hit
    _, cache = signcache.process_with(cache, raw, replace(ctx, now=NOW + timedelta(seconds=61)), FULL)
    assert counting.calls == 6                                  # expired: signed again
    other = replace(ctx, now=NOW + timedelta(seconds=62), policy=policy(subject_prefix="[x] "))
    _, cache = signcache.process_with(cache, raw, other, FULL)
    assert counting.calls == 9                                  # other policy: another key
    _, cache = signcache.process_with(cache, raw + b"more\r\n",
                                      replace(ctx, now=NOW + timedelta(seconds=62)), FULL)
    assert counting.calls == 12                                 # other bytes
    assert signcache.lookup(cache, raw, replace(ctx, now=NOW + timedelta(seconds=63)), FULL) is not None


def test_cache_never_keeps_a_refusal_and_bounds_its_size():
    raw = signed_post()
    ctx = context(raw, keys={})
    outcome, cache = signcache.process_with(signcache.SignCache(), raw, ctx, FULL)
    assert outcome.reply.code == 451 and len(cache.entries) == 0
    small = signcache.SignCache(max_entries=2)
    ctx = context(raw)
    for i in range(4):
        _, small = signcache.process_with(small, raw + b"%d\r\n" % i, ctx, FULL)
    assert len(small.entries) == 2
    outcome, one = signcache.process_with(signcache.SignCache(), raw + b"0\r\n", ctx, FULL)
    (size,) = [e.size for e in one.entries.values()]
    ours = next(f for f in outcome.output.fields if f.name == "received" and b"by relist" in f.raw)
    assert size == outcome.output.size - len(ours.raw)   # the output it holds, less its Received
    by_bytes = signcache.SignCache(max_bytes=4 * size + 40)    # room for four
    for i in range(6):
        _, by_bytes = signcache.process_with(by_bytes, raw + b"%d\r\n" % i, ctx, FULL)
    assert len(by_bytes.entries) == 4 and sum(e.size for e in by_bytes.entries.values()) <= 4 * size + 40
    assert by_bytes.total == sum(e.size for e in by_bytes.entries.values())


# -- the real pipeline ----------------------------------------------------------------------

@pytest.mark.parametrize("mode, mitigated", [("resign", True), ("preserve", False), ("auto", False)])
def test_signing_in_the_real_pipeline(mode, mitigated):
    steps = pipeline.STEPS
    raw = signed_post()
    relay = policy(mode=mode)
    ctx = replace(context(raw, relay), facts=facts_for(raw, relay, steps=steps))
    outcome = pipeline.process(raw, ctx, steps)
    assert outcome.reply is None
    out = outcome.message
    assert note(outcome, "sign").action == Action.APPLIED
    assert note(outcome, "arc-seal").action == Action.APPLIED
    assert (note(outcome, "dmarc-mitigation").action == Action.APPLIED) is mitigated
    verdict = verify_out(out, relay)
    assert [str(s.result) for s in list_sigs(verdict)] == ["pass", "pass"]
    assert verdict.arc.cv == "pass"
    cv, _, reason = dkim.arc_verify(out, dnsfunc=dnsfunc)
    assert cv == dkim.CV_Pass, reason
    # relist's Received and AR sit below the signatures and are reused by the cache
    cache = signcache.SignCache()
    first, cache = signcache.process_with(cache, raw, ctx, steps)
    again, cache = signcache.process_with(cache, raw, replace(ctx, relist_id="R2"), steps)
    assert note(again, "sign-cache").action == Action.RECORDED
    assert again.message == first.message.replace(b"with ESMTP id R1", b"with ESMTP id R2")


def test_the_configuration_part_of_the_cache_key_is_digested_once_and_unhashable_values_still_key():
    relay = policy()
    signcache._configured_cached.cache_clear()
    signcache._LAST[0] = None
    first = signcache._configured(relay, (), FULL)
    assert signcache._configured(relay, (), FULL) == first          # the same objects: no hashing
    assert signcache._configured_cached.cache_info().hits == 0
    assert signcache._configured(policy(), (), FULL) == first        # an equal policy: by value
    assert signcache._configured_cached.cache_info().hits == 1
    assert signcache._configured(policy(subject_prefix="[x] "), (), FULL) != first
    assert signcache._configured(relay, (("k", "rsa", 2048),), FULL) != first   # other keys
    odd = {"not": ["hashable"]}
    assert signcache._configured(odd, (), FULL) == signcache._digest_configured(odd, (), FULL)


def test_the_cache_key_names_the_list_the_same_bytes_go_to():
    """The key carries which list (its settings are in the configuration's part): the
    same bytes for two configured lists, or for a list and an address relist does not
    know, never share a signed result."""
    other = replace(LP, address="other@lists.example.org")
    relay = RelayPolicy(hostname="relist.test", authserv_id="relist.test", lists=(LP, other))
    raw = (b"From: a@example.net\r\nTo: x@example.org\r\nSubject: s\r\n"
           b"Message-ID: <k@example.net>\r\n\r\nbody\r\n")
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def key(sender: str) -> str:
        ctx = Context(envelope=Envelope(sender, ("m@example.com",)), policy=relay, now=now,
                      relist_id="R1", keys={})
        return signcache.cache_key(raw, ctx, FULL)

    dev, dev_again = key("dev-bounces@lists.example.org"), key("dev-bounces@lists.example.org")
    others, unknown = key("other-bounces@lists.example.org"), key("nobody-bounces@lists.example.org")
    assert dev == dev_again
    assert len({dev, others, unknown}) == 3
