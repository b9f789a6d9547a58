"""relist.core.ingress: which ingress copy, if any, an egress message is."""

from __future__ import annotations

import pytest

from relist.core.ingress import IngressCopy, body_matches, fingerprint, match
from relist.core.message import RawMessage

HEAD = (b"DKIM-Signature: v=1; d=poster.example; s=s1; b=AAAA\r\n BBBB;\r\n"
        b"From: P <p@poster.example>\r\nDate: Sat, 21 Nov 2026 10:00:00 +0000\r\n"
        b"Message-ID: <m@poster.example>\r\nSubject: s\r\n\r\n")
BODY = b"Hello.\r\nFrom here.\r\n"
MULTI_HEAD = HEAD.replace(b"Subject: s\r\n",
                          b"Content-Type: multipart/mixed; boundary=\"b\"\r\nSubject: s\r\n")
MULTI = b"--b\r\nContent-Type: text/plain\r\n\r\nHi.\r\n--b--\r\n"
FOOTER_PART = (b"--b\r\nContent-Type: text/plain\r\n\r\nHi.\r\n"
               b"--b\r\nContent-Type: text/plain\r\n\r\n-- footer\r\n--b--\r\n")


def msg(head: bytes, body: bytes) -> RawMessage:
    return RawMessage.parse(head + body)


CASES = [
    ("identical", HEAD, BODY, HEAD, BODY, True),
    ("from-escaped", HEAD, BODY, HEAD, BODY.replace(b"\r\nFrom", b"\r\n>From"), True),
    ("footer-appended", HEAD, BODY, HEAD, BODY + b"-- \r\nlist footer\r\n", True),
    ("headers-added-and-refolded", HEAD, BODY,
     HEAD.replace(b"Subject: s", b"List-Id: <dev.lists.example.org>\r\nSubject:\r\n s"), BODY, True),
    ("multipart-footer-part", MULTI_HEAD, MULTI, MULTI_HEAD, FOOTER_PART, True),
    ("body-changed", HEAD, BODY, HEAD, BODY.replace(b"Hello", b"Pay up"), False),
    ("body-truncated", HEAD, BODY, HEAD, b"Hello.\r\n", False),
    ("signature-changed", HEAD, BODY, HEAD.replace(b"BBBB", b"CCCC"), BODY, False),
    ("from-changed", HEAD, BODY, HEAD.replace(b"P <p@", b"Q <p@"), BODY, False),
]


@pytest.mark.parametrize("in_head,in_body,out_head,out_body,matches", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_match_rules(in_head, in_body, out_head, out_body, matches):
    copy = IngressCopy("R1", in_head + in_body)
    found, why = match(msg(out_head, out_body), (copy,))
    assert (found is copy) is matches, why


def test_body_and_fingerprint_are_separate_checks():
    a, b = msg(HEAD, BODY), msg(HEAD, b"other\r\n")
    assert fingerprint(a) == fingerprint(b) and not body_matches(a, b)


def test_two_different_matching_copies_are_not_chosen_between():
    # Two arrivals whose content Mailman's changes could both explain: do not choose.
    one = IngressCopy("R1", HEAD + BODY)
    two = IngressCopy("R2", HEAD + BODY.replace(b"From here.", b">From here."))
    found, why = match(msg(HEAD, BODY.replace(b"From here", b">From here")), (one, two))
    assert found is None and "not choosing" in why


def test_identical_copies_are_one_post():
    one, again = IngressCopy("R1", HEAD + BODY), IngressCopy("R2", HEAD + BODY)
    found, _ = match(msg(HEAD, BODY), (one, again))
    assert found is not None


def test_no_candidates():
    assert match(msg(HEAD, BODY), ()) == (None, "no ingress copy with this Message-ID")
