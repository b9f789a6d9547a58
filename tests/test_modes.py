"""Per-list modes (preserve, resign, auto), the preserve guard and the strip step,
over posts really signed with dkimpy and keys generated here.  The helpers are
in tests/modes_support.py."""

from __future__ import annotations

import pytest

from relist.core import guard, pipeline
from relist.core.message import RawMessage
from relist.core.model import Action
from relist.core.policy import RelayPolicy
from tests.modes_support import (
    DECORATE,
    DNS,
    LIST,
    POST,
    TRANSFORMS,
    H,
    context,
    mail_dkim,
    note,
    poster_results,
    relay_policy,
    run,
    sign,
)
from tests.helpers import needs_mail_dkim


def test_preserve_skips_what_would_break_and_applies_what_is_outside_h():
    raw = sign(POST)
    work, ctx = run(raw, relay_policy(mode="preserve", **DECORATE))
    assert work.known.mode_chosen == "preserve"
    assert note(work, "footer").action == Action.SKIPPED
    assert note(work, "footer").detail == "footer skipped: would break poster.example/s1 (body hash)"
    assert note(work, "subject-prefix").detail == \
        "subject-prefix skipped: would break poster.example/s1 (signed header fields)"
    # X-Junk, Sender, List-*, Reply-To are in no h=: applied without re-verifying.
    for step in ("remove-headers", "sender", "list-headers", "reply-to"):
        assert note(work, step).action == Action.APPLIED, step
    assert note(work, "strip").action == Action.SKIPPED
    out = work.message.to_bytes()
    msg = RawMessage.parse(out)
    assert msg.get("x-junk") is None and msg.header_text("sender") == "ant-bounces@lists.example.org"
    assert msg.header_text("reply-to") == LIST and msg.get("list-id") is not None
    assert msg.header_text("subject") == "hello list" and msg.body == b"Hello list.\r\n"
    assert [s.result for s in poster_results(out, ctx)] == ["pass"]
    assert work.known.breakage == (("poster.example/s1", "survived"),)


def test_list_headers_keep_does_not_add_a_field_whose_absence_is_signed():
    # h= names List-Id: the poster signed its absence; the other list fields are added.
    for mode in ("preserve", "resign"):
        work, ctx = run(sign(POST, headers=H + ("list-id",)), relay_policy(mode=mode, reply_to="list"))
        assert note(work, "list-headers").detail.endswith(
            "; not added: List-Id (a poster signature signs their absence)")
        assert work.message.get("list-id") is None and work.message.get("list-post") is not None
        assert [s.result for s in poster_results(work.message.to_bytes(), ctx)] == ["pass"]
    # once a change the list wants broke the signature anyway, List-Id is added
    work, _ = run(sign(POST, headers=H + ("list-id",)), relay_policy(mode="resign", **DECORATE))
    assert work.message.get("list-id") is not None


@pytest.mark.parametrize("signed, step", [
    ("sender", "sender"),           # h= names Sender: the poster signed its absence
    ("reply-to", "reply-to"),
    ("x-junk", "remove-headers"),
])
def test_preserve_guards_every_transformation_by_h(signed, step):
    raw = sign(POST, headers=H + (signed,))
    work, ctx = run(raw, relay_policy(mode="preserve", **DECORATE))
    assert note(work, step).detail == f"{step} skipped: would break poster.example/s1 (signed header fields)"
    assert [s.result for s in poster_results(work.message.to_bytes(), ctx)] == ["pass"]


def test_preserve_without_signature_applies_everything():
    work, _ = run(POST, relay_policy(mode="preserve", **DECORATE))
    assert [note(work, s).action for s in TRANSFORMS] == [Action.APPLIED] * 6


def test_footer_outside_l_is_applied_and_recorded_as_a_known_risk():
    raw = sign(POST, length=True)
    work, ctx = run(raw, relay_policy(mode="preserve", footer="-- \nant list\n"))
    footer = note(work, "footer")
    assert footer.action == Action.APPLIED
    assert "known risk: poster.example/s1 signs only the first 13 body octets (l=)" in footer.detail
    assert work.message.body.endswith(b"ant list\r\n")
    assert [s.result for s in poster_results(work.message.to_bytes(), ctx)] == ["pass"]


def test_guard_reverifies_only_changes_a_signature_covers(recheck_calls):
    calls = recheck_calls
    raw = sign(POST)
    run(raw, relay_policy(mode="preserve", reply_to="list", remove_headers=("X-Junk",)))
    assert calls == []          # X-Junk, Sender, List-*, Reply-To, Received, A-R: outside h=
    run(raw, relay_policy(mode="preserve", **DECORATE))
    assert calls == [["poster.example/s1"], ["poster.example/s1"]]   # subject-prefix, footer


@pytest.mark.replaces_core
def test_covered_header_change_that_keeps_the_signature_is_applied(monkeypatch):
    # h= names Authentication-Results once; the verifier takes the bottom-most one (RFC 6376
    # §5.4.2), so relist's field on top changes a covered name without breaking it.
    calls = []
    real = guard.recheck

    def counting(msg, sigs, ctx, body_same=False, before=None):
        calls.append((body_same, before is not None))
        return real(msg, sigs, ctx, body_same, before)
    monkeypatch.setattr(guard, "recheck", counting)
    raw = sign(b"Authentication-Results: mx.poster.example; spf=pass\r\n" + POST,
               headers=H + ("authentication-results",), canon=(b"simple", b"simple"))
    work, ctx = run(raw, relay_policy(mode="preserve"))
    assert note(work, "authres").action == Action.APPLIED
    # The header input only, compared with the message before (no body hash, no crypto).
    assert calls == [(True, True)]
    assert [s.result for s in poster_results(work.message.to_bytes(), ctx)] == ["pass"]


@needs_mail_dkim
def test_preserve_output_verifies_with_mail_dkim(tmp_path):
    work, _ = run(sign(POST), relay_policy(mode="preserve", **DECORATE))
    out = work.message.to_bytes()
    assert mail_dkim(out, tmp_path).startswith("pass\n")
    assert mail_dkim(out + b"more\r\n", tmp_path).startswith("fail\n")   # negative control


# -- resign and strip -----------------------------------------------------------------------

EXTRA = (b"DomainKey-Signature: a=rsa-sha1; c=nofws; d=poster.example; s=dk;\r\n"
         b"\tb=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n"
         b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=mx.example; s=arc; b=AAAA\r\n")


def test_resign_applies_all_and_strips_poster_signatures():
    raw = sign(EXTRA + POST)
    work, ctx = run(raw, relay_policy(mode="resign", **DECORATE))
    assert work.known.mode_chosen == "resign"
    assert [note(work, s).action for s in TRANSFORMS] == [Action.APPLIED] * 6
    assert note(work, "strip").detail.startswith(
        "strip = broken: removed 1 DKIM-Signature the final bytes break (poster.example/s1), "
        "1 DomainKey-Signature (poster.example/dk)")
    msg = work.message
    assert msg.get_all("dkim-signature") == () and msg.get_all("domainkey-signature") == ()
    assert len(msg.get_all("arc-seal")) == 1       # ARC fields stay
    assert msg.header_text("subject") == "[ant] hello list"
    assert msg.body.endswith(b"ant list\r\n")


def test_strip_broken_keeps_what_still_verifies():
    good = sign(POST)
    bad = sign(good, selector="s2", key="s1")    # s2's DNS key is another key: fails
    work, ctx = run(bad, relay_policy(mode="resign", strip="broken", dmarc_mitigation="none"))
    assert [s.result for s in work.known.verdict.dkim] == ["fail", "pass"]
    assert note(work, "strip").detail == ("strip = broken: removed 1 DKIM-Signature the final bytes break "
                                          "(poster.example/s2); kept 1 valid; ARC fields kept")
    results = poster_results(work.message.to_bytes(), ctx)
    assert [(s.selector, s.result) for s in results] == [("s1", "pass")]


def test_strip_broken_removes_what_a_step_broke():
    work, _ = run(sign(POST), relay_policy(mode="resign", strip="broken", footer="-- \nant\n"))
    assert note(work, "strip").detail.startswith(
        "strip = broken: removed 1 DKIM-Signature the final bytes break (poster.example/s1)")


def test_resign_keeps_a_poster_signature_the_final_bytes_still_verify():
    # The default strip = "broken": nothing the list configured touches the signed bytes,
    # so the poster's signature stays and still gives the post its DMARC pass.
    raw = sign(EXTRA + POST)
    work, ctx = run(raw, relay_policy(mode="resign", reply_to="list"))
    assert note(work, "strip").detail == ("strip = broken: removed 1 DomainKey-Signature "
                                          "(poster.example/dk); kept 1 valid; ARC fields kept")
    assert note(work, "dmarc-mitigation").action == Action.SKIPPED
    assert [s.result for s in poster_results(work.message.to_bytes(), ctx)] == ["pass"]
    assert work.known.breakage == (("poster.example/s1", "survived"),)


def test_strip_all_is_an_explicit_choice_in_resign_mode():
    work, ctx = run(sign(POST), relay_policy(mode="resign", strip="all", dmarc_mitigation="none"))
    assert note(work, "strip").detail.startswith(
        "strip = all: removed 1 DKIM-Signature (poster.example/s1); ARC fields kept")
    assert work.message.get_all("dkim-signature") == ()
    assert work.known.breakage == (("poster.example/s1", "strip"),)
    # preserve keeps what survives whatever strip says
    work, ctx = run(sign(POST), relay_policy(mode="preserve", strip="all"))
    assert note(work, "strip").detail.startswith("strip = all (applies to resign mode; "
                                                 "preserve keeps valid ones)")
    assert [s.result for s in poster_results(work.message.to_bytes(), ctx)] == ["pass"]


def test_preserve_keeps_every_signature():
    raw = sign(EXTRA + POST)
    work, _ = run(raw, relay_policy(mode="preserve"))
    assert note(work, "strip").detail == "strip = broken: nothing to remove"
    assert len(work.message.get_all("dkim-signature")) == 1
    assert len(work.message.get_all("domainkey-signature")) == 1


# -- auto ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dmarc, how, mode, why", [
    # Decided after trying preserve, on the bytes as they leave, whatever the policy: an
    # aligned signature that survives is the post's DMARC pass under p=none too.
    ("v=DMARC1; p=reject", "s1", "preserve", "the aligned signature poster.example/s1 survives "
                                             "the changes preserve allows"),
    ("v=DMARC1; p=quarantine", "s1", "preserve", "poster.example/s1 survives"),
    ("v=DMARC1; p=none", "s1", "preserve", "poster.example/s1 survives"),
    (None, "s1", "resign", "DMARC none for poster.example (no DMARC policy record): no alignment"),
    ("v=DMARC1; p=reject", "other", "resign", "no valid DKIM signature aligned with the From domain"),
    ("v=DMARC1; p=reject", "broken", "resign", "no valid DKIM signature aligned"),
    ("v=DMARC1; p=reject", "unsigned", "resign", "no valid DKIM signature aligned"),
])
def test_auto_decides_on_the_final_bytes(dmarc, how, mode, why):
    dns = {**DNS, "_dmarc.poster.example": dmarc}
    raw = {"s1": lambda: sign(POST), "other": lambda: sign(POST, domain="other.example", key="other"),
           "broken": lambda: sign(POST).replace(b"Hello list.", b"Hello all."),
           "unsigned": lambda: POST}[how]()
    work, _ = run(raw, relay_policy(mode="auto", footer="-- \nant\n"), dns)
    assert work.known.mode_chosen == mode
    assert note(work, "mode").detail.startswith(f"{mode} (auto: ") and why in note(work, "mode").detail
    # The footer follows from the choice: skipped to keep a signature in preserve mode.
    assert note(work, "footer").action == (Action.SKIPPED if mode == "preserve" else Action.APPLIED)


def test_fixed_modes_say_so():
    for mode in ("preserve", "resign"):
        work, _ = run(POST, relay_policy(mode=mode))
        assert note(work, "mode").detail == f"{mode} (the list's mode)"


# -- no list ------------------------------------------------------------------------------

def test_no_list_every_list_step_skips():
    raw = sign(POST)
    work, _ = run(raw, RelayPolicy(hostname="relist.test", authserv_id="relist.test"),
                  mail_from="someone@elsewhere.example")
    assert note(work, "identify").action == Action.SKIPPED
    for step in ("mode", "repair") + TRANSFORMS + ("strip",):
        assert (note(work, step).action, note(work, step).detail) == (Action.SKIPPED, "no list"), step
    assert work.known.mode_chosen == ""
    assert work.message.to_bytes().endswith(raw)   # only trace and Authentication-Results on top


def test_process_records_mode_and_breakage_in_the_record():
    raw = sign(POST)
    pol = relay_policy(mode="resign", **DECORATE)
    out = pipeline.process(raw, context(raw, pol, DNS))
    steps = [n.step for n in out.record.steps]
    assert steps == ["parse", "identify", "verify", "repair", "mode", *TRANSFORMS, "downgrade", "trace",
                     "authres", "dmarc-mitigation", "strip", "sign", "arc-seal", "attribution"]
    assert dict(out.record.extra)["breakage"] == ("poster.example/s1: subject-prefix",)
