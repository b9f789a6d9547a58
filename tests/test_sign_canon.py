"""relist.core.sign.canon gives exactly dkimpy's parse, canonicalization and header selection."""

from __future__ import annotations

import random

import dkim
import pytest
from dkim.canonicalization import CanonicalizationPolicy

from relist.core.sign.canon import Canon, MessageFormatError, parse, select

BODIES = [
    b"", b"\r\n", b"\r\n\r\n", b"x", b"x\r\n", b"x\r\n\r\n\r\n", b"a  b\t\tc \r\n \t\r\nd\t\r\n\r\n",
    b"\r\nlead\r\n", b"tail\r\n\r\n \r\n", b"lone\rcr\r\n", b"ends with cr\r", b"\t\r\n",
    b"mixed\nlf\r\nends\n\n", b"  \r\n  \r\n",
]
HEADERS = [
    b"From: a@example.org\r\n", b"Subject:  two  spaces \r\n", b"Subject:\tx\r\n\t folded \r\n  more\r\n",
    b"TO : not-a-name-with-space\r\n".replace(b"TO :", b"To:"), b"X-Empty:\r\n", b"x-CASE: Value\r\n",
]


def messages():
    out = []
    for body in BODIES:
        for eol in (b"\r\n", b"\n"):
            head = b"".join(HEADERS).replace(b"\r\n", eol)
            out.append(head + eol + body)
    out.append(b"From sender Mon Jan 1\r\nFrom: a@example.org\r\n\r\nx\r\n")  # mbox line
    out.append(b"From: a@example.org\r\nSubject: no body")
    return out


@pytest.mark.parametrize("message", messages())
@pytest.mark.parametrize("c", ["simple/simple", "relaxed/relaxed", "relaxed/simple", "simple/relaxed"])
def test_same_as_dkimpy(message, c):
    theirs_h, theirs_b = dkim.rfc822_parse(message)
    mine_h, mine_b = parse(message)
    assert [tuple(h) for h in theirs_h] == mine_h and theirs_b == mine_b
    policy, canon = CanonicalizationPolicy.from_c_value(c.encode()), Canon.from_c(c)
    assert policy.canonicalize_body(theirs_b) == canon.body_bytes(mine_b)
    assert [tuple(h) for h in policy.canonicalize_headers(theirs_h)] == canon.headers(mine_h)
    names = tuple(n.encode() for n in ["from", "subject", "subject", "subject", "to", "x-case", "cc"])
    theirs = dkim.select_headers(policy.canonicalize_headers(theirs_h), names)
    assert [tuple(h) for h in theirs] == canon.headers(select(mine_h, names))


def test_random_whitespace_bodies_match():
    rng = random.Random(8463)
    alphabet = [b" ", b"\t", b"\r\n", b"a", b"b", b"  ", b"\r\n\r\n"]
    policy = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    for _ in range(500):
        body = b"".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 30)))
        assert policy.canonicalize_body(body) == Canon("relaxed", "relaxed").body_bytes(body), body
        assert CanonicalizationPolicy.from_c_value(b"simple/simple").canonicalize_body(body) == \
            Canon("simple", "simple").body_bytes(body), body


@pytest.mark.parametrize("message", [b"From: a\r\nnot a header\r\n\r\n", b" continuation first\r\nFrom: a\r\n\r\n"])
def test_malformed(message):
    with pytest.raises(MessageFormatError):
        parse(message)
