"""Breakage attribution: for each poster signature valid on arrival, the first step
that broke it, or "survived", over posts really signed with dkimpy."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from relist.core import pipeline
from relist.core.ingress import IngressCopy
from relist.core.model import Action
from tests.modes_support import (
    DECORATE,
    POST,
    H,
    note,
    poster_results,
    relay_policy,
    run,
    sign,
)


def breakage(work) -> dict[str, str]:
    return dict(work.known.breakage)


@pytest.mark.parametrize("h, settings, first", [
    # The Subject is signed: the prefix is the first change it covers.
    (H, DECORATE, "subject-prefix"),
    # Not signed: the footer (body hash) is.
    (("from", "to", "date", "message-id"), DECORATE, "footer"),
    # X-Junk is signed: remove-headers, the first step, breaks it.
    (H + ("x-junk",), DECORATE, "remove-headers"),
    # Nothing configured touches it: only an explicit strip = all removes it.
    (H, {"strip": "all", "dmarc_mitigation": "none"}, "strip"),
    # ... and with p=reject, knowing that, From is munged first.
    (H, {"strip": "all"}, "dmarc-mitigation"),
    (H, {}, "survived"),
    # Reply-To oversigned (absent, in h=): reply-to.
    (H + ("reply-to",), {"reply_to": "list"}, "reply-to"),
])
def test_resign_names_the_first_breaking_step(h, settings, first):
    work, _ = run(sign(POST, headers=h), relay_policy(mode="resign", **settings))
    assert breakage(work) == {"poster.example/s1": first}
    assert note(work, "attribution").detail == f"poster.example/s1: {first}"
    if first not in ("strip", "survived"):
        assert "broke poster.example/s1 (" in note(work, first).detail


def test_two_signatures_broken_by_different_steps():
    once = sign(POST, selector="s1", headers=("from", "to", "date", "message-id"))
    twice = sign(once, selector="s2", headers=H)
    work, _ = run(twice, relay_policy(mode="resign", **DECORATE))
    assert breakage(work) == {"poster.example/s2": "subject-prefix", "poster.example/s1": "footer"}


def test_strip_broken_lets_an_untouched_signature_survive():
    work, _ = run(sign(POST), relay_policy(mode="resign", strip="broken", reply_to="list",
                                                    dmarc_mitigation="none"))
    assert breakage(work) == {"poster.example/s1": "survived"}


def test_preserve_survives():
    work, _ = run(sign(POST), relay_policy(mode="preserve", **DECORATE))
    assert breakage(work) == {"poster.example/s1": "survived"}


def test_mailman_is_named_when_the_egress_copy_is_already_broken():
    signed = sign(POST.replace(b"Hello list.\r\n", b"Hello list.\r\nFrom me.\r\n"))
    # Mailman prefixed the Subject: not an accident, nothing to repair, so the break is Mailman's.
    out = signed.replace(b"Subject: hello list", b"Subject: [ant] hello list")
    for mode in ("resign", "preserve"):
        work, _ = run(out, relay_policy(mode=mode), ingress=(IngressCopy("in1", signed),),
                      extra_facts=signed)
        assert breakage(work) == {"poster.example/s1": "mailman"}, mode
    # ">From " escaping is repaired in every mode, so it survives.
    out = signed.replace(b"\r\nFrom me.", b"\r\n>From me.")
    for mode in ("resign", "preserve"):
        work, _ = run(out, relay_policy(mode=mode), ingress=(IngressCopy("in1", signed),),
                      extra_facts=signed)
        assert note(work, "repair").action == Action.APPLIED
        assert breakage(work) == {"poster.example/s1": "survived"}, mode


def unguarded(name: str, change):
    """A step outside the guard that applies ``change`` (RawMessage -> RawMessage)."""
    def apply(work, ctx):
        return work.note(name, Action.APPLIED, "", message=change(work.message))
    return SimpleNamespace(NAME=name, apply=apply)


# Adds a body line.
Scribble = unguarded("scribble", lambda msg: msg.with_body(msg.body + b"x\r\n"))
# Stands in for downgrade: changes a signed field mid-pipeline.
Convert = unguarded("convert", lambda msg: msg.replace_field(
    "subject", msg.make_field("Subject", "hello list (converted)")))


def test_unguarded_change_is_caught_at_the_end():
    steps = pipeline.STEPS[:-1] + (Scribble, pipeline.STEPS[-1])
    work, _ = run(sign(POST), relay_policy(mode="preserve"), steps=steps)
    assert breakage(work) == {"poster.example/s1": "unguarded step"}


def test_unguarded_change_mid_pipeline_is_caught_by_the_next_guarded_step():
    # Between guarded steps, the guard catches up with what changed since it last
    # looked, instead of judging only the next step's own change.
    steps = pipeline.substitute(pipeline.STEPS, pipeline.downgrade, Convert)
    work, ctx = run(sign(POST), relay_policy(mode="preserve", dmarc_mitigation="none"), steps=steps)
    assert breakage(work) == {"poster.example/s1": "unguarded step"}
    # the signature the change broke is known broken, so strip removes it
    assert note(work, "strip").detail.startswith("strip = broken: removed 1 DKIM-Signature the final "
                                                 "bytes break (poster.example/s1)")
    assert poster_results(work.message.to_bytes(), ctx) == []


def test_a_broken_signature_is_not_verified_again(recheck_calls):
    calls = recheck_calls
    # subject-prefix breaks it; the footer, Sender, List-*, Reply-To and strip are
    # not checked against it any more.
    work, _ = run(sign(POST), relay_policy(mode="resign", **DECORATE))
    assert calls == [["poster.example/s1"]]
    assert breakage(work) == {"poster.example/s1": "subject-prefix"}


def test_unsigned_post_has_nothing_to_attribute():
    work, _ = run(POST, relay_policy(mode="resign", **DECORATE))
    assert work.known.breakage == ()
    assert note(work, "attribution").detail == "no signature verified on arrival"
