"""subject-prefix: put the list's tag, e.g. ``[ant] ``, at the start of the Subject.

What: the ``subject_prefix`` template (relist/core/templates.py) goes first, before
any "Re:"/"Fwd:", exactly where GNU Mailman 3.3 puts it (handlers/subject_prefix.py
builds ``prefix + "Re: " + rest``).  It is never doubled: a Subject that already
starts with the prefix (compared case-insensitively: Mailman's own "[Ant] " and a
configured "[ant] " are one tag) is left alone, and one that has it after reply markers
("Re: [ant] x", as a reply to a list post reads) gets it moved to the front, with a
run of Re:/AW:/SV:/VS: collapsed to one "Re: " as Mailman does.  A missing or empty
Subject becomes "[ant] (no subject)".

Why byte-careful: in the common case (no prefix yet) the original value's bytes,
RFC 2047 encoded words included, are kept after the prefix; only when the prefix has
to move is the value rebuilt (and RFC 2047-encoded only if it is not plain ASCII).
Mailman's "%d" post-number prefixes are not supported (relist has no post counter).
"""

from __future__ import annotations

import re

from relist.core import mime
from relist.core.message import HeaderField, RawMessage
from relist.core.model import Context, Work
from relist.core.policy import ListPolicy
from relist.core.steps import apply_transform
from relist.core.templates import expand

__all__ = ["NAME", "apply", "transform"]

NAME = "subject-prefix"

# Mailman 3.3 handlers/subject_prefix.py RE_PATTERN: the run collapsed to "Re: ".
_RE_RUN = re.compile(r"\s*((RE|AW|SV|VS)(\[\d+\])?\s*:\s*)+", re.IGNORECASE)
# Reply and forward markers a prefix may hide behind (detection only).
_MARKER = re.compile(
    r"(?:re|aw|sv|vs|antw|ref|rif|odp|fwd?|wg|tr|enc|rv)(?:\[\d+\])?[ \t]*:[ \t]*",
    re.IGNORECASE,
)
NO_SUBJECT = "(no subject)"


def apply(work: Work, ctx: Context) -> Work:
    """See `relist.core.steps`."""
    return apply_transform(NAME, transform, work)


def transform(msg: RawMessage, lp: ListPolicy) -> tuple[RawMessage | None, str]:
    """The message with the prefix in its Subject, or None and the reason."""
    prefix = expand(lp.subject_prefix, lp)
    if not prefix.strip():
        return None, "no subject prefix configured"
    if any(c in prefix for c in "\r\n\0"):
        return None, "subject prefix skipped: the template contains a line break"
    field = msg.get("subject")
    if field is None:
        new = msg.make_field("Subject", _encode(prefix + NO_SUBJECT, prefix))
        return msg.append(new), f"Subject added: {prefix + NO_SUBJECT!r}"
    raw_text = field.text()
    decoded = mime.decode_words(raw_text)
    text = mime.readable_words(raw_text) if decoded is None else decoded
    core = prefix.strip()
    rest = text.lstrip()
    markers = ""
    moved = False
    while True:
        if rest[:len(core)].casefold() == core.casefold():
            if not markers and not moved:
                return None, "prefix already present"
            rest = rest[len(core):].lstrip()
            moved = True
            continue
        m = _MARKER.match(rest)
        if m is None:
            break
        markers += m.group(0)
        rest = rest[m.end():]
    if not text.strip():
        return _put(msg, field, prefix + NO_SUBJECT, "empty Subject replaced", prefix)
    if not moved:
        return _prepend(msg, field, prefix, text, exact=decoded is not None and not _raw8(text))
    rest = markers + rest
    if decoded is None:
        return None, "prefix present after a reply marker; undecodable encoded word left unchanged"
    if _raw8(rest):
        return None, "prefix present after a reply marker; raw 8-bit Subject left unchanged"
    run = _RE_RUN.match(rest)
    if run:
        rest = "Re: " + rest[run.end():]
    return _put(msg, field, prefix + (rest or NO_SUBJECT), "prefix moved to the front", prefix)


def _raw8(text: str) -> bool:
    """True when ``text`` carries raw 8-bit bytes that are not UTF-8 (surrogates)."""
    return any(0xDC80 <= ord(c) <= 0xDCFF for c in text)


def _encode(text: str, prefix: str = "") -> str:
    """``text`` as a header value: plain when it is plain ASCII, else RFC 2047 words
    (keeping an ASCII ``prefix`` that ends in one space readable)."""
    if not mime.needs_encoding(text):
        return mime.fold("Subject", text)
    if prefix and text.startswith(prefix) and not mime.needs_encoding(prefix) \
            and prefix.endswith(" ") and not prefix.endswith("  "):
        return mime.fold("Subject", prefix + mime.encode_words(text[len(prefix):]))
    return mime.fold("Subject", mime.encode_words(text))


def _replace_first(msg: RawMessage, old: HeaderField, new: HeaderField) -> RawMessage:
    fields = list(msg.fields)
    fields[fields.index(old)] = new
    return msg.with_fields(fields)


def _put(msg: RawMessage, field: HeaderField, text: str, what: str, prefix: str = ""):
    new = msg.make_field("Subject", _encode(text, prefix))
    encoded = " (RFC 2047)" if mime.needs_encoding(text) else ""
    return _replace_first(msg, field, new), f"{what}{encoded}: {text!r}"


def _prepend(msg: RawMessage, field: HeaderField, prefix: str, text: str, exact: bool):
    """Prefix + the original value's bytes (folds and encoded words kept).  ``exact``
    is False when ``text`` is not a faithful decoding, so it must not be re-encoded."""
    raw = field.raw
    colon = raw.find(b":")
    name, value = raw[:colon], raw[colon + 1:].lstrip(b" \t")
    if value.startswith((b"\r\n", b"\n")):          # value starts on a continuation line
        value = value.lstrip(b"\r\n").lstrip(b" \t")
    starts_encoded = value.startswith(b"=?")
    trailing = prefix[len(prefix.rstrip()):]
    if not mime.needs_encoding(prefix):
        if not trailing and starts_encoded and exact:
            return _put(msg, field, prefix + text, "prefix added, Subject re-encoded", prefix)
        # An encoded word must be delimited by white space (RFC 2047 §5(1)).
        pre = prefix.encode("ascii") + (b" " if not trailing and starts_encoded else b"")
    elif starts_encoded:
        # White space between two encoded words is not displayed (RFC 2047 §6.2),
        # so the prefix's own trailing space goes inside its encoded word.
        pre = mime.encode_words(prefix).encode("ascii") + b" "
    elif trailing:
        pre = mime.encode_words(prefix.rstrip()).encode("ascii") + trailing.encode("ascii")
    elif exact:
        return _put(msg, field, prefix + text, "prefix added, Subject re-encoded", prefix)
    else:
        pre = mime.encode_words(prefix).encode("ascii") + b" "
    first_line = len(name) + 2 + len(pre) + len(value.split(b"\n", 1)[0].rstrip(b"\r"))
    if first_line > 78 and pre.endswith(b" ") and not pre.endswith(b"  "):
        pre = pre[:-1] + msg.eol + b" "             # fold after the prefix (RFC 5322 §2.2.3)
    new = HeaderField(name + b": " + pre + value, field.name)
    return _replace_first(msg, field, new), f"prefix {prefix!r} added"
