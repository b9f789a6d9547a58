"""Byte-level MIME helpers for the list transformations.

Rule: the ``email`` package is used here only to READ a few header fields (content
type, parameters); every output byte is built by this module or the caller.  Nothing
here decodes a body part that is not being changed, so a 25 MiB attachment costs a
boundary scan, not a decode.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import re
import string
from dataclasses import dataclass
from email.errors import MessageError
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.policy import compat32

from relist.core.memo import small_lru_cache
from relist.core.message import HeaderField

__all__ = [
    "ContentInfo", "Multipart", "ascii_compatible", "content_info", "decode_words", "readable_words",
    "encode_words", "fold", "new_boundary", "qp_decode", "qp_encode", "b64_encode",
    "b64_decode", "needs_encoding", "scan_multipart", "set_charset",
]

CONTENT_FIELDS = ("content-type", "content-transfer-encoding")


@dataclass(frozen=True, slots=True)
class ContentInfo:
    """What the Content-* fields of an entity say (RFC 2045 §5, §6)."""

    ctype: str                 # "text/plain" when absent (RFC 2045 §5.2)
    charset: str               # "us-ascii" when absent
    cte: str                   # "7bit" when absent (RFC 2045 §6.1)
    boundary: str | None
    fmt: str | None            # RFC 3676 format parameter
    delsp: str | None
    disposition: str           # "" when absent
    explicit: bool             # True when a Content-Type field is present
    wellformed: bool           # Content-Type has type/subtype syntax


def content_info(fields: tuple[HeaderField, ...]) -> ContentInfo | str:
    """Read an entity's Content-Type/-Transfer-Encoding/-Disposition; a string is a
    reason the fields are unusable (repeated fields)."""
    wanted = {}
    for name in CONTENT_FIELDS + ("content-disposition",):
        found = [f for f in fields if f.name == name]
        if len(found) > 1:
            return f"{len(found)} {name} fields"
        if found:
            wanted[name] = found[0]
    return _read_content_fields(tuple(f.raw for f in wanted.values()), "content-type" in wanted)


@small_lru_cache(maxsize=512, max_len=4096)
def _read_content_fields(raws: tuple[bytes, ...], explicit: bool) -> ContentInfo:
    """``content_info`` of these fields' bytes: the same few Content-Type fields come
    back post after post, and the ``email`` parser's reading of them is most of a
    footer's cost on a small post."""
    # One line per field: unfold (RFC 5322 §2.2.3) and blank out stray CR/LF, so a
    # broken field cannot hide the next one from the parser.
    raw = b"".join(
        re.sub(rb"[\r\n]", b" ", re.sub(rb"\r?\n(?=[ \t])", b"", r.rstrip(b"\r\n"))) + b"\n"
        for r in raws
    ) + b"\n"
    hdr = BytesHeaderParser(policy=compat32).parsebytes(raw)
    ct_text = str(hdr.get("content-type", "")).split(";", 1)[0].strip().lower()
    wellformed = bool(re.fullmatch(r"[!#$%&'*+.^_`|~0-9a-z-]+/[!#$%&'*+.^_`|~0-9a-z-]+", ct_text))
    cte = str(hdr.get("content-transfer-encoding", "7bit")).strip().lower() or "7bit"
    disp = str(hdr.get("content-disposition", "")).split(";", 1)[0].strip().lower()
    return ContentInfo(
        ctype=hdr.get_content_type(),
        charset=hdr.get_content_charset() or "us-ascii",
        cte=cte,
        boundary=hdr.get_boundary(),
        fmt=_param(hdr, "format"),
        delsp=_param(hdr, "delsp"),
        disposition=disp,
        explicit=explicit,
        wellformed=wellformed or not explicit,
    )


def _param(hdr, name: str) -> str | None:
    value = hdr.get_param(name)
    if isinstance(value, tuple):        # RFC 2231 form
        value = value[2]
    return value.lower() if isinstance(value, str) else None


_PROBE = string.printable


def ascii_compatible(charset: str) -> bool:
    """True when ASCII text encodes to the same bytes in ``charset``, so encoded text
    can be appended to a body byte-wise.  Raises LookupError for an unknown charset."""
    try:
        codecs.lookup(charset)
    except ValueError as exc:        # e.g. a NUL byte in the name
        raise LookupError(charset) from exc
    try:
        return _PROBE.encode(charset) == _PROBE.encode("ascii")
    except UnicodeError:
        return False


# -- multipart (RFC 2046 §5.1.1) -------------------------------------------------

@dataclass(frozen=True, slots=True)
class Multipart:
    """Where the delimiter lines of a multipart body are.

    ``parts`` are (start, end) offsets of each body part's bytes (after the delimiter
    line, up to but excluding the line ending that belongs to the next delimiter);
    ``close`` is the offset where the close-delimiter line ``--boundary--`` starts.
    """

    parts: tuple[tuple[int, int], ...]
    close: int


def scan_multipart(body: bytes, boundary: str) -> Multipart | str:
    """Find the delimiter lines of ``boundary`` in ``body`` without decoding anything;
    a string is the reason the structure is unusable.

    A delimiter line is ``--boundary`` at a line start, followed by optional linear
    white space and the line end (RFC 2046 §5.1.1), or ``--boundary--`` for the close
    delimiter.  This matches what Python's email parser accepts.
    """
    try:
        dash = b"--" + boundary.encode("ascii")
    except UnicodeEncodeError:
        return "non-ASCII boundary parameter"
    opens: list[tuple[int, int]] = []   # (line start, content start)
    pos = 0
    while True:
        i = body.find(dash, pos)
        if i < 0:
            break
        pos = i + len(dash)
        if i > 0 and body[i - 1:i] != b"\n":
            continue
        eol = body.find(b"\n", pos)
        line_end = len(body) if eol < 0 else eol + 1
        rest = body[pos:line_end]
        if rest.startswith(b"--") and not rest[2:].strip(b" \t\r\n"):
            if not opens:
                return "close delimiter before any body part"
            parts: list[tuple[int, int]] = []
            nexts = [start for start, _ in opens[1:]] + [i]   # where each part's next delimiter starts
            for (_, content), end in zip(opens, nexts):
                # The line ending before a delimiter belongs to the delimiter.
                if body[end - 2:end] == b"\r\n":
                    end -= 2
                elif body[end - 1:end] == b"\n":
                    end -= 1
                parts.append((content, max(content, end)))
            return Multipart(tuple(parts), i)
        if not rest.strip(b" \t\r\n"):
            opens.append((i, line_end))
    if not opens:
        return "boundary not found in body"
    return "no close delimiter (truncated multipart)"


def new_boundary(body: bytes) -> str:
    """A boundary that does not occur in ``body``: deterministic (the core has no
    randomness), derived from a hash of the body."""
    digest = hashlib.blake2b(body, digest_size=12).hexdigest()
    n = 0
    while True:
        candidate = f"relist-{digest}-{n}" if n else f"relist-{digest}"
        if ("--" + candidate).encode("ascii") not in body:
            return candidate
        n += 1


# -- transfer encodings (RFC 2045 §6.7, §6.8) -------------------------------------

def qp_decode(data: bytes) -> bytes:
    return binascii.a2b_qp(data)


def qp_encode(data: bytes, eol: bytes) -> bytes:
    """Quoted-printable with ``eol`` as the hard line break; ``data`` uses any of
    CRLF/LF for its line breaks."""
    data = data.replace(b"\r\n", b"\n")
    return binascii.b2a_qp(data, istext=True).replace(b"\n", eol)


def b64_decode(data: bytes) -> bytes | None:
    """Strict base64 decoding; None when the data is not valid base64."""
    compact = data.translate(None, b" \t\r\n")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None


def b64_encode(data: bytes, eol: bytes) -> bytes:
    """Base64 in 76-character lines (RFC 2045 §6.8), each ended by ``eol``."""
    enc = base64.b64encode(data)
    return b"".join(enc[i:i + 76] + eol for i in range(0, len(enc), 76))


# -- Content-Type parameter edit ----------------------------------------------------

_CHARSET = re.compile(
    rb"""(;[ \t\r\n]*charset[ \t]*=[ \t]*)("[^"\r\n]*"|[^ \t\r\n;()<>@,:\\"/\[\]?=]+)""",
    re.IGNORECASE,
)


def set_charset(field: HeaderField, charset: str, old: str) -> bytes | None:
    """The Content-Type field's bytes with the charset parameter ``old`` (as read by
    ``content_info``) set to ``charset``, every other byte kept; the parameter is
    appended when absent.  None when the field is too irregular to edit safely
    (8-bit bytes, stray CR/LF, a parameter that does not read back as ``old``):
    the caller then writes a new field."""
    raw = field.raw
    body = raw.rstrip(b"\r\n")
    ending = raw[len(body):]
    if not body.isascii() or re.search(rb"\r(?!\n[ \t])|(?<!\r)\n(?![ \t])|\r\n(?![ \t])", body):
        return None
    found = list(_CHARSET.finditer(body))
    value = b'"' + charset.encode("ascii") + b'"'
    if len(found) > 1:
        return None
    if not found:
        if old != "us-ascii" or re.search(rb"charset", body, re.IGNORECASE):
            return None
        return body + b"; charset=" + value + ending
    m = found[0]
    after = body[m.end(2):].lstrip(b" \t\r\n")
    if m.group(2).strip(b'"').decode("ascii").lower() != old or after[:1] not in (b"", b";", b"("):
        return None
    return body[:m.start(2)] + value + body[m.end(2):] + ending


# -- header text (RFC 2047, RFC 5322 §2.2.3) -----------------------------------------

_DECODE_ERRORS = (LookupError, UnicodeError, ValueError, binascii.Error, MessageError)


def decode_words(text: str) -> str | None:
    """``text`` with RFC 2047 encoded words decoded; None when a word's charset is
    unknown or its bytes do not decode."""
    if "=?" not in text:
        return text
    try:
        return str(make_header(decode_header(text)))
    except _DECODE_ERRORS:       # e.g. email.errors.CharsetError for a non-ASCII name
        return None


def readable_words(text: str) -> str:
    """``decode_words``, where a word that does not decode becomes U+FFFD instead (good
    enough to look for a prefix or show a name, not to rebuild the text)."""
    decoded = decode_words(text)
    if decoded is not None:
        return decoded
    try:
        chunks = decode_header(text)
    except _DECODE_ERRORS:
        return text
    out = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            out.append(chunk)
            continue
        try:
            out.append(chunk.decode(charset or "ascii", "replace"))
        except _DECODE_ERRORS:
            out.append(chunk.decode("ascii", "replace"))
    # decode_header drops the white space between chunks; good enough for a prefix test.
    return " ".join(part.strip() if i else part.rstrip() for i, part in enumerate(out))


_Q_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")


def encode_words(text: str, charset: str = "utf-8") -> str:
    """``text`` as RFC 2047 "Q" encoded words (§4.2, §5(3) safe set) joined by single
    spaces, each word at most 75 characters (§2) and never splitting a character."""
    prefix = f"=?{charset}?q?"
    words: list[str] = []
    current = ""
    for ch in text:
        chunk = "".join(
            chr(b) if b in _Q_SAFE else ("_" if b == 0x20 else f"={b:02X}")
            for b in ch.encode(charset)
        )
        if len(prefix) + len(current) + len(chunk) + 2 > 75:
            words.append(prefix + current + "?=")
            current = ""
        current += chunk
    words.append(prefix + current + "?=")
    return " ".join(words)


def needs_encoding(text: str) -> bool:
    """True when ``text`` cannot go into a header field as it is."""
    return not text.isascii() or "=?" in text or any(c in text for c in "\r\n\0")


def fold(name: str, value: str, width: int = 78) -> str:
    """``value`` with folds (``\\r\\n `` before a space) so that lines of the field
    ``name: value`` stay within ``width`` where white space allows (RFC 5322 §2.2.3)."""
    words = value.split(" ")
    lines: list[str] = []
    line = ""
    used = len(name) + 2
    for word in words:
        candidate = word if not line else line + " " + word
        if line and used + len(candidate) > width:
            lines.append(line)
            line, used = word, 1    # the continuation starts with one space
        else:
            line = candidate
    lines.append(line)
    return "\r\n ".join(lines)
