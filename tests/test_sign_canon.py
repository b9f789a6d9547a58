"""relist.core.dkim.canon gives exactly dkimpy's parse, canonicalization and header selection."""

from __future__ import annotations

import random

import dkim
import pytest
from dkim.canonicalization import CanonicalizationPolicy

from relist.core.dkim.canon import Canon, MessageFormatError, parse, select

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


@pytest.mark.parametrize("message", [b"From: a\r\nnot a header\r\n\r\n",
                                     b" continuation first\r\nFrom: a\r\n\r\n"])
def test_malformed(message):
    with pytest.raises(MessageFormatError):
        parse(message)


# -- the fast paths (one regex for a CRLF header, checks on joined bytes) give the same
#    results as dkimpy on the inputs they take and on those they hand to the slow path

MORE_MESSAGES = [
    b"From: a@example.org\r\nSubject: folded\r\n  twice\r\n\tand tab\r\nTo: b\r\n\r\nx\r\n",
    b"From: a@example.org\r\nSubject: x\r\n\r\nbody\nwith\r\nbare\nLF\n",
    b"From: a@example.org\r\nSubject: lone\rcr\r\n\r\nx\r\n",
    b"From: a@example.org\r\nSubject: lone lf\nTo: b\r\n\r\nx\r\n",
    b"\r\nFrom: looks like a header\r\n\r\nx\r\n",
    b"From: a@example.org\r\nX-Colon: a: b: c\r\nX-Empty:\r\n\r\n",
    b"From: a@example.org\r\n\r\n\r\n\r\n",
]


@pytest.mark.parametrize("message", MORE_MESSAGES)
def test_more_messages_same_as_dkimpy(message):
    theirs_h, theirs_b = dkim.rfc822_parse(message)
    mine_h, mine_b = parse(message)
    assert [tuple(h) for h in theirs_h] == mine_h and theirs_b == mine_b
    for c in ("relaxed/relaxed", "simple/simple"):
        policy, canon = CanonicalizationPolicy.from_c_value(c.encode()), Canon.from_c(c)
        theirs = b"".join(n + b":" + v for n, v in policy.canonicalize_headers(theirs_h))
        assert canon.hash_input(mine_h) == theirs


@pytest.mark.parametrize("message", [b"Subject : space before colon\r\n\r\nx\r\n",
                                     b"From: a\r\n\tx\r\nbad line\r\n\r\n"])
def test_malformed_on_the_crlf_path_too(message):
    with pytest.raises(MessageFormatError):
        parse(message)
    with pytest.raises(dkim.MessageFormatError):
        dkim.rfc822_parse(message)


def test_random_header_fields_canonicalize_as_dkimpy():
    rng = random.Random(6376)
    pieces = [b"a", b"B", b" ", b"  ", b"\t", b"\r\n ", b"\r\n\t", b"\r", b"\x0b", b":", b"x y"]
    relaxed = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    for _ in range(500):
        fields = []
        for _ in range(rng.randrange(1, 6)):
            name = rng.choice([b"Subject", b"X-A", b"to", b"Name "])
            value = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 8))) + b"\r\n"
            fields.append((name, value))
        theirs = relaxed.canonicalize_headers(fields)
        assert Canon("relaxed", "relaxed").headers(fields) == [tuple(f) for f in theirs], fields
        joined = b"".join(n + b":" + v for n, v in theirs)
        assert Canon("relaxed", "relaxed").hash_input(fields) == joined, fields
        if all(v.count(b"\n") == 1 for _, v in fields):   # what the caller promises
            assert Canon("relaxed", "relaxed").hash_input(fields, unfolded=True) == joined, fields


@pytest.mark.parametrize("names", [
    (b"from", b"subject", b"from", b"subject", b"subject", b"to"),   # a name in two runs
    (b"cc", b"cc", b"cc", b"cc", b"from", b"cc"),
    (b"x-none", b"from", b"from", b"from"),
])
def test_select_repeated_names_as_dkimpy(names):
    headers = [(b"From", b" a\r\n"), (b"Cc", b" 1\r\n"), (b"Subject", b" s1\r\n"), (b"Cc", b" 2\r\n"),
               (b"subject", b" s2\r\n"), (b"To", b" t\r\n"), (b"CC", b" 3\r\n")]
    assert [tuple(h) for h in dkim.select_headers(headers, names)] == select(headers, names)


def test_fold_same_as_dkimpy():
    # Long runs without a space only inside b=, bh= or z=, the values dkimpy's fold and
    # relist's both break hard (elsewhere relist keeps a value whole: see below).
    from relist.core.sign.signature import fold
    rng = random.Random(72)
    alphabet = [b"a", b"bc", b"defghij", b" ", b"; ", b"=", b" " + b"x" * 30 + b" ", b"; b=" + b"y" * 80,
                b"; bh=" + b"Y" * 90, b"; z=" + b"w|" * 40]
    for _ in range(2000):
        value = b"".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
        if rng.random() < 0.2:
            value += b"\r\n"
        if rng.random() < 0.1:
            value = value[:len(value) // 2] + b"\r\n " + value[len(value) // 2:]
        namelen = rng.choice([8, 14, 21])
        assert fold(value, namelen) == dkim.fold(value, namelen=namelen, linesep=b"\r\n"), value


def test_fold_keeps_values_whole_that_dkimpy_would_break():
    """dkimpy breaks any value longer than a line where no space fits, also a d= or i=
    (and its own verifier then fails the signature); relist breaks only b=, bh= and z=
    values, and lets a line run on to the next space otherwise."""
    from relist.core.sign.signature import fold
    long_d = b"v=1; a=rsa-sha256; d=" + b"x" * 90 + b".example.org; s=s1; bh=" + b"A" * 100 + b"; b="
    mine = fold(long_d, 14)
    assert b"d=" + b"x" * 90 + b".example.org;" in mine.split(b"\r\n ")      # whole, on a line of its own
    assert b"A\r\n A" in mine                                                 # bh= still broken hard
    assert mine.replace(b"\r\n ", b" ").replace(b" ", b"") == long_d.replace(b" ", b"")
    theirs = dkim.fold(long_d, namelen=14, linesep=b"\r\n")
    assert b"x\r\n x" in theirs and mine != theirs
