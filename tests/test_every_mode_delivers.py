"""Every mode delivers: one rule, decided on the bytes that leave (docs/modes.md).

Through the whole core (``pipeline.STEPS``) over posts really signed with dkimpy, with
DNS facts from a table: repair in every mode, keep what survives, never ship a
rejection (preserve included), auto decided after trying, and a From that receivers
and mail clients handle.  The start-up refusal of a list that cannot sign is at the
end, through ``relist serve`` itself.
"""

from __future__ import annotations

import email
import subprocess
import sys
from dataclasses import replace
from email import policy as email_policy

import pytest

from relist.config import ConfigError, check_signing, parse
from relist.core import pipeline
from relist.core.ingress import IngressCopy
from relist.core.message import RawMessage
from relist.core.model import Action, Work
from relist.core.steps import dmarc_mitigation
from tests.modes_support import DECORATE, DNS, POST, context, note, poster_results, relay_policy, run, sign

LIST = "ant@lists.example.org"
REJECT, QUARANTINE, NONE = "v=DMARC1; p=reject", "v=DMARC1; p=quarantine", "v=DMARC1; p=none"


def dns(policy: str | None) -> dict:
    return {**DNS, "_dmarc.poster.example": policy}


def mailman_prefixed(signed: bytes) -> bytes:
    """What Mailman sends for a decorated list: the Subject prefixed (not repairable)."""
    return signed.replace(b"Subject: hello list", b"Subject: [ant] hello list")


def egress(out: bytes, signed: bytes, policy: str | None, **settings):
    """``out`` (Mailman's copy) through the core, with ``signed`` as the ingress copy."""
    return run(out, relay_policy(**settings), dns(policy), ingress=(IngressCopy("in1", signed),),
               extra_facts=signed)


def froms(work) -> list[bytes]:
    return [f.raw for f in work.message.get_all("from")]


def mitigated(work) -> bool:
    return froms(work) != [] and froms(work)[0].rstrip().endswith(b"<ant@lists.example.org>")


# -- never ship a rejection, in every mode -----------------------------------------------------

@pytest.mark.parametrize("mode", ["preserve", "resign", "auto"])
@pytest.mark.parametrize("policy", [REJECT, QUARANTINE])
def test_unsigned_post_from_a_strict_domain_is_mitigated_in_every_mode(mode, policy):
    work, _ = run(POST, relay_policy(mode=mode), dns(policy))
    n = note(work, "dmarc-mitigation")
    assert n.action == Action.APPLIED, n.detail
    assert "no aligned poster signature passed on arrival" in n.detail
    assert mitigated(work) and len(froms(work)) == 1


@pytest.mark.parametrize("mode", ["preserve", "resign", "auto"])
def test_a_signature_mailman_broke_is_mitigated_in_every_mode(mode):
    signed = sign(POST)
    work, ctx = egress(mailman_prefixed(signed), signed, REJECT, mode=mode)
    assert note(work, "verify").detail.startswith("as received by ingress")
    n = note(work, "dmarc-mitigation")
    assert n.action == Action.APPLIED, n.detail
    assert "no aligned poster signature survives (poster.example/s1 broken by mailman)" in n.detail
    assert mitigated(work)
    # the broken signature does not travel; nothing of the poster's fails at the recipient
    assert poster_results(work.message.to_bytes(), ctx) == []
    assert note(work, "strip").detail.startswith("strip = broken: removed 1 DKIM-Signature "
                                                 "the final bytes break")


def test_preserve_under_p_none_does_not_munge_a_broken_post():
    signed = sign(POST)
    work, _ = egress(mailman_prefixed(signed), signed, NONE, mode="preserve")
    n = note(work, "dmarc-mitigation")
    assert n.action == Action.SKIPPED and "p=none for poster.example" in n.detail
    assert froms(work) == [b"From: Alice Poster <alice@poster.example>\r\n"]


@pytest.mark.parametrize("policy", [NONE, None, REJECT])
def test_evidence_mitigates_whatever_the_policy_when_nothing_aligned_survives(policy):
    signed = sign(POST)
    work, _ = egress(mailman_prefixed(signed), signed, policy, mode="preserve", dmarc_trigger="evidence")
    n = note(work, "dmarc-mitigation")
    assert (n.action == Action.APPLIED
            and n.detail.startswith("mitigating (dmarc_trigger = evidence)")), n.detail
    assert mitigated(work)


@pytest.mark.parametrize("trigger", ["policy", "evidence"])
@pytest.mark.parametrize("mode", ["preserve", "resign", "auto"])
def test_a_surviving_aligned_signature_is_never_munged(mode, trigger):
    work, ctx = run(sign(POST), relay_policy(mode=mode, dmarc_trigger=trigger, reply_to="list"), dns(REJECT))
    n = note(work, "dmarc-mitigation")
    assert n.action == Action.SKIPPED
    assert n.detail == "no mitigation: the aligned signature poster.example/s1 survives"
    assert [s.result for s in poster_results(work.message.to_bytes(), ctx)] == ["pass"]
    assert froms(work) == [b"From: Alice Poster <alice@poster.example>\r\n"]


def test_always_mitigates_even_a_surviving_signature():
    work, _ = run(sign(POST), relay_policy(mode="preserve", dmarc_trigger="always"), dns(REJECT))
    assert note(work, "dmarc-mitigation").detail.startswith("mitigating: dmarc_trigger = always")
    assert mitigated(work)
    assert dict(work.known.breakage)["poster.example/s1"] == "dmarc-mitigation"


def test_dmarc_mitigation_none_is_respected_in_every_mode():
    for mode in ("preserve", "resign", "auto"):
        work, _ = run(POST, relay_policy(mode=mode, dmarc_mitigation="none"), dns(REJECT))
        assert note(work, "dmarc-mitigation").detail == "no mitigation: dmarc_mitigation = none"


# -- keep what survives; repair in every mode -----------------------------------------------------

def test_resign_keeps_the_poster_signature_mailman_left_intact_under_p_none():
    # Mailman alone would have passed DMARC here; relist must not take that away.
    signed = sign(POST)
    work, ctx = egress(signed, signed, NONE, mode="resign")
    assert [s.result for s in poster_results(work.message.to_bytes(), ctx)] == ["pass"]
    assert dict(work.known.breakage) == {"poster.example/s1": "survived"}


def test_resign_repairs_what_mailman_broke_by_accident():
    body = POST.replace(b"Hello list.\r\n", b"Hello list.\r\nFrom the start.\r\n")
    signed = sign(body)
    out = signed.replace(b"\r\nFrom the start.", b"\r\n>From the start.")
    work, ctx = egress(out, signed, NONE, mode="resign")
    assert note(work, "repair").action == Action.APPLIED
    assert [s.result for s in poster_results(work.message.to_bytes(), ctx)] == ["pass"]


# -- auto: decided after trying ------------------------------------------------------------------

def test_auto_falls_back_to_resign_when_mailman_broke_the_aligned_signature():
    signed = sign(POST)
    work, _ = egress(mailman_prefixed(signed), signed, REJECT, mode="auto", footer="-- \nant\n")
    assert work.known.mode_chosen == "resign"
    assert note(work, "mode").detail == ("resign (auto: tried preserve, but no aligned poster signature "
                                         "survives (poster.example/s1 broken by mailman))")
    assert note(work, "footer").action == Action.APPLIED     # the list's decoration, not skipped
    assert mitigated(work)
    # only the final run's notes are recorded: one note per step
    assert [n.step for n in work.notes].count("footer") == 1


def test_auto_preserves_when_repair_saves_the_signature():
    body = POST.replace(b"Hello list.\r\n", b"Hello list.\r\nFrom the start.\r\n")
    signed = sign(body)
    out = signed.replace(b"\r\nFrom the start.", b"\r\n>From the start.")
    work, ctx = egress(out, signed, REJECT, mode="auto", **DECORATE)
    assert work.known.mode_chosen == "preserve", note(work, "mode").detail
    assert note(work, "footer").action == Action.SKIPPED
    assert note(work, "dmarc-mitigation").action == Action.SKIPPED
    assert [s.result for s in poster_results(work.message.to_bytes(), ctx)] == ["pass"]


def test_auto_falls_back_when_the_required_downgrade_breaks_the_signature():
    # The MTA has no 8BITMIME: the 8-bit body must be re-encoded, which breaks the body
    # hash whatever the mode; so preserve cannot keep it, and auto re-signs.
    body = POST.replace(b"charset=us-ascii", b"charset=utf-8").replace(
        b"Hello list.", "Grüße an die Liste.".encode())
    raw = sign(body)
    ctx = replace(context(raw, relay_policy(mode="auto"), dns(REJECT)), upstream_8bitmime=False)
    work = Work(RawMessage.parse(raw))
    for step in pipeline.STEPS:
        work = step.apply(work, ctx)
    assert note(work, "downgrade").action == Action.APPLIED
    assert work.known.mode_chosen == "resign"
    assert "poster.example/s1 broken by unguarded step" in note(work, "mode").detail
    assert mitigated(work)


# -- the From a mitigation writes ------------------------------------------------------------------

def parsed(work):
    return email.message_from_bytes(work.message.to_bytes(), policy=email_policy.default)


@pytest.mark.parametrize("from_field, shown", [
    (b"From: Alice Poster <alice@poster.example>", "Alice Poster via ant"),
    (b'From: "Poster, Alice (Dr.)" <alice@poster.example>', "Poster, Alice (Dr.) via ant"),
    (b'From: "Bob \\"The\\" Builder" <alice@poster.example>', 'Bob "The" Builder via ant'),
    ("From: Zoë Ünic <alice@poster.example>".encode(), "Zoë Ünic via ant"),          # raw UTF-8 (RFC 6532)
    (b"From: =?utf-8?q?Zo=C3=AB_=C3=9Cnic?= <alice@poster.example>", "Zoë Ünic via ant"),
    (b"From: \xff\xfe junk <alice@poster.example>", "\ufffd\ufffd junk via ant"),      # not UTF-8 at all
    (b"From: alice@poster.example", "alice via ant"),
], ids=["plain", "specials", "quotes", "raw-utf8", "rfc2047", "8bit-junk", "bare"])
def test_munged_from_is_one_well_formed_field(from_field, shown):
    raw = POST.replace(b"From: Alice Poster <alice@poster.example>", from_field)
    work, _ = run(raw, relay_policy(mode="preserve"), dns(REJECT))
    assert note(work, "dmarc-mitigation").action == Action.APPLIED, note(work, "dmarc-mitigation").detail
    assert len(froms(work)) == 1 and froms(work)[0].isascii()    # quoted or RFC 2047, never raw
    m = parsed(work)
    (addr,) = m["From"].addresses
    assert (addr.display_name, addr.addr_spec) == (shown, LIST)
    assert m["Reply-To"].addresses[0].addr_spec == "alice@poster.example"
    assert m["X-Original-From"] is not None


def test_a_from_too_nested_for_the_parser_is_still_munged():
    # thousands of nested comments make the standard parser recurse too deep
    msg = RawMessage.parse(POST.replace(b"From: Alice Poster <alice@poster.example>",
                                        b"From: " + b"(" * 1200 + b"x" + b")" * 1200
                                        + b" Alice <alice@poster.example>"))
    out, detail = dmarc_mitigation.munge(msg, relay_policy().lists[0])
    assert detail.startswith(f"From: {LIST} for alice@poster.example"), detail
    assert [f.raw for f in out.get_all("from")] == [b'From: "alice via ant" <ant@lists.example.org>\r\n']


# -- a list that cannot sign does not start -------------------------------------------------------

def relay_of(lists: dict, defaults: dict | None = None):
    return parse({"lists": lists, **({"list_defaults": defaults} if defaults else {})}).relay


@pytest.mark.parametrize("mode", ["resign", "auto"])
def test_resign_or_auto_without_a_key_is_a_start_up_error(mode):
    with pytest.raises(ConfigError) as err:
        check_signing(relay_of({LIST: {"mode": mode}}))
    text = str(err.value)
    assert f"[lists.'{LIST}'] mode = '{mode}'" in text and "selector and private_key" in text
    assert "sign = false" in text


def test_sign_false_and_preserve_start_with_a_warning_at_most():
    def about_lists(relay):
        return [w for w in check_signing(relay) if not w.startswith("[list_defaults]")]
    assert about_lists(relay_of({LIST: {"mode": "resign", "sign": False}})) == []
    warnings = about_lists(relay_of({LIST: {"mode": "preserve"}}))
    assert len(warnings) == 1 and "preserve mode without a signing key" in warnings[0]
    assert about_lists(relay_of({LIST: {"mode": "auto", "selector": "s", "private_key": "/k"}})) == []
    assert check_signing(relay_of({}, {"selector": "s", "private_key": "/k"})) == []
    # lists without a section fall back to key-less defaults: said, not refused
    assert any("[list_defaults]" in w for w in check_signing(relay_of({})))


def test_a_selector_without_its_key_file_is_refused():
    with pytest.raises(ConfigError, match="selector is set but private_key is not"):
        check_signing(relay_of({LIST: {"mode": "preserve", "selector": "s"}}))
    with pytest.raises(ConfigError, match="ed25519_private_key is set but ed25519_selector is not"):
        check_signing(relay_of({LIST: {"mode": "resign", "selector": "s", "private_key": "/k",
                                       "ed25519_private_key": "/e"}}))


def test_relist_serve_exits_2_naming_the_list(tmp_path):
    conf = tmp_path / "relist.toml"
    conf.write_text(f'[server]\nlisten = "127.0.0.1:1"\n[store]\npath = "{tmp_path}/r.db"\n'
                    f'[lists."{LIST}"]\nmode = "resign"\n')
    out = subprocess.run([sys.executable, "-m", "relist", "serve", "-c", str(conf)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert f"[lists.'{LIST}'] mode = 'resign' but the list has no signing key" in out.stderr


# -- review findings: strip = "all", DNS temperror, the list's own From ---------------------------

@pytest.mark.parametrize("policy", [REJECT, QUARANTINE])
def test_strip_all_in_resign_mode_counts_as_nothing_surviving(policy):
    # The poster's signature would survive the changes, but strip = "all" removes it:
    # without mitigation the post would leave with a p=reject From and no aligned signature.
    work, _ = run(sign(POST), relay_policy(mode="resign", strip="all"), dns(policy))
    n = note(work, "dmarc-mitigation")
    assert n.action == Action.APPLIED and 'strip = "all" removes them' in n.detail, n.detail
    assert mitigated(work) and work.message.get_all("dkim-signature") == ()


def test_a_signature_whose_key_lookup_failed_is_kept():
    # DNS temperror on arrival: undecided, not broken; the receiver may verify it.
    raw = sign(POST)
    work, ctx = run(raw, relay_policy(mode="resign", dmarc_mitigation="none"),
                    {k: v for k, v in DNS.items() if not k.startswith("s1._domainkey")}
                    | {"_dmarc.poster.example": NONE})
    assert [str(s.result) for s in work.known.verdict.dkim] != ["pass"]
    # the table's absent key is NXDOMAIN (a definite fail): removed ...
    assert work.message.get_all("dkim-signature") == ()
    # ... while a temperror keeps it
    from relist.core.facts import Answer, Facts, Question, Status
    ctx2 = replace(ctx, facts=ctx.facts.merged(Facts({Question.txt("s1._domainkey.poster.example"):
                                                       Answer(Status.TEMPERROR, (), "timeout")})))
    work = Work(RawMessage.parse(raw))
    for step in pipeline.STEPS:
        work = step.apply(work, ctx2)
    assert [str(s.result) for s in work.known.verdict.dkim] == ["temperror"]
    assert len(work.message.get_all("dkim-signature")) == 1
    assert note(work, "strip").action == Action.SKIPPED


def test_sign_failing_for_a_from_in_the_lists_domain_is_refused(monkeypatch):
    # A Mailman notice (From: the list's -request address) relies on the list's signature.
    from relist.core.steps import dkim_sign as sign_step

    def refuse(*args, **kwargs):
        raise sign_step.SignError("not today")
    monkeypatch.setattr(sign_step, "sign_dkim", refuse)
    notice = POST.replace(b"From: Alice Poster <alice@poster.example>",
                          b"From: ant-request@lists.example.org")
    lp = relay_policy(mode="resign", selector="s", private_key="/k/rsa.key")
    ctx = replace(context(notice, lp, dns(REJECT)), keys={"/k/rsa.key": object()})
    out = pipeline.process(notice, ctx)
    assert out.message is None and (out.reply.code, out.reply.enhanced) == (554, "5.6.0")
    assert "From is in the list's domain" in out.reply.text
