"""Recognise, on the egress path, the post the ingress leg saw before Mailman.

Mailman changes posts even on an undecorated list (">From " escaping, a rewritten
Cc, refolded fields), so judging the poster's signature on what Mailman sends
misjudges good posts.  The ingress leg keeps a copy of every post as it arrived;
at egress relist looks up the copies with the same Message-ID and accepts one only
if it matches on content Mailman does not change:

1. the same *fingerprint*: Message-ID, the b= values of the DKIM-Signature fields,
   the From and Date fields (``fingerprint``);
2. the same body, allowing only Mailman's own changes: ">From " escaping and, on
   decorated lists, text added at the end (``body_matches``).

A forged Message-ID therefore cannot borrow another post's verdict: the forgery
has its own ingress copy, and a copy whose body differs does not match.  When two
copies match and are not byte-identical, relist does not choose: it verifies what
it received instead (``match`` returns no copy, with the reason).  When no copy
matches, the reason names the first difference from the newest copy, a header part
of the fingerprint or a body line (``first_difference``), for ``relist explain``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from relist.core.message import RawMessage

__all__ = ["IngressCopy", "body_matches", "fingerprint", "first_difference", "match"]

_WSP = re.compile(rb"[ \t\r\n]+")
_B_TAG = re.compile(rb"(?:^|;)\s*b\s*=\s*([^;]*)")
_ESCAPED_FROM = re.compile(rb"(?m)^>From ")
_CLOSE_BOUNDARY = re.compile(rb"\n--[^\r\n]*--[ \t]*$")


@dataclass(frozen=True, slots=True)
class IngressCopy:
    """A post as the ingress leg received it (from the store)."""

    relist_id: str
    raw: bytes


def _b_values(msg: RawMessage) -> list[bytes]:
    out = []
    for f in msg.get_all("dkim-signature"):
        m = _B_TAG.search(_WSP.sub(b"", f.value))
        out.append(m.group(1) if m else b"")
    return sorted(out)


def fingerprint(msg: RawMessage) -> str:
    """A digest of what Mailman leaves alone in the header (see module doc)."""
    h = hashlib.sha256()
    for part in ([(msg.header_text("message-id") or "").encode("utf-8", "surrogateescape")]
                 + _b_values(msg)
                 + [_WSP.sub(b" ", (msg.header_text(n) or "").encode("utf-8", "surrogateescape")).strip()
                    for n in ("from", "date")]):
        h.update(len(part).to_bytes(4, "big") + part)
    return h.hexdigest()


def _normalise(body: bytes) -> bytes:
    """Relaxed-like body form that undoes Mailman's ">From " escaping."""
    body = body.replace(b"\r\n", b"\n")
    body = _ESCAPED_FROM.sub(b"From ", body)
    lines = [_WSP.sub(b" ", line).rstrip() for line in body.split(b"\n")]
    while lines and not lines[-1]:
        lines.pop()
    return b"\n".join(lines)


def body_matches(ingress: RawMessage, egress: RawMessage) -> bool:
    """The egress body is the ingress body, up to Mailman's escaping and additions at
    the end (a footer; in a multipart, parts added before the closing boundary)."""
    original, sent = _normalise(ingress.body), _normalise(egress.body)
    if original == sent:
        return True
    head = _CLOSE_BOUNDARY.sub(b"", original) if original.rstrip().endswith(b"--") else original
    return bool(head) and sent.startswith(head)


def _shown(line: bytes, limit: int = 60) -> str:
    """A body line for a note: decoded, unprintable characters as "?", cut short."""
    text = line.decode("utf-8", "replace")
    out = "".join(ch if ch.isprintable() else "?" for ch in text[:limit])
    return repr(out + ("..." if len(text) > limit else ""))


def first_difference(ingress: RawMessage, egress: RawMessage) -> str:
    """Where ``egress`` first differs from ``ingress`` in what ``match`` compares: a
    fingerprint part (Message-ID, DKIM-Signature b=, From, Date), else the first body
    line that Mailman's escaping and additions at the end do not explain; "" when
    they match."""
    if (ingress.header_text("message-id") or "") != (egress.header_text("message-id") or ""):
        return "header field Message-ID differs"
    for name in ("from", "date"):
        a, b = (_WSP.sub(b" ", (m.header_text(name) or "").encode("utf-8", "surrogateescape")).strip()
                for m in (ingress, egress))
        if a != b:
            return f"header field {name.title()} differs"
    if _b_values(ingress) != _b_values(egress):
        return "DKIM-Signature b= values differ (a signature added, removed or changed)"
    if body_matches(ingress, egress):
        return ""
    original, sent = _normalise(ingress.body).split(b"\n"), _normalise(egress.body).split(b"\n")
    for i, (a, b) in enumerate(zip(original, sent)):
        if a != b:
            return f"body line {i + 1}: ingress {_shown(a)}, egress {_shown(b)}"
    if len(sent) < len(original):
        return f"body line {len(sent) + 1}: the egress body ends here ({len(original)} lines at ingress)"
    return f"body line {len(original) + 1}: egress has more lines that are not a footer"


def match(egress: RawMessage, candidates: tuple[IngressCopy, ...]) -> tuple[IngressCopy | None, str]:
    """The ingress copy of ``egress``, if exactly one kind of copy matches."""
    if not candidates:
        return None, "no ingress copy with this Message-ID"
    fp = fingerprint(egress)
    found: list[IngressCopy] = []
    for copy in candidates:
        msg = RawMessage.parse(copy.raw)
        if fingerprint(msg) == fp and body_matches(msg, egress):
            found.append(copy)
    if not found:
        newest = candidates[0]   # the store lists them newest first
        diff = first_difference(RawMessage.parse(newest.raw), egress)
        return None, (f"{len(candidates)} ingress cop{'y' if len(candidates) == 1 else 'ies'} with this "
                      f"Message-ID, none matching in content; first difference from "
                      f"{newest.relist_id}: {diff}")
    if len({c.raw for c in found}) > 1:
        return None, f"{len(found)} different ingress copies match: not choosing, verifying what arrived"
    return found[0], f"ingress copy {found[0].relist_id}"
