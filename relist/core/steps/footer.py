"""footer: append the list's footer, MIME-aware and byte-preserving.

What: the ``footer`` template (relist/core/templates.py) is added to every post:

* a single text/plain body gets the text appended in the part's own charset and
  transfer encoding (Mailman's handlers/decorate.py does the same); when the text
  cannot be written in that charset the part is switched to UTF-8 (Content-Type
  charset parameter), and a 7bit part that gains non-ASCII text becomes
  quoted-printable;
* multipart/mixed gets a text/plain part before the close delimiter; the existing
  parts and delimiters stay byte-identical;
* anything whose inside must not change (multipart/alternative, multipart/signed,
  multipart/related, application/pkcs7-mime, HTML, attachments, unknown types and
  charsets, broken base64) is wrapped: a new multipart/mixed whose first part is the
  original body with its original Content-* fields (bytes untouched, so a PGP/MIME
  or S/MIME signature still verifies) and whose second part is the footer.

Why this way: a footer is the change most likely to break the poster's DKIM body
hash, so relist makes exactly one well-defined change and records it.  A broken
multipart (no boundary, truncated) is left alone with the reason recorded: adding
to a structure we cannot read could only make it worse.  Idempotent: a footer that
already ends the text (or is already the last part) is not added again.
"""

from __future__ import annotations

from dataclasses import replace

from relist.core import mime
from relist.core.message import HeaderField, RawMessage
from relist.core.model import Context, Work
from relist.core.policy import ListPolicy
from relist.core.steps import apply_transform
from relist.core.templates import expand

__all__ = ["NAME", "apply", "transform"]

NAME = "footer"

_INLINE = {"7bit", "8bit", "binary"}
_LAST_PART_LIMIT = 256 * 1024   # a footer part bigger than this is not ours


def apply(work: Work, ctx: Context) -> Work:
    """See `relist.core.steps`."""
    return apply_transform(NAME, transform, work)


def transform(msg: RawMessage, lp: ListPolicy) -> tuple[RawMessage | None, str]:
    """The message with the footer added, or None and the reason nothing was done."""
    text = expand(lp.footer, lp).replace("\r\n", "\n")
    if not text.strip():
        return None, "no footer configured"
    if not text.endswith("\n"):
        text += "\n"
    info = mime.content_info(msg.fields)
    if isinstance(info, str):
        return None, f"footer skipped: {info}"
    if info.ctype.startswith("multipart/"):
        if not info.boundary:
            return None, f"footer skipped: {info.ctype} without a boundary parameter"
        layout = mime.scan_multipart(msg.body, info.boundary)
        if isinstance(layout, str):
            return None, f"footer skipped: {layout} in {info.ctype}"
        if info.ctype == "multipart/mixed" and info.cte in _INLINE:
            return _add_part(msg, layout, info.boundary, text)
        return _wrap(msg, info, text)
    if info.ctype == "text/plain" and info.wellformed and info.disposition != "attachment":
        return _append_text(msg, info, text)
    why = "attachment" if info.disposition == "attachment" else ""
    why = why or ("" if info.wellformed else "unreadable Content-Type")
    return _wrap(msg, info, text, why)


# -- single text/plain part --------------------------------------------------------

def _flowed(text: str) -> str:
    """Footer lines made safe for format=flowed (RFC 3676 §4.2, §4.4): no trailing
    space (except the "-- " signature separator) and space-stuffing."""
    out = []
    for line in text.split("\n"):
        if line != "-- ":
            line = line.rstrip(" ")
        if line.startswith((" ", ">", "From ")):
            line = " " + line
        out.append(line)
    return "\n".join(out)


def _line_ending(content: bytes, default: bytes) -> bytes:
    if b"\r\n" in content:
        return b"\r\n"
    return b"\n" if b"\n" in content else default


def _norm(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").rstrip()


def _ends_with(content: bytes, footer: bytes) -> bool:
    tail = content[-(2 * len(footer) + 64):]
    want = _norm(footer)
    return bool(want) and _norm(tail).endswith(want)


def _append_text(msg: RawMessage, info: mime.ContentInfo, text: str):
    cs, cte, eol = info.charset, info.cte, msg.eol
    try:
        if not mime.ascii_compatible(cs):
            return _wrap(msg, info, text, f"charset {cs} is not ASCII-compatible")
    except LookupError:
        return _wrap(msg, info, text, f"unknown charset {cs}")
    if cte not in _INLINE | {"quoted-printable", "base64"}:
        return _wrap(msg, info, text, f"unknown transfer encoding {cte}")
    if info.fmt == "flowed":
        text = _flowed(text)
    body = msg.body
    if cte == "base64":
        content = mime.b64_decode(body)
        if content is None:
            return _wrap(msg, info, text, "broken base64 in text/plain part")
    elif cte == "quoted-printable":
        content = mime.qp_decode(body)
    else:
        content = body
    try:
        add = text.encode(cs)
        new_cs = cs
    except UnicodeEncodeError:
        add, new_cs = text.encode("utf-8"), "utf-8"
    if _ends_with(content, add):
        return None, "footer already present"
    le = _line_ending(content, eol)
    add = add.replace(b"\n", le)
    sep = le if content and not content.endswith(b"\n") else b""
    changes = []
    if new_cs != cs:
        try:
            content = content.decode(cs).encode(new_cs)
        except UnicodeDecodeError:
            return _wrap(msg, info, text, f"text/plain part is not valid {cs}")
        changes.append(f"charset {cs} -> {new_cs}")
    new_cte = cte
    if cte in _INLINE:
        if new_cs == cs:
            new_body = b"".join((body, sep, add))      # original bytes kept as they are (one copy)
        else:
            new_body = b"".join((content, sep, add))
        if cte == "7bit" and not (add.isascii() and (new_cs == cs or new_body.isascii())):
            new_body, new_cte = mime.qp_encode(new_body, eol), "quoted-printable"
            changes.append("7bit -> quoted-printable")
    elif cte == "quoted-printable" and new_cs == cs:
        # Keep the encoded original and append the encoded footer (RFC 2045 §6.7).
        # Trailing white space before a hard line break is dropped by decoders
        # (rule 3), so protect it with a soft line break.
        lead = b"=" + eol if body[-1:] in (b" ", b"\t") else b""
        new_body = b"".join((body, lead, mime.qp_encode(sep + add, eol)))
    elif cte == "quoted-printable":
        new_body = mime.qp_encode(content + sep + add, eol)
    else:
        new_body = mime.b64_encode(content + sep + add, eol)
    # Lines appended with CRLF to a body known to have no bare LF: the new body has none.
    crlf = new_cte == cte and new_cs == cs and cte in _INLINE and le == b"\r\n" and msg.crlf_known()
    # The footer's lines after the body as it was: its DKIM hashes are carried on.
    out = msg.with_body(new_body, crlf=crlf, appended=len(add) if crlf and not sep else 0)
    if new_cs != cs:
        out = _set_field(out, "Content-Type", _charset_field(msg, new_cs, info))
    if new_cte != cte:
        out = _set_field(out, "Content-Transfer-Encoding", new_cte)
    if (new_cs != cs or new_cte != cte) and msg.get("mime-version") is None:
        out = _set_field(out, "MIME-Version", "1.0")
    detail = f"footer appended to text/plain ({new_cte}, {new_cs})"
    return out, detail + (f"; {', '.join(changes)}" if changes else "")


def _charset_field(msg: RawMessage, charset: str, info: mime.ContentInfo) -> bytes | str:
    """The Content-Type field with the new charset: the old field's bytes with only
    the parameter changed, or (no field, or one too irregular to edit) a new field."""
    field = msg.get("content-type")
    edited = None if field is None else mime.set_charset(field, charset, info.charset)
    if edited is not None:
        return edited
    params = "".join(f"; {k}={v}" for k, v in (("format", info.fmt), ("delsp", info.delsp))
                     if v in ("flowed", "fixed", "yes", "no"))
    return f'text/plain; charset="{charset}"{params}'



def _set_field(msg: RawMessage, name: str, value: bytes | str) -> RawMessage:
    """Replace the field in place (value may be a field's full bytes) or append it."""
    if isinstance(value, bytes) and value.lower().startswith(name.lower().encode() + b":"):
        field = HeaderField(value, name.lower())
    else:
        field = msg.make_field(name, value)
    return msg.replace_field(name, field)


# -- footer as its own part ----------------------------------------------------------

def footer_part(text: str, eol: bytes) -> bytes:
    """A complete text/plain entity (fields, empty line, body) carrying ``text``."""
    data = text.encode("utf-8")
    if data.isascii() and all(len(line) < 990 for line in data.split(b"\n")):
        fields = [b'Content-Type: text/plain; charset="us-ascii"', b"Content-Transfer-Encoding: 7bit"]
        body = data.replace(b"\n", eol)
    else:
        fields = [b'Content-Type: text/plain; charset="utf-8"',
                  b"Content-Transfer-Encoding: quoted-printable"]
        body = mime.qp_encode(data, eol)
    fields.append(b"Content-Disposition: inline")
    return b"".join(f + eol for f in fields) + eol + body


def _is_footer_part(part: bytes, text: str) -> bool:
    if len(part) > _LAST_PART_LIMIT:
        return False
    entity = RawMessage.parse(part)
    info = mime.content_info(entity.fields)
    if isinstance(info, str) or info.ctype != "text/plain":
        return False
    if info.cte == "base64":
        content = mime.b64_decode(entity.body) or b""
    elif info.cte == "quoted-printable":
        content = mime.qp_decode(entity.body)
    else:
        content = entity.body
    try:
        return _norm(content) == _norm(text.encode(info.charset))
    except (LookupError, UnicodeError, ValueError):
        return False


def _add_part(msg: RawMessage, layout: mime.Multipart, boundary: str, text: str):
    body, eol = msg.body, msg.eol
    start, end = layout.parts[-1]
    if _is_footer_part(body[start:end], text):
        return None, "footer part already present"
    insert = b"--" + boundary.encode("ascii") + eol + footer_part(text, eol) + eol
    view = memoryview(body)      # the parts around the insert are copied once, into the new body
    new_body = b"".join((view[:layout.close], insert, view[layout.close:]))
    return msg.with_body(new_body), "footer added as a text/plain part of multipart/mixed"


def _wrap(msg: RawMessage, info: mime.ContentInfo, text: str, why: str = ""):
    """Wrap the body and its Content-* fields in a new multipart/mixed (RFC 2046 §5.1.3)."""
    eol, body = msg.eol, msg.body
    inner = tuple(f for f in msg.fields if f.name.startswith("content-"))
    boundary = mime.new_boundary(body)
    ctype = msg.make_field("Content-Type", f'multipart/mixed; boundary="{boundary}"')
    new_fields: list[HeaderField] = [ctype]
    # RFC 2045 §6.4: a multipart's encoding is 7bit, 8bit or binary and must say
    # what its parts contain.
    if info.cte in ("8bit", "binary"):
        new_fields.append(msg.make_field("Content-Transfer-Encoding", info.cte))
    elif not body.isascii():
        new_fields.append(msg.make_field("Content-Transfer-Encoding", "8bit"))
    fields: list[HeaderField] = []
    placed = False
    for f in msg.fields:
        if f.name.startswith("content-"):
            if not placed:
                fields.extend(new_fields)
                placed = True
            continue
        fields.append(f)
    if not placed:
        if msg.get("mime-version") is None:
            fields.append(msg.make_field("MIME-Version", "1.0"))
        fields.extend(new_fields)
    elif msg.get("mime-version") is None:
        fields.append(msg.make_field("MIME-Version", "1.0"))
    dash = b"--" + boundary.encode("ascii")
    new_body = b"".join((      # one copy of the body (a chain of + would copy it at each step)
        dash + eol + b"".join(f.raw if f.raw.endswith(b"\n") else f.raw + eol for f in inner) + eol,
        body,
        eol + dash + eol + footer_part(text, eol) + eol + dash + b"--" + eol,
    ))
    out = replace(msg, fields=tuple(fields)).with_body(new_body)
    detail = f"footer: wrapped {info.ctype} in multipart/mixed"
    return out, detail + (f" ({why})" if why else "")
