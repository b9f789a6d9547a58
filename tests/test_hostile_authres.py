"""A forged Authentication-Results never survives, in any mode (issue 11, item 3), and
relist's own field never breaks a poster signature needlessly.

Through ``pipeline.STEPS`` with posts really signed by dkimpy (tests/test_modes.py):

* a field claiming relist's authserv-id (``dkim=pass header.d=bank.example``) is
  removed in preserve, resign and auto mode, also when the poster's signature covers
  it (RFC 8601 §5); the break is attributed to ``authres`` and the delivery rules act
  on it: DMARC mitigation (p=reject) and strip;
* a poster signature that oversigns Authentication-Results (its h= names it more times
  than the message has it) keeps relist from adding its own field, and survives.
"""

from __future__ import annotations

import pytest

from relist.core.model import Action
from tests.modes_support import POST, note, poster_results, relay_policy, run, sign

FORGED = b"Authentication-Results: relist.test; dkim=pass header.d=bank.example\r\n"
H = ("from", "to", "subject", "date", "message-id")


def with_forgery(post: bytes = POST) -> bytes:
    return FORGED + post


def authres_fields(work) -> list[bytes]:
    return [f.raw for f in work.message.get_all("authentication-results")]


@pytest.mark.parametrize("mode", ["preserve", "resign", "auto"])
def test_a_forgery_the_poster_signed_is_removed_in_every_mode(mode):
    raw = sign(with_forgery(), headers=H + ("authentication-results",))
    work, ctx = run(raw, relay_policy(mode=mode))
    fields = authres_fields(work)
    assert FORGED not in fields and not any(b"bank.example" in f for f in fields)
    assert len(fields) == 1 and fields[0].startswith(b"Authentication-Results: relist.test;\r\n\tdkim=pass")
    n = note(work, "authres")
    assert n.action == Action.APPLIED
    assert "removed 1 incoming field(s) claiming authserv-id relist.test" in n.detail
    assert "broke poster.example/s1 (signed header fields)" in n.detail
    # the break is on record, and the delivery rules act on it: p=reject -> mitigation,
    # and the broken signature does not travel
    assert ("poster.example/s1", "authres") in work.known.breakage
    assert note(work, "dmarc-mitigation").action == Action.APPLIED
    assert "poster.example/s1 broken by authres" in note(work, "dmarc-mitigation").detail
    assert work.message.header_text("from").endswith("<ant@lists.example.org>")
    assert note(work, "strip").action == Action.APPLIED
    assert poster_results(work.message.to_bytes(), ctx) == []
    if mode == "auto":
        assert note(work, "mode").detail.startswith("resign (auto: tried preserve, but no aligned "
                                                    "poster signature survives (poster.example/s1 "
                                                    "broken by authres))")


@pytest.mark.parametrize("mode", ["preserve", "resign", "auto"])
def test_a_forgery_outside_the_signature_is_removed_and_the_signature_survives(mode):
    raw = sign(with_forgery())      # h= does not name Authentication-Results
    work, ctx = run(raw, relay_policy(mode=mode))
    assert FORGED not in authres_fields(work) and len(authres_fields(work)) == 1
    assert "removed 1 incoming field(s)" in note(work, "authres").detail
    assert [s.result for s in poster_results(work.message.to_bytes(), ctx)] == ["pass"]
    assert note(work, "dmarc-mitigation").action == Action.SKIPPED


@pytest.mark.parametrize("mode", ["preserve", "resign", "auto"])
def test_relist_does_not_add_its_field_where_a_valid_signature_signs_its_absence(mode):
    raw = sign(POST, headers=H + ("authentication-results",))   # oversigned: the post has none
    work, ctx = run(raw, relay_policy(mode=mode))
    n = note(work, "authres")
    assert n.action == Action.SKIPPED
    assert n.detail == ("not added: poster.example/s1 sign(s) the absence of another "
                        "Authentication-Results (h= names it more times than the message has it)")
    assert authres_fields(work) == []
    assert [s.result for s in poster_results(work.message.to_bytes(), ctx)] == ["pass"]
    assert work.known.breakage == (("poster.example/s1", "survived"),)
    assert note(work, "dmarc-mitigation").action == Action.SKIPPED
    # the ARC set still carries relist's verdict (its AAR is built from the verdict)
    assert work.message.get("arc-authentication-results") is not None or \
        note(work, "arc-seal").action == Action.SKIPPED


def test_relist_adds_its_field_when_the_oversigned_count_is_met():
    # h= names it once, the post has one (not relist's): prepending ours on top is not
    # selected (RFC 6376 §5.4.2, bottom up), so it is added and the signature survives.
    post = b"Authentication-Results: mx.poster.example; dkim=pass\r\n" + POST
    raw = sign(post, headers=H + ("authentication-results",))
    work, ctx = run(raw, relay_policy(mode="preserve"))
    assert note(work, "authres").detail.startswith("added dkim=pass(poster.example)")
    assert len(authres_fields(work)) == 2
    assert [s.result for s in poster_results(work.message.to_bytes(), ctx)] == ["pass"]


def test_oversigned_and_forged_the_removal_breaks_it_and_ours_is_added():
    # h= names Authentication-Results twice, the post has one (a forgery): the removal
    # breaks the signature anyway, so relist's field costs nothing and is added.
    raw = sign(with_forgery(), headers=H + ("authentication-results", "authentication-results"))
    work, _ = run(raw, relay_policy(mode="preserve"))
    n = note(work, "authres")
    assert n.detail.startswith("added ") and "removed 1 incoming field(s)" in n.detail
    assert "broke poster.example/s1" in n.detail
    assert len(authres_fields(work)) == 1 and FORGED not in authres_fields(work)


def test_the_ingress_leg_removes_the_forgery_and_respects_an_oversigned_absence():
    from relist.core import pipeline
    work, _ = run(sign(with_forgery()), relay_policy(mode="preserve"), steps=pipeline.INGRESS_STEPS)
    assert FORGED not in authres_fields(work) and len(authres_fields(work)) == 1
    work, _ = run(sign(POST, headers=H + ("authentication-results",)), relay_policy(mode="preserve"),
                  steps=pipeline.INGRESS_STEPS)
    assert authres_fields(work) == [] and note(work, "authres").detail.startswith("not added: ")
