"""Bounces (issue 13): which envelope recipients are a list's bounce addresses."""

from __future__ import annotations

import pytest

from relist.core.bounce import BounceAddress, recognise

LISTS = ("plain@lists.example.org", "verp@lists.example.org", "Other@Lists.Example.NET", "not an address")

CASES = [
    # (rcpt, expected) -- the corpus's envelope senders first (fixtures/mailman/cases/*/out-*.json)
    ("plain-bounces@lists.example.org", BounceAddress("plain@lists.example.org")),
    ("verp-bounces+m01=members.example@lists.example.org",
     BounceAddress("verp@lists.example.org", member="m01@members.example")),
    ("verp-bounces+x2=other.example@lists.example.org",
     BounceAddress("verp@lists.example.org", member="x2@other.example")),
    # notice / probe token: no "="
    ("plain-bounces+a1b2c3d4e5f60718293a4b5c6d7e8f9001122334@lists.example.org",
     BounceAddress("plain@lists.example.org", token="a1b2c3d4e5f60718293a4b5c6d7e8f9001122334")),
    # case: the domain and LIST-bounces fold, the member's local part does not
    ("Plain-Bounces@LISTS.example.ORG", BounceAddress("plain@lists.example.org")),
    ("VERP-bounces+John.Smith=Members.Example@lists.example.org",
     BounceAddress("verp@lists.example.org", member="John.Smith@members.example")),
    ("other-bounces@lists.example.net.", BounceAddress("Other@Lists.Example.NET")),
    ("<plain-bounces@lists.example.org>", BounceAddress("plain@lists.example.org")),
    # a member whose local part holds "+" and "=": split at the last "=" (a domain has none)
    ("verp-bounces+a+tag=x=members.example@lists.example.org",
     BounceAddress("verp@lists.example.org", member="a+tag=x@members.example")),
    # malformed VERP: still this list's bounce address, no member
    ("verp-bounces+=members.example@lists.example.org", BounceAddress("verp@lists.example.org")),
    ("verp-bounces+m01=@lists.example.org", BounceAddress("verp@lists.example.org")),
    ("plain-bounces+@lists.example.org", BounceAddress("plain@lists.example.org")),
    # not a bounce address
    ("plain@lists.example.org", None),
    ("plain-owner@lists.example.org", None),
    ("plain-bounces@elsewhere.example", None),
    ("plain-bouncesX@lists.example.org", None),
    ("unknown-bounces@lists.example.org", None),
    ("m01@members.example", None),
    ("", None),
    ("@", None),
    ("plain-bounces", None),
]


@pytest.mark.parametrize(("rcpt", "expected"), CASES, ids=[c[0] or "empty" for c in CASES])
def test_recognise(rcpt, expected):
    assert recognise(rcpt, LISTS) == expected


def test_no_lists_and_odd_values():
    assert recognise("plain-bounces@lists.example.org", ()) is None
    assert recognise(None, LISTS) is None  # type: ignore[arg-type]
    assert recognise("plain-bounces@lists.example.org", [None, 3, "plain@lists.example.org"]) == \
        BounceAddress("plain@lists.example.org")  # type: ignore[list-item]
