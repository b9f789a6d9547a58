"""DKIM canonicalization (RFC 6376 §3.4) and header selection (§5.4.2), fast.

Same results as dkimpy's ``rfc822_parse``, ``dkim.canonicalization`` and
``select_headers`` (tests/test_sign_canon.py compares them on a table of edge
cases), but each step skips work that cannot change anything (no regex pass over a
body without tabs or double spaces, only the selected fields canonicalized), so a
signature costs little more than its RSA operation.
"""

from __future__ import annotations

import re

__all__ = ["Header", "Canon", "MessageFormatError", "parse", "select"]

Header = tuple[bytes, bytes]   # (name as written, value after the colon, CRLF line ends)

_NAME = re.compile(rb"([\x21-\x7e]+?):")
_EOL = re.compile(rb"\r?\n")
_WSP_RUN = re.compile(rb"[\t ]+")
_UNFOLD = re.compile(rb"\r?\n")


class MessageFormatError(ValueError):
    """A header line that is neither a field, a continuation nor an mbox ``From `` line."""


def parse(message: bytes) -> tuple[list[Header], bytes]:
    """Header fields and the body with CRLF line ends (LF or CRLF input), as dkimpy."""
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
    if body is None:
        body = b""
    elif b"\n" in body and body.count(b"\n") != body.count(b"\r\n"):
        body = _EOL.sub(b"\r\n", body)
    return [(n, v) for n, v in headers], body


def select(headers: list[Header], names: tuple[bytes, ...]) -> list[Header]:
    """The fields h= ``names`` covers: for a repeated name, the last instance first, then
    upwards; a name with no instance left contributes nothing (RFC 6376 §5.4.2)."""
    positions: dict[bytes, list[int]] = {}
    for i, (name, _) in enumerate(headers):
        positions.setdefault(name.lower(), []).append(i)
    out = []
    for name in names:
        left = positions.get(name)
        if left:
            out.append(headers[left.pop()])
    return out


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

    @classmethod
    def from_c(cls, c: str) -> Canon:
        head, _, body = c.partition("/")
        return cls(head, body or "simple")

    def c_value(self) -> bytes:
        return f"{self.header}/{self.body}".encode("ascii")

    def headers(self, headers: list[Header]) -> list[Header]:
        if self.header == "simple":
            return headers
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
        if b" \r\n" in body:            # delete WSP at line ends (§3.4.4 a)
            lines = body.split(b"\r\n")   # the last piece has no CRLF: left alone
            body = b"\r\n".join([ln.rstrip(b" ") for ln in lines[:-1]] + lines[-1:])
        while b"  " in body:             # reduce WSP runs to one SP (§3.4.4 b)
            body = body.replace(b"  ", b" ")
        body = _strip_trailing_lines(body)
        return b"" if body == b"\r\n" else body
