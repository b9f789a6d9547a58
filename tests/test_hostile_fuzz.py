"""Property: every message, however hostile, goes through the whole core in every mode
without an internal error (issue 11).

Hypothesis builds messages from a post's fields and hostile pieces: header lines that
are not fields, control characters and 8-bit junk in names and values, huge folded
fields, deeply nested comments, bad MIME boundaries, a missing header/body separator,
CR-only, LF-only and mixed line ends, duplicate and empty From, hostile
DKIM-Signature tags, List-Id with a CR or 8-bit bytes, forged Authentication-Results;
some are signed by the poster with dkimpy first, so that the guard and the modes have
a signature to keep.  Each goes through ``pipeline.process`` (after ``plan``, as the
edge does) in preserve, resign and auto mode, and with ``dmarc_mitigation = "wrap"``,
and must pass ``tests.test_hostile.check``: no exception, no internal error in any
note, no 4xx (keys and DNS answers are all there), a header that parses, no bare CR,
LF or NUL that relist wrote, and relist's signatures verifying in dkimpy and in
relist's own verifier.

A failure Hypothesis finds belongs in tests/data/hostile/ as a small .eml file (the
regression test in tests/test_hostile.py runs each through every mode).  Bounded:
``EXAMPLES`` per mode, no deadline, no example database (nothing written to disk).
"""

from __future__ import annotations

import dkim
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_hostile import CONFIGS, check
from tests.modes_support import KEYS

EXAMPLES = 200

CHUNKS = [b"(", b")", b"<", b">", b"@", b'"', b"\\", b",", b";", b":", b"=", b"?", b" ", b"\t",
          b"\r", b"\n", b"\r\n", b"\r\n ", b"\n\t", b"\x00", b"\x01", b"\x0b", b"\x0c", b"\x1b",
          b"\x7f", b"\x80", b"\xe9", b"\xff", b"\xc3\xa9", b"\xed\xa0\x80", b"=?utf-8?q?=C3=A9?=",
          b"=?", b"?=", b"=?utf-8?b?", b"alice@poster.example", b"Alice", b"word", b"From ", b"--b1",
          b"<ant.lists.example.org>", b"ant@lists.example.org", b"[ant] ", b"Re: ", b"relist.test"]
NAMES = [b"From", b"To", b"Cc", b"Reply-To", b"Sender", b"Subject", b"Date", b"Message-ID",
         b"List-Id", b"List-Post", b"Content-Type", b"Content-Transfer-Encoding", b"MIME-Version",
         b"X-Junk", b"X-Mailer", b"Authentication-Results", b"DKIM-Signature", b"ARC-Seal",
         b"X-Original-From", b"In-Reply-To", b"References"]
MALFORMED = [b"X-Mailer : Foo", b"X-Mailer\t:Foo", b"no colon here", b"X-\x01Bad: v", b"X-B\xe4d: v",
             b" leading continuation", b"\tTabbed", b"From alice@poster.example Mon Jan  1 00:00:00 2024",
             b":no name", b"X-Empty:", b"\r", b"\x00", b"--b1", b"From: ", b"From:"]
DKIM_TAGS = [b"v=1", b"v=2", b"a=rsa-sha256", b"a=ed25519-sha256", b"a=rsa-sha1", b"a=bogus",
             b"d=poster.example", b"d=\xe9.example", b"d=", b"d=lists.example.org", b"s=s1", b"s=",
             b"s=a;b", b"h=from:subject", b"h=from:from:authentication-results", b"h=", b"h=\xff",
             b"bh=", b"bh=AAAA", b"b=", b"b=!!!", b"b=AAAA", b"l=-1", b"l=99999999999999999999999",
             b"l=0", b"t=abc", b"t=99999999999", b"x=1", b"c=relaxed/simple", b"c=bogus", b"i=@x",
             b"i=\x00", b"q=dns/txt", b"q=bogus", b"z=From:a|To:b", b"garbage", b"=x", b"v=1; v=1"]
LIST_IDS = [b"<ant.lists.example.org>", b"<ant\r.lists.example.org>", b"Ant\rEvil <ant.lists.example.org>",
            b"<ant.lists.ex\xe9ample.org>", b"Ant\xe9 <ant.lists.example.org>", b"<\x00>", b"<>", b"",
            b"<a.b>", b"<ant.lists.example.org>\r", b"\xff\xfe", b"<x y.example>"]
BODIES = [b"Hello list.\r\n", b"", b"From the start\r\n>From quoted\r\n", b"caf\xe9 8-bit\r\n",
          b"x" * 2000 + b"\r\n", b"--b1\r\nContent-Type: text/plain\r\n\r\npart\r\n--b1--\r\n",
          b"--b1\r\n\r\nno close\r\n", b"--\r\n--b1\r\n--b1--\r\n--b1\r\n", b"\r\n\r\n\r\n", b"\x00\x01\r\n",
          b"--b1\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\n\r\nnested\r\n--b1--\r\n"]

chunk = st.one_of(st.sampled_from(CHUNKS), st.binary(min_size=1, max_size=6))
value = st.lists(chunk, max_size=24).map(b"".join)


@st.composite
def nested(draw) -> bytes:
    depth = draw(st.sampled_from([1, 50, 1000, 3000]))
    closed = draw(st.sampled_from([depth, depth - 1, 0]))
    return b"(" * depth + b"x" + b")" * closed + b" <alice@poster.example>"


@st.composite
def huge(draw) -> bytes:
    words = draw(st.integers(1, 40))
    lines = draw(st.integers(1, 200))
    sep = draw(st.sampled_from([b"\r\n ", b"\r\n\t", b" "]))
    return (b"word " * words + sep) * lines


@st.composite
def dkim_field(draw) -> bytes:
    tags = draw(st.lists(st.sampled_from(DKIM_TAGS), max_size=12))
    return b"; ".join(tags)


@st.composite
def content_type(draw) -> bytes:
    return draw(st.sampled_from([
        b"multipart/mixed; boundary=b1", b"multipart/mixed", b"multipart/mixed; boundary=",
        b'multipart/mixed; boundary="b1', b"multipart/alternative; boundary=\xe9",
        b"text/plain; charset=\xff", b"text/plain; charset*=utf-8''%E9", b"text/plain; charset=x-bogus",
        b"message/rfc822", b"text/plain; charset=utf-8", b"multipart/mixed; boundary=" + b"b" * 300]))


ARC = [b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=poster.example; s=s1; t=1; b=AAAA",
       b"ARC-Seal: i=2; cv=pass; a=rsa-sha256; d=x; s=y; b=", b"ARC-Seal: i=99; cv=fail",
       b"ARC-Seal: i=0", b"ARC-Seal: i=\xe9; cv=\xff", b"ARC-Seal: garbage",
       b"ARC-Message-Signature: i=1; a=rsa-sha256; c=relaxed/relaxed; d=poster.example; s=s1; "
       b"h=from; bh=AAAA; b=AAAA", b"ARC-Message-Signature: i=1; h=arc-seal; b=",
       b"ARC-Authentication-Results: i=1; relist.test; arc=pass", b"ARC-Authentication-Results: i=x",
       b"ARC-Authentication-Results: i=1; " + b"(" * 2000]


@st.composite
def field(draw) -> bytes:
    kind = draw(st.sampled_from(["named", "named", "named", "malformed", "nested", "huge", "dkim",
                                 "list-id", "content-type", "forged-ar", "arc", "long"]))
    if kind == "arc":
        return draw(st.sampled_from(ARC)) + draw(value)
    if kind == "long":
        return draw(st.sampled_from([b"Subject: ", b"X-Long: ", b"References: "])) + b"x" * draw(
            st.sampled_from([998, 1000, 20000]))
    if kind == "named":
        name = draw(st.one_of(st.sampled_from(NAMES), st.binary(min_size=1, max_size=8)))
        return name + b":" + draw(st.sampled_from([b" ", b"", b"\t"])) + draw(value)
    if kind == "malformed":
        return draw(st.sampled_from(MALFORMED)) + draw(st.sampled_from([b"", b"x", b"\xe9"]))
    if kind == "nested":
        return draw(st.sampled_from([b"From: ", b"Cc: ", b"Reply-To: ", b"Sender: "])) + draw(nested())
    if kind == "huge":
        return draw(st.sampled_from([b"X-Huge: ", b"Subject: ", b"To: "])) + draw(huge())
    if kind == "dkim":
        return b"DKIM-Signature: " + draw(dkim_field())
    if kind == "list-id":
        return b"List-Id: " + draw(st.sampled_from(LIST_IDS))
    if kind == "content-type":
        return b"Content-Type: " + draw(content_type())
    return b"Authentication-Results: relist.test; dkim=pass header.d=bank.example" + draw(value)


@st.composite
def deep_mime(draw) -> bytes:
    """Multiparts nested ``depth`` deep (the first line of each is a part header)."""
    depth = draw(st.sampled_from([2, 30, 1100]))
    leaf = draw(st.sampled_from([b"caf\xe9\r\n", b"plain\r\n", b""]))
    body = leaf
    for n in range(depth):
        b = b"n%d" % n
        body = (b"--" + b + b"\r\nContent-Type: multipart/mixed; boundary=" + (b"n%d" % (n + 1)) +
                b"\r\n\r\n" + body + b"\r\n--" + b + b"--\r\n")
    return body


SIGNED = [b"from", b"subject", b"to", b"list-id", b"authentication-results", b"reply-to", b"x-junk",
          b"content-type"]
BASE = [b"From: Alice Poster <alice@poster.example>", b"To: ant@lists.example.org",
        b"Subject: hello list", b"Date: Wed, 01 May 2024 10:00:00 +0000",
        b"Message-ID: <p1@poster.example>", b"MIME-Version: 1.0",
        b"Content-Type: text/plain; charset=us-ascii"]


@st.composite
def hostile(draw) -> bytes:
    lines = list(BASE)
    for _ in range(draw(st.integers(0, 3))):        # drop some of the post's own fields
        if lines:
            lines.pop(draw(st.integers(0, len(lines) - 1)))
    for line in draw(st.lists(field(), min_size=1, max_size=6)):
        lines.insert(draw(st.integers(0, len(lines))), line)
    if draw(st.booleans()):                           # duplicate or empty From
        lines.insert(0, draw(st.sampled_from([b"From: ", b"From: Mallory <m@evil.example>", b"From:"])))
    body = draw(st.one_of(st.sampled_from(BODIES), st.binary(max_size=200), deep_mime()))
    separator = draw(st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b""]))
    raw = b"".join(line + b"\r\n" for line in lines) + separator + body
    if draw(st.booleans()):        # the poster signs what dkimpy can read (the guard's case)
        names = draw(st.lists(st.sampled_from(SIGNED), max_size=5))
        try:
            raw = dkim.sign(raw, b"s1", b"poster.example", KEYS["s1"][0],
                            include_headers=[b"from"] + names, canonicalize=(b"relaxed", b"relaxed")) + raw
        except Exception:   # noqa: BLE001 - dkimpy refuses some of these: sent unsigned
            pass
    ending = draw(st.sampled_from(["crlf", "crlf", "lf", "cr", "mixed"]))
    if ending == "lf":
        raw = raw.replace(b"\r\n", b"\n")
    elif ending == "cr":
        raw = raw.replace(b"\r\n", b"\r")
    elif ending == "mixed":
        raw = raw.replace(b"\r\n", b"\n", draw(st.integers(1, 5)))
    return raw


@st.composite
def leg(draw, raw: bytes) -> dict:
    """The context: the egress leg with an ingress copy (the post itself, or another
    hostile one under the same Message-ID) or not; an MTA with or without 8BITMIME."""
    which = draw(st.sampled_from(["none", "none", "same", "other"]))
    ingress = None if which == "none" else raw if which == "same" else draw(hostile())
    return dict(ingress=ingress, eightbit=draw(st.booleans()))


@pytest.mark.parametrize("config", list(CONFIGS))
def test_any_message_goes_through_every_mode(config):
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=False,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=st.data())
    def run(data):
        raw = data.draw(hostile(), label="raw")
        check(raw, config, **data.draw(leg(raw), label="context"))

    run()
