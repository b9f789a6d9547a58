"""DKIM message parse, header selection and canonicalization (RFC 6376 §3.4, §5.4.2).

The one place the signer, the verifier and the guard get them from.  Same results as
dkimpy's ``rfc822_parse``, ``select_headers`` and ``canonicalization`` wherever dkimpy
accepts the input (tests/test_canon*.py compare them, with Hypothesis); where it does
not, one answer: a continuation line before the first field is a ``MessageFormatError``
(dkimpy crashes with an IndexError).  dkimpy's relaxed header canonicalization strips
ASCII white space (``bytes.strip``: also a bare CR, VT and FF) where RFC 6376 §3.4.2
strips only WSP; relist follows dkimpy, and its signer never signs such a field
(``RawMessage.signable`` makes those bytes spaces first).

Speed: every pass over a body is one C call (``bytes.replace``/``split``/``count``,
``re.sub`` over bytes, hashlib), none is a Python loop over lines, and a pass that
cannot change anything is skipped (no tab, no double space, no bare LF).  A body's
canonical forms and hashes are computed once per message value (``BodyMemo``).
"""

from __future__ import annotations

import functools
import hashlib
import re
from typing import Protocol, TypeVar

__all__ = ["HASHERS", "STREAM_CHUNK", "BodyMemo", "Canon", "Header", "MessageFormatError", "body_digest",
           "crlf_lines", "index", "parse", "relaxed_body", "relaxed_headers", "relaxed_lines", "select",
           "selected", "simple_body", "without_b"]

Header = tuple[bytes, bytes]   # (name as written, value after the colon, CRLF line ends)

_NAME = re.compile(rb"([\x21-\x7e]+?):")    # dkimpy's field name rule
# The characters of a field name as _NAME takes it (up to the first colon), for
# RawMessage.dkim_split: bytes.translate(None, NAME_CHARS) leaves what is not one.
NAME_CHARS = bytes(range(0x21, 0x7F)).replace(b":", b"")
_EOL = re.compile(rb"\r?\n")
# An LF that no CR comes right before.  The literal first lets the regex engine skip
# to each LF; half the time of counting LF and CRLF (2 x 44 µs over 64 KiB).
_BARE_LF = re.compile(rb"\n(?<!\r\n)")
_TWO_SP = re.compile(rb"  ")
_SP_CRLF = re.compile(rb" \r\n")   # (a regex finds these faster than bytes.find or "in")
# dkimpy's compress_whitespace ([\t ]+ to one SP) changes only the runs that are not a
# single SP: the runs of two or more, and a lone HTAB.
_WSP_RUN = re.compile(rb"[\t ]{2,}|\t")
# dkimpy's RE_BTAG (``[;\s]b FWS =`` then ``(FWS b64-char)*`` then an optional final line
# ending, replaced by its first group), rewritten: each FWS is ``\s*`` (a greedy
# ``(\s* X)*`` ends at the last X of the longest run of white space and X); the delimiter
# before ``b`` is a lookbehind, so the pattern starts with a literal.  Same substitution,
# a fraction of the time on a 2048-bit b=.
_BTAG = re.compile(rb"(b(?<=[;\s]b)\s*=)(?:[\sa-zA-Z0-9+/=]*[a-zA-Z0-9+/=])?(?:\r?\n\Z)?")

# The common case, a CRLF-only header block of well-formed fields, split by one regex:
# when its matches add up to the whole block they tile it, so every line is a field or
# a continuation and every CR and LF is a CRLF.  Anything else (LF or lone CR, an mbox
# "From " line, a malformed line) takes the line-by-line path, which reports errors.
_FIELD_NAME = rb"[\x21-\x39\x3b-\x7e]+"               # = _NAME: the shortest run up to ':'
_FIELD_VALUE = rb"[^\r\n]*\r\n(?:[\t ][^\r\n]*\r\n)*"  # the line and its continuations
CRLF_FIELDS = re.compile(rb"(%s):(%s)" % (_FIELD_NAME, _FIELD_VALUE))
_CRLF_FIELDS = CRLF_FIELDS   # (the name relist.core.sign.signature uses)


class MessageFormatError(ValueError):
    """A header line that is neither a field, a continuation nor an mbox ``From `` line."""


def parse(message: bytes) -> tuple[list[Header], bytes]:
    """Header fields and the body with CRLF line ends (LF or CRLF input), as dkimpy's
    ``rfc822_parse`` (the same fields, body and error text).  ``MessageFormatError``
    for a line that is no field (or a continuation line before the first field)."""
    end = message.find(b"\r\n\r\n")
    if end > 0:
        fields = CRLF_FIELDS.findall(message, 0, end + 2)
        if sum([len(n) + len(v) + 1 for n, v in fields]) == end + 2:
            return fields, crlf_lines(message[end + 4:])
    return _parse_lines(message)


def crlf_lines(data: bytes) -> bytes:
    """``data`` with every line ending CRLF (a bare LF becomes CRLF), as dkimpy's split
    on ``\\r?\\n`` and join with CRLF; ``data`` itself when nothing changes."""
    if b"\n" in data and _BARE_LF.search(data) is not None:
        return _EOL.sub(b"\r\n", data)
    return data


def _parse_lines(message: bytes) -> tuple[list[Header], bytes]:
    """dkimpy's loop: lines up to the first empty one are fields, continuations or
    mbox ``From `` lines; the rest, CRLF-joined, is the body."""
    m = re.search(rb"\r?\n\r?\n", message)
    if message.startswith((b"\r\n", b"\n")):
        head, body = b"", message[2 if message.startswith(b"\r\n") else 1:]
    elif m is None:
        head, body = message, None
    else:
        head, body = message[:m.start()], message[m.end():]
    headers: list[list[bytes]] = []
    for line in _EOL.split(head) if head else []:
        if not line:
            continue
        if line[0] in (0x09, 0x20):
            if not headers:
                raise MessageFormatError("a continuation line comes before the first header field")
            headers[-1][1] += line + b"\r\n"
            continue
        nm = _NAME.match(line)
        if nm is not None:
            headers.append([nm.group(1), line[nm.end():] + b"\r\n"])
        elif not line.startswith(b"From "):
            raise MessageFormatError("Unexpected characters in RFC822 header: %r" % line)
    return [(n, v) for n, v in headers], b"" if body is None else crlf_lines(body)


# -- header selection (RFC 6376 §5.4.2) ---------------------------------------------

def index(headers: list[Header]) -> dict[bytes, list[int]]:
    """Positions of the fields by lower-cased name, top down."""
    positions: dict[bytes, list[int]] = {}
    for i, (name, _) in enumerate(headers):
        positions.setdefault(name.lower(), []).append(i)
    return positions


def select(headers: list[Header], names: tuple[bytes, ...],
           positions: dict[bytes, list[int]] | None = None) -> list[Header]:
    """The fields h= ``names`` (lower-cased) covers: for a repeated name, the last
    instance first, then upwards; a name with no instance left contributes nothing
    (over-signing an absent field).  dkimpy's ``select_headers``.  ``positions``:
    ``index(headers)`` when the caller has it already (not changed)."""
    if positions is None:
        positions = index(headers)
    return [headers[i] for i in selected(positions, tuple(names))]


Name = TypeVar("Name", str, bytes)   # field names as written (bytes), or decoded (the guard's)


def selected(positions: dict[Name, list[int]], names: tuple[Name, ...]) -> list[int]:
    """``select`` as positions, by runs of one name in h= (an oversigned h= is one run
    per name): a run of r takes the next r instances of its name, bottom-up."""
    runs, distinct = _runs(names)
    out: list[int] = []
    if distinct:    # each name in one run: it takes its instances from the bottom
        for name, r in runs:
            at = positions.get(name)
            if at:
                out += at[::-1][:r]
        return out
    taken: dict[Name, int] = {}
    for name, r in runs:
        at = positions.get(name)
        if at:
            k = taken.get(name, 0)
            out += at[::-1][k:k + r]
            taken[name] = k + r
    return out


@functools.lru_cache(maxsize=256)
def _runs(names: tuple[Name, ...]) -> tuple[tuple[tuple[Name, int], ...], bool]:
    """h= as (name, times in a row), and whether every name has only one run
    (memoized: a list signs with the same few h= values)."""
    runs: list[list] = []
    for name in names:
        if runs and runs[-1][0] == name:
            runs[-1][1] += 1
        else:
            runs.append([name, 1])
    return tuple((n, r) for n, r in runs), len({n for n, _ in runs}) == len(runs)


def without_b(value: bytes) -> bytes:
    """A signature field's value with b= emptied, as it is hashed (RFC 6376 §3.7;
    dkimpy's ``RE_BTAG`` substitution, a final line ending removed with it)."""
    return _BTAG.sub(b"\\1", value)


# -- canonicalization (RFC 6376 §3.4) -------------------------------------------------

def relaxed_headers(headers: list[Header]) -> list[Header]:
    """dkimpy's ``Relaxed.canonicalize_headers``: name lower-cased and right-stripped;
    value unfolded (every ``\\r?\\n`` removed), SP/HTAB runs made one SP, stripped,
    CRLF added."""
    values = [value for _, value in headers]
    joined = b"\0".join(values)
    if joined.count(b"\0") == len(values) - 1:
        # No value holds a NUL: unfold and compress once over all of them,
        # NUL-separated (neither pass matches a NUL, so none spans two values).
        if joined.find(b"\n") >= 0:
            joined = joined.replace(b"\r\n", b"").replace(b"\n", b"")
        if joined.find(b"\t") >= 0 or joined.find(b"  ") >= 0:
            joined = _WSP_RUN.sub(b" ", joined)
        values = joined.split(b"\0")
    else:
        values = [_WSP_RUN.sub(b" ", v.replace(b"\r\n", b"").replace(b"\n", b"")) for v in values]
    return [(name.lower().rstrip(), value.strip() + b"\r\n") for (name, _), value in zip(headers, values)]


def _strip_trailing_lines(content: bytes) -> bytes:
    """Drop empty lines at the end, keeping one CRLF (RFC 6376 §3.4.3); as dkimpy."""
    end = None
    while content.endswith(b"\r\n", 0, end):
        end = -2 if end is None else end - 2
    if end is None:
        return content + b"\r\n"
    end += 2
    return content if end == 0 else content[:end]


def simple_body(body: bytes) -> bytes:
    """dkimpy's ``Simple.canonicalize_body`` (RFC 6376 §3.4.3) of a CRLF body."""
    return _strip_trailing_lines(body)


def relaxed_body(body: bytes) -> bytes:
    """dkimpy's ``Relaxed.canonicalize_body`` (RFC 6376 §3.4.4) of a CRLF body, without
    its regexes: a tab becomes a space; when there is no double space, deleting the
    space before each CRLF is all that is left (one ``replace``), else the spaces
    before line ends go first, then each run of spaces is halved until none is left."""
    body = _strip_trailing_lines(relaxed_lines(body))
    return b"" if body == b"\r\n" else body


def relaxed_lines(body: bytes) -> bytes:
    """The line-local part of ``relaxed_body`` (§3.4.4 a and b): tabs become spaces, WSP
    at line ends goes, runs of WSP become one SP; empty lines at the end stay."""
    if b"\t" in body:
        body = body.replace(b"\t", b" ")
    if _TWO_SP.search(body):           # (the regex finds faster than "in" here)
        pieces = body.split(b" \r\n")    # delete WSP at line ends (§3.4.4 a): each piece
        if len(pieces) > 1:              # but the last ends a line; the rest of its spaces go
            body = b"\r\n".join([p.rstrip(b" ") for p in pieces[:-1]] + pieces[-1:])
        while _TWO_SP.search(body):      # reduce WSP runs to one SP (§3.4.4 b)
            body = body.replace(b"  ", b" ")
    else:   # no run of spaces: a line ends with one space at most; none: nothing to do,
        m = _SP_CRLF.search(body)   # else replace from the first (a footer's "-- ": the end)
        if m is not None:
            at = m.start()
            body = body[:at] + body[at:].replace(b" \r\n", b"\r\n") if at else body.replace(b" \r\n", b"\r\n")
    return body


class HashState(Protocol):
    """A hashlib hash object, as ``BodyMemo`` keeps it."""

    def copy(self) -> HashState: ...

    def update(self, data: bytes, /) -> None: ...

    def digest(self) -> bytes: ...


HASHERS = {"sha256": hashlib.sha256, "sha1": hashlib.sha1}

# A body larger than this is canonicalized and hashed in line-aligned pieces of about
# this size, so that a 25 MiB post is not held a second (and third) time as its
# canonical form while it is hashed (issue 17: a worker's peak memory).
STREAM_CHUNK = 1 << 20


def _trailing_crlfs(data: bytes) -> int:
    """How many CRLF pairs ``data`` ends with."""
    n, end = 0, len(data)
    while end >= 2 and data[end - 2:end] == b"\r\n":
        n, end = n + 1, end - 2
    return n


def _text_of(lines: bytes, c_body: str) -> tuple[bytes, int]:
    """CRLF ``lines`` with ``c_body``'s line-local rules applied, up to the end of their
    last text, and how many CRLFs follow that text (which the body rule drops or
    keeps, depending on what comes after)."""
    if c_body == "relaxed":
        lines = relaxed_lines(lines)
    k = _trailing_crlfs(lines)
    return (lines[:len(lines) - 2 * k] if k else lines), k


def body_digest(body: bytes, c_body: str, hash_name: str, length: int | None = None,
                chunk: int = STREAM_CHUNK) -> tuple[bytes, int]:
    """(hash of the CRLF ``body`` canonicalized ``c_body``, cut at ``length`` when given;
    the canonical body's whole length): what ``relaxed_body``/``simple_body`` give, hashed,
    computed in pieces cut after a line end.  Every rule of both canonicalizations is
    local to a line but the last (§3.4.3/§3.4.4: empty lines at the end go), so the
    empty lines that end a piece are held back until a piece with text follows."""
    relaxed = c_body == "relaxed"
    if len(body) <= chunk:
        canon = relaxed_body(body) if relaxed else simple_body(body)
        return HASHERS[hash_name](canon if length is None else canon[:length]).digest(), len(canon)
    h = HASHERS[hash_name]()
    total = 0

    def emit(data: bytes) -> None:
        nonlocal total
        if length is None:
            h.update(data)
        elif total < length:
            h.update(data[:length - total])
        total += len(data)

    held, text, open_line = 0, False, False   # empty lines held back; any text; last line unended
    start, n = 0, len(body)
    while start < n:
        cut = body.find(b"\n", start + chunk - 1) if start + chunk < n else -1
        end = n if cut < 0 else cut + 1
        piece = body[start:end]
        start = end
        if relaxed:
            piece = relaxed_lines(piece)
        k = _trailing_crlfs(piece)
        head = piece[:len(piece) - 2 * k]
        if head:
            if held:
                emit(b"\r\n" * held)
            emit(head)
            text = True
            if k:
                emit(b"\r\n")
                held, open_line = k - 1, False
            else:
                held, open_line = 0, True
        else:
            held += k
    if text and open_line:
        emit(b"\r\n")
    elif not text and not relaxed:
        emit(b"\r\n")   # simple: an empty body is one CRLF; relaxed: nothing
    return h.digest(), total


class BodyMemo:
    """A body's hashes, each computed once: what the verifier, the guard and the signer
    ask of the same body (the same c= body and algorithm, the same l=) is one
    canonicalization and one hash.  Held by the message value (``RawMessage.body_memo``)
    for that body only.  The canonical text itself is not kept (a large body would be
    held twice).

    A footer appended to the body need not be hashed with all that comes before it
    again: every rule of both canonicalizations is local to a line but the last (the
    empty lines at the end go), so the canonical form of ``body + lines`` is the
    canonical ``body`` up to its last text, its empty lines, then the canonical
    ``lines``.  ``appended`` hands on each hash the memo has made that way, from the
    hash state it kept (``_open``) at the end of that text."""

    __slots__ = ("body", "_digest", "_open")

    def __init__(self, body: bytes):
        self.body = body                                  # CRLF line ends
        self._digest: dict[tuple[str, str, int | None], tuple[bytes, int]] = {}
        # (c_body, hash_name) -> (hash state over the canonical body up to the end of
        # its last text, the CRLFs after it, that text's canonical length): whole
        # bodies up to STREAM_CHUNK that end with a line end.
        self._open: dict[tuple[str, str], tuple[HashState, int, int]] = {}

    def digest(self, c_body: str, hash_name: str, length: int | None = None) -> tuple[bytes, int]:
        """(hash of the body canonicalized ``c_body``, cut at ``length`` when given;
        the canonical body's whole length)."""
        key = (c_body, hash_name, length)
        out = self._digest.get(key)
        if out is None:
            if length is None and len(self.body) <= STREAM_CHUNK:
                out = self._whole(c_body, hash_name)
            else:
                out = body_digest(self.body, c_body, hash_name, length)
            self._digest[key] = out
        return out

    def _whole(self, c_body: str, hash_name: str) -> tuple[bytes, int]:
        """``body_digest`` of the whole body, keeping the hash state at the end of its
        last text for ``appended``."""
        text, k = _text_of(self.body, c_body)
        if not text:     # no text (an empty body or empty lines): as body_digest has it
            return body_digest(self.body, c_body, hash_name)
        h = HASHERS[hash_name](text)
        if k:
            self._open[(c_body, hash_name)] = (h.copy(), k, len(text))
        h.update(b"\r\n")
        return h.digest(), len(text) + 2

    def appended(self, body: bytes, added: int) -> BodyMemo:
        """The memo of ``body``, which is this memo's body followed by ``added`` octets
        of CRLF lines (the body ended with a line end), with the hashes this memo can
        hand on already made."""
        new = BodyMemo(body)
        extra = body[len(body) - added:]
        for (c_body, hash_name), (state, k, size) in self._open.items():
            text, j = _text_of(extra, c_body)
            if not text:
                continue     # empty lines only: the canonical body is the old one; rare
            h = state.copy()
            h.update(b"\r\n" * k + text)
            size += 2 * k + len(text)
            if j and len(body) <= STREAM_CHUNK:
                new._open[(c_body, hash_name)] = (h.copy(), j, size)
            h.update(b"\r\n")
            new._digest[(c_body, hash_name, None)] = (h.digest(), size + 2)
        return new


class Canon:
    """One side of c= (``simple`` or ``relaxed``) for headers and body."""

    def __init__(self, header: str, body: str):
        if header not in ("simple", "relaxed") or body not in ("simple", "relaxed"):
            raise ValueError(f"{header}/{body}")
        self.header, self.body = header, body
        self._c = f"{header}/{body}".encode("ascii")

    @classmethod
    def from_c(cls, c: str) -> Canon:
        head, _, body = c.partition("/")
        return cls(head, body or "simple")

    def c_value(self) -> bytes:
        return self._c

    def headers(self, headers: list[Header]) -> list[Header]:
        """The fields canonicalized (simple: as they are)."""
        if self.header == "simple":
            return headers
        return relaxed_headers(headers)

    def hash_input(self, headers: list[Header], unfolded: bool = False) -> bytes:
        """The canonical fields joined as they are hashed: ``name:value`` each (RFC 6376 §3.7).
        ``unfolded``: the caller knows that each value has one LF, in its final CRLF."""
        if self.header == "simple":
            return b"".join([n + b":" + v for n, v in headers])
        # Relaxed, guessing that unfolding is removing CRLFs and that there is no
        # whitespace run to reduce; the guess is right when what comes out has no tab,
        # no two spaces and no CR or LF but the CRLF that ends each field: then every
        # lone CR or LF, tab and space run was at the start or end of a value, which
        # strip() removes as relaxed_headers's unfolding, reducing and strip() would.
        if unfolded:   # each value's only CRLF is its last: strip() removes it
            out = b"".join([n.lower().rstrip() + b":" + v.strip() + b"\r\n" for n, v in headers])
        else:
            out = b"".join([n.lower().rstrip() + b":" + v.replace(b"\r\n", b"").strip() + b"\r\n"
                            for n, v in headers])
        if (out.count(b"\r") == len(headers) == out.count(b"\n")
                and b"\t" not in out and b"  " not in out):
            return out
        return b"".join([n + b":" + v for n, v in relaxed_headers(headers)])

    def signed_input(self, headers: list[Header], own: Header) -> bytes:
        """What a signature's header hash covers (RFC 6376 §3.7): the selected fields
        canonical, then its own field canonical with b= emptied and no final CRLF."""
        name, value = self.headers([(own[0], without_b(own[1]))])[0]
        return self.hash_input(headers) + name + b":" + value.rstrip()

    def body_bytes(self, body: bytes) -> bytes:
        """The CRLF ``body`` canonicalized."""
        return relaxed_body(body) if self.body == "relaxed" else simple_body(body)
