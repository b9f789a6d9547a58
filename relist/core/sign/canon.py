"""DKIM canonicalization (RFC 6376 §3.4) and header selection (§5.4.2), fast.

Same results as dkimpy's ``rfc822_parse``, ``dkim.canonicalization`` and
``select_headers`` (tests/test_sign_canon.py compares them on a table of edge
cases), but each step skips work that cannot change anything (no regex pass over a
body without tabs or double spaces, only the selected fields canonicalized), so a
signature costs little more than its RSA operation.
"""

from __future__ import annotations

import functools
import re

__all__ = ["Header", "Canon", "MessageFormatError", "index", "parse", "select"]

Header = tuple[bytes, bytes]   # (name as written, value after the colon, CRLF line ends)

_NAME = re.compile(rb"([\x21-\x7e]+?):")
_EOL = re.compile(rb"\r?\n")
_WSP_RUN = re.compile(rb"[\t ]+")
_UNFOLD = re.compile(rb"\r?\n")
_TWO_SP = re.compile(rb"  ")


class MessageFormatError(ValueError):
    """A header line that is neither a field, a continuation nor an mbox ``From `` line."""


# The common case, a CRLF-only header block of well-formed fields, split by one regex:
# when its matches add up to the whole block they tile it, so every line is a field or
# a continuation and every CR and LF is a CRLF.  Anything else (LF or lone CR, an mbox
# "From " line, a malformed line) takes the line-by-line path, which reports errors.
_FIELD_NAME = rb"[\x21-\x39\x3b-\x7e]+"               # = _NAME: the shortest run up to ':'
_FIELD_VALUE = rb"[^\r\n]*\r\n(?:[\t ][^\r\n]*\r\n)*"  # the line and its continuations
_CRLF_FIELDS = re.compile(rb"(%s):(%s)" % (_FIELD_NAME, _FIELD_VALUE))


def parse(message: bytes) -> tuple[list[Header], bytes]:
    """Header fields and the body with CRLF line ends (LF or CRLF input), as dkimpy."""
    end = message.find(b"\r\n\r\n")
    if end > 0:
        fields = _CRLF_FIELDS.findall(message, 0, end + 2)
        if sum([len(n) + len(v) + 1 for n, v in fields]) == end + 2:
            return fields, crlf_body(message[end + 4:])
    return _parse_lines(message)


def crlf_body(body: bytes) -> bytes:
    """The body with every line ending CRLF (a bare LF becomes CRLF), as dkimpy."""
    if b"\n" in body and body.count(b"\n") != body.count(b"\r\n"):
        return _EOL.sub(b"\r\n", body)
    return body


def _parse_lines(message: bytes) -> tuple[list[Header], bytes]:
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
                raise MessageFormatError("continuation line before the first header field")
            headers[-1][1] += line + b"\r\n"
            continue
        nm = _NAME.match(line)
        if nm is not None:
            headers.append([nm.group(1), line[nm.end():] + b"\r\n"])
        elif not line.startswith(b"From "):
            raise MessageFormatError(f"not a header field: {line[:40]!r}")
    return [(n, v) for n, v in headers], b"" if body is None else crlf_body(body)


def index(headers: list[Header]) -> dict[bytes, list[int]]:
    """Positions of the fields by lower-cased name, top down."""
    positions: dict[bytes, list[int]] = {}
    for i, (name, _) in enumerate(headers):
        positions.setdefault(name.lower(), []).append(i)
    return positions


def select(headers: list[Header], names: tuple[bytes, ...],
           positions: dict[bytes, list[int]] | None = None) -> list[Header]:
    """The fields h= ``names`` covers: for a repeated name, the last instance first, then
    upwards; a name with no instance left contributes nothing (RFC 6376 §5.4.2).
    ``positions``: ``index(headers)`` when the caller has it already (not changed)."""
    if positions is None:
        positions = index(headers)
    return [headers[i] for i in selected(positions, tuple(names))]


def selected(positions: dict[bytes, list[int]], names: tuple[bytes, ...]) -> list[int]:
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
    taken: dict[bytes, int] = {}
    for name, r in runs:
        at = positions.get(name)
        if at:
            k = taken.get(name, 0)
            out += at[::-1][k:k + r]
            taken[name] = k + r
    return out


@functools.lru_cache(maxsize=256)
def _runs(names: tuple[bytes, ...]) -> tuple[tuple[tuple[bytes, int], ...], bool]:
    """h= as (name, times in a row), and whether every name has only one run
    (memoized: a list signs with the same few h= values)."""
    runs: list[list] = []
    for name in names:
        if runs and runs[-1][0] == name:
            runs[-1][1] += 1
        else:
            runs.append([name, 1])
    return tuple((n, r) for n, r in runs), len({n for n, _ in runs}) == len(runs)


def _strip_trailing_lines(content: bytes) -> bytes:
    """Drop empty lines at the end, keeping one CRLF (RFC 6376 §3.4.3); as dkimpy."""
    end = None
    while content.endswith(b"\r\n", 0, end):
        end = -2 if end is None else end - 2
    if end is None:
        return content + b"\r\n"
    end += 2
    return content if end == 0 else content[:end]


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
        if self.header == "simple":
            return headers
        # hash_input's guess (unfolding is removing CRLFs, no whitespace run to reduce),
        # checked on what comes out
        out = [(n.lower().rstrip(), v.replace(b"\r\n", b"").strip() + b"\r\n") for n, v in headers]
        values = b"".join([v for _, v in out])
        if (values.count(b"\r") == len(out) == values.count(b"\n")
                and b"\t" not in values and b"  " not in values):
            return out
        return self._relaxed(headers)

    def hash_input(self, headers: list[Header], unfolded: bool = False) -> bytes:
        """The canonical fields joined as they are hashed: ``name:value`` each (RFC 6376 §3.7).
        ``unfolded``: the caller knows that each value has one LF, in its final CRLF."""
        if self.header == "simple":
            return b"".join([n + b":" + v for n, v in headers])
        # Relaxed, guessing that unfolding is removing CRLFs and that there is no
        # whitespace run to reduce; the guess is right when what comes out has no tab,
        # no two spaces and no CR or LF but the CRLF that ends each field: then every
        # lone CR or LF, tab and space run was at the start or end of a value, which
        # strip() removes as _relaxed's unfolding, reducing and strip() would.
        if unfolded:   # each value's only CRLF is its last: strip() removes it
            out = b"".join([n.lower().rstrip() + b":" + v.strip() + b"\r\n" for n, v in headers])
        else:
            out = b"".join([n.lower().rstrip() + b":" + v.replace(b"\r\n", b"").strip() + b"\r\n"
                            for n, v in headers])
        if (out.count(b"\r") == len(headers) == out.count(b"\n")
                and b"\t" not in out and b"  " not in out):
            return out
        return b"".join([n + b":" + v for n, v in self._relaxed(headers)])

    @staticmethod
    def _relaxed(headers: list[Header]) -> list[Header]:
        out = []
        for name, value in headers:
            if b"\n" in value[:-2] or b"\r" in value[:-2]:
                value = _UNFOLD.sub(b"", value)
            if b"\t" in value or b"  " in value:
                value = _WSP_RUN.sub(b" ", value)
            out.append((name.lower().rstrip(), value.strip() + b"\r\n"))
        return out

    def body_bytes(self, body: bytes) -> bytes:
        if self.body == "simple":
            return _strip_trailing_lines(body)
        if b"\t" in body:
            body = body.replace(b"\t", b" ")
        if _TWO_SP.search(body):          # (the regex finds faster than "in" here)
            pieces = body.split(b" \r\n")   # delete WSP at line ends (§3.4.4 a): each piece
            if len(pieces) > 1:              # but the last ends a line; the rest of its spaces go
                body = b"\r\n".join([p.rstrip(b" ") for p in pieces[:-1]] + pieces[-1:])
            while _TWO_SP.search(body):      # reduce WSP runs to one SP (§3.4.4 b)
                body = body.replace(b"  ", b" ")
        else:   # no run of spaces: a line ends with one space at most, and deleting it
            body = b"\r\n".join(body.split(b" \r\n"))   # makes none (split: faster than replace)
        body = _strip_trailing_lines(body)
        return b"" if body == b"\r\n" else body
