"""relist.core.dkim.canon, the one DKIM parse/selection/canonicalization, against dkimpy's.

Property tests (Hypothesis) on random messages, header fields and bodies built from
the bytes that matter (CR, LF, SP, HTAB, ':', NUL, 8-bit, "From "): wherever dkimpy
accepts the input the results are byte-identical; where it does not (a continuation
line before the first field: dkimpy's IndexError) relist's one answer is a
``MessageFormatError``.  Plus: the guard's and the verifier's use of it, the body memo,
and the SMTP DATA reader's block reading (relist.edge.smtp_session) against the line reader
it replaced.
"""

from __future__ import annotations

import asyncio
import hashlib
import re

import dkim
from dkim.canonicalization import CanonicalizationPolicy, Relaxed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relist.core.dkim import canon
from relist.core.dkim.canon import BodyMemo, Canon, MessageFormatError
from relist.core.message import RawMessage

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
C_VALUES = ["simple/simple", "relaxed/relaxed", "relaxed/simple", "simple/relaxed"]

_PIECES = [b"a", b"Z", b"0", b" ", b"  ", b"\t", b"\r\n", b"\n", b"\r", b"\r\n\t", b"\r\n ", b":",
           b"\0", b"\xff", b"\x0b", b"\x0c", b";", b"b=", b"From ", b".", b"\r\n\r\n", b"-"]
chunks = st.lists(st.sampled_from(_PIECES), max_size=24).map(b"".join)
names = st.sampled_from([b"From", b"To", b"Subject", b"X-Tag", b"x-tag", b"DKIM-Signature", b"Cc",
                         b"REFERENCES", b"X-a.b_c"])
field_lines = st.tuples(names, chunks).map(
    lambda nv: nv[0] + b":" + nv[1].replace(b"\r\n\r\n", b"\r\n") + b"\r\n")
messages = st.one_of(
    chunks,
    st.tuples(st.lists(st.one_of(field_lines, chunks), max_size=8), chunks, st.sampled_from([b"\r\n", b"\n"]))
    .map(lambda t: b"".join(t[0]) + t[2] + t[1]),
)


def _dkimpy_parse(message: bytes):
    """dkimpy's answer: ("ok", fields as tuples, body) or ("error",)."""
    try:
        headers, body = dkim.rfc822_parse(message)
    except (dkim.MessageFormatError, IndexError):
        return ("error",)
    return ("ok", [tuple(h) for h in headers], body)


def _relist_parse(message: bytes):
    try:
        headers, body = canon.parse(message)
    except MessageFormatError:
        return ("error",)
    return ("ok", list(headers), body)


@SETTINGS
@given(messages)
def test_parse_is_dkimpys(message):
    assert _relist_parse(message) == _dkimpy_parse(message)


@SETTINGS
@given(messages)
def test_the_raw_messages_own_split_is_the_parse_when_it_says_so(message):
    """RawMessage.dkim_split (what the verifier and the signer start from, instead of
    parsing the bytes again) is canon.parse's result, or None; never another one."""
    split = RawMessage.parse(message).dkim_split()
    if split is None:
        return
    headers, body, unfolded = split
    assert (headers, body) == canon.parse(message)
    assert unfolded == all(v.count(b"\n") == 1 for _, v in headers)


def test_the_raw_messages_own_split_on_the_corpus():
    from tests.helpers import ROOT
    taken = 0
    for path in sorted((ROOT / "fixtures").rglob("*.eml")):
        raw = path.read_bytes()
        split = RawMessage.parse(raw).dkim_split()
        if split is not None:
            assert split[:2] == canon.parse(raw), path
            taken += 1
    assert taken >= 300     # (the corpus is mostly CRLF mail: the split is taken)


def test_parse_errors_say_what_dkimpy_says():
    bad = b"From: a\r\nnot a header\r\n\r\nx\r\n"
    try:
        dkim.rfc822_parse(bad)
    except dkim.MessageFormatError as exc:
        theirs = str(exc)
    try:
        canon.parse(bad)
    except MessageFormatError as exc:
        assert str(exc) == theirs
    # dkimpy crashes (IndexError); relist's one answer is a MessageFormatError
    try:
        canon.parse(b" continuation\r\nFrom: a\r\n\r\n")
    except MessageFormatError as exc:
        assert "continuation line" in str(exc)
    else:
        raise AssertionError("no error")


@SETTINGS
@given(st.lists(st.tuples(names, chunks), max_size=8))
def test_relaxed_headers_are_dkimpys(fields):
    assert canon.relaxed_headers(fields) == [tuple(h) for h in Relaxed.canonicalize_headers(fields)]
    hashed = b"".join(n + b":" + v for n, v in Relaxed.canonicalize_headers(fields))
    assert Canon("relaxed", "simple").hash_input(fields) == hashed


@SETTINGS
@given(chunks)
def test_crlf_lines_is_dkimpys_split_and_join(data):
    """dkimpy splits a message's lines on CR? LF and joins them with CRLF; unchanged
    data comes back as the same object (no copy)."""
    want = b"\r\n".join(re.split(rb"\r?\n", data))
    got = canon.crlf_lines(data)
    assert got == want
    assert (got is data) == (want == data)


@SETTINGS
@given(chunks, st.sampled_from(C_VALUES), st.one_of(st.none(), st.integers(0, 40)))
def test_bodies_and_body_hashes_are_dkimpys(body, c, length):
    body = canon.crlf_lines(body)          # what the parse hands over: CRLF lines
    policy = CanonicalizationPolicy.from_c_value(c.encode())
    theirs = policy.canonicalize_body(body)
    assert Canon.from_c(c).body_bytes(body) == theirs
    digest, total = BodyMemo(body).digest(c.partition("/")[2], "sha256", length)
    want = hashlib.sha256(theirs if length is None else theirs[:length]).digest()
    assert (digest, total) == (want, len(theirs))


@SETTINGS
@given(st.lists(chunks, max_size=6).map(b"".join), st.sampled_from(["simple", "relaxed"]),
       st.one_of(st.none(), st.integers(0, 80)), st.sampled_from([1, 2, 3, 5, 8, 13, 40]))
def test_a_body_hashed_in_pieces_is_hashed_as_dkimpy_hashes_it_whole(body, c_body, length, chunk):
    """body_digest cuts a large body after line ends and holds back the empty lines
    that end a piece; with tiny pieces every cut lands somewhere interesting."""
    body = canon.crlf_lines(body)
    theirs = CanonicalizationPolicy.from_c_value(f"relaxed/{c_body}".encode()).canonicalize_body(body)
    want = (hashlib.sha256(theirs if length is None else theirs[:length]).digest(), len(theirs))
    assert canon.body_digest(body, c_body, "sha256", length, chunk=chunk) == want


@SETTINGS
@given(messages, st.lists(st.sampled_from([b"from", b"to", b"subject", b"x-tag", b"cc", b"absent"]),
                          min_size=1, max_size=8), st.sampled_from(C_VALUES))
def test_selection_and_signed_input_are_dkimpys(message, h, c):
    parsed = _dkimpy_parse(message)
    if parsed[0] != "ok":
        return
    headers = parsed[1]
    policy, mine = CanonicalizationPolicy.from_c_value(c.encode()), Canon.from_c(c)
    canonical = policy.canonicalize_headers(headers)
    theirs = dkim.select_headers(canonical, list(h))
    assert [tuple(x) for x in theirs] == mine.headers(canon.select(headers, tuple(h)))
    own = (b"DKIM-Signature", b" v=1; a=rsa-sha256; h=from; b=AAAA\r\n BBBB;\r\n bh=x\r\n")

    class Hasher:
        data = b""

        def update(self, more):
            Hasher.data += more
    dkim.hash_headers(Hasher(), policy, canonical, list(h), own, {})
    assert mine.signed_input(canon.select(headers, tuple(h)), own) == Hasher.data


@SETTINGS
@given(chunks)
def test_b_removal_is_dkimpys(value):
    assert canon.without_b(value) == dkim.RE_BTAG.sub(b"\\1", value)


def test_the_body_memo_travels_with_the_body_only():
    msg = RawMessage.parse(b"From: a@example.org\r\nSubject: x\r\n\r\nbody  text \r\n\r\n")
    memo = msg.body_memo()
    assert memo.digest("relaxed", "sha256")[0] is memo.digest("relaxed", "sha256")[0]   # made once
    assert msg.prepend(msg.make_field("X-A", "1")).body_memo() is memo           # header edit: kept
    assert msg.remove("subject").body_memo() is memo
    assert msg.with_body(msg.body + b"more\r\n").body_memo() is not memo          # new body: new memo
    assert RawMessage.parse(b"From: a\r\nno header line\r\n").body_memo() is None   # no empty line


# -- the SMTP DATA reader (relist.edge.smtp_in): blocks, not lines ----------------------

def _line_reader(data: bytes, limit: int) -> bytes | None:
    """The reader it replaced, line by line (the reference)."""
    out, size, too_big, line_start = [], 0, False, True
    pos = 0
    while True:
        end = data.find(b"\r\n", pos)
        piece = data[pos:end + 2]
        pos = end + 2
        if line_start and piece == b".\r\n":
            break
        size += len(piece)
        if line_start and piece[:1] == b".":
            piece = piece[1:]
        line_start = piece.endswith(b"\r\n")
        if limit and size > limit:
            too_big = True
        out.append(piece)
    return None if too_big else b"".join(out)


def _block_reader(data: bytes, limit: int, chunk: int, buffer_limit: int) -> tuple[bytes | None, bytes]:
    from relist.edge.smtp_session import RelistSMTP

    async def run():
        reader = asyncio.StreamReader(limit=buffer_limit)

        async def feed():
            for i in range(0, len(data), chunk):
                reader.feed_data(data[i:i + chunk])
                await asyncio.sleep(0)
            reader.feed_eof()
        task = asyncio.ensure_future(feed())
        fake = type("Session", (), {"_reader": reader})()
        content = await RelistSMTP._read_content(fake, limit)
        await task
        return content, await reader.read()
    return asyncio.run(run())


lines = st.lists(st.sampled_from([b"", b".", b"..", b"...x", b".x", b"a", b"a.b", b"\r", b"x\r", b"\rx",
                                  b"\n", b"a\nb", b" ", b"-- ", b"x" * 70]), max_size=30)


@settings(max_examples=300, deadline=None)
@given(lines, st.sampled_from([1, 2, 3, 7, 64, 4096]), st.sampled_from([6, 9, 64, 1 << 16]),
       st.sampled_from([0, 40, 10_000]))
def test_data_reader_reads_what_the_line_reader_read(body_lines, chunk, buffer_limit, limit):
    # the client's bytes: each line dot-stuffed (RFC 5321 §4.5.2), then the terminator
    # and a pipelined command that must stay unread
    wire = b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n" for ln in body_lines)
    data = wire + b".\r\nQUIT\r\n"
    content, rest = _block_reader(data, limit, chunk, buffer_limit)
    assert content == _line_reader(data, limit)
    assert rest == b"QUIT\r\n"
