"""downgrade: re-encode 8-bit body parts as 7-bit before signing (RFC 6152 §3).

What: when ``downgrade_8bit`` is set or the upstream MTA does not offer 8BITMIME
(``ctx.upstream_8bitmime``), every leaf body part whose Content-Transfer-Encoding is
8bit or binary, or that has 8-bit bytes and no encoding, is re-encoded: text/* as
quoted-printable (RFC 2045 §6.7), anything else as base64 (§6.8).  Only those parts'
bytes and their Content-Transfer-Encoding fields change (and an enclosing multipart's
or message/rfc822's "8bit" label, which becomes "7bit" once nothing inside is 8-bit);
every other byte, delimiter and part stays as it was.  Header fields with raw 8-bit
bytes cannot be downgraded here (that would be RFC 6532 -> RFC 2047, a rewrite): they
are left and recorded.

Why before signing: a later MTA that downgrades would break relist's body hash; done
here, the signature covers the 7-bit bytes that travel.  In preserve mode a configured
``downgrade_8bit`` is not applied (it would break the poster's body hash) unless the
upstream MTA lacks 8BITMIME: then the transport rule wins (RFC 6152 §3), and the
guard/attribution steps record the broken signature.  The step always records
``needs_8bitmime`` (any 8-bit byte left) in ``known.extra`` so the edge knows whether
the content needs BODY=8BITMIME.
"""

from __future__ import annotations

from dataclasses import replace

from relist.core import mime
from relist.core.message import HeaderField, RawMessage
from relist.core.model import Action, Context, Work

__all__ = ["NAME", "apply", "downgrade"]

NAME = "downgrade"

_MAX_DEPTH = 20            # nested multiparts deeper than this are left alone


def _set_cte(msg: RawMessage, value: str) -> RawMessage:
    field = msg.make_field("Content-Transfer-Encoding", value)
    if msg.get("content-transfer-encoding") is not None:
        return msg.replace_field("Content-Transfer-Encoding", field)
    return msg.append(field)


def _entity(msg: RawMessage, path: str, depth: int, log: list[str]) -> RawMessage:
    """``msg`` (a message or a body part) with its 8-bit leaves re-encoded."""
    info = mime.content_info(msg.fields)
    if isinstance(info, str):
        if not msg.body.isascii():
            log.append(f"part {path}: left as is ({info})")
        return msg
    if info.ctype.startswith("multipart/") and info.boundary and depth < _MAX_DEPTH:
        new = _multipart(msg, info.boundary, path, depth, log)
    elif info.ctype == "message/rfc822" and depth < _MAX_DEPTH:
        inner = _entity(RawMessage.parse(msg.body), f"{path}.msg", depth + 1, log)
        new = msg if inner.to_bytes() == msg.body else replace(msg, body=inner.to_bytes())
    else:
        return _leaf(msg, info, path, log)
    if info.cte in ("8bit", "binary") and new.body.isascii() and new is not msg:
        new = _set_cte(new, "7bit")     # the container's label follows its content
    return new


def _multipart(msg: RawMessage, boundary: str, path: str, depth: int, log: list[str]) -> RawMessage:
    layout = mime.scan_multipart(msg.body, boundary)
    if isinstance(layout, str):
        if not msg.body.isascii():
            log.append(f"part {path}: left as is ({layout})")
        return msg
    body = msg.body
    out, last = [], 0
    changed = False
    for n, (start, end) in enumerate(layout.parts, 1):
        part = RawMessage.parse(body[start:end])
        new = _entity(part, f"{path}.{n}" if path else str(n), depth + 1, log)
        out.append(body[last:start])
        if new is part:
            out.append(body[start:end])
        else:
            out.append(new.to_bytes())
            changed = True
        last = end
    out.append(body[last:])
    if not changed:
        return msg
    return replace(msg, body=b"".join(out))


def _leaf(msg: RawMessage, info: mime.ContentInfo, path: str, log: list[str]) -> RawMessage:
    body = msg.body
    where = f"part {path or '1'} {info.ctype}"
    if info.cte in ("quoted-printable", "base64"):
        if not body.isascii():
            log.append(f"{where}: 8-bit bytes inside {info.cte} left as is")
        return msg
    if info.cte not in ("7bit", "8bit", "binary"):
        if not body.isascii():
            log.append(f"{where}: unknown encoding {info.cte} left as is")
        return msg
    if body.isascii():
        return msg      # 7-bit content: an "8bit" label on it is harmless, left alone
    if info.ctype.startswith("text/"):
        new_body, new_cte = mime.qp_encode(body, msg.eol), "quoted-printable"
    else:
        new_body, new_cte = mime.b64_encode(body, msg.eol), "base64"
    log.append(f"{where}: {info.cte} -> {new_cte} ({len(body)} -> {len(new_body)} bytes)")
    return _set_cte(replace(msg, body=new_body), new_cte)


def _eight_bit_headers(fields: tuple[HeaderField, ...]) -> list[str]:
    return [f.name or "?" for f in fields if not f.raw.isascii()]


def downgrade(msg: RawMessage) -> tuple[RawMessage, list[str]]:
    """The message with every 8-bit leaf re-encoded, and what was done."""
    log: list[str] = []
    new = _entity(msg, "", 0, log)
    if new is not msg and msg.get("mime-version") is None:
        new = new.append(new.make_field("MIME-Version", "1.0"))
    return new, log


def apply(work: Work, ctx: Context) -> Work:
    """See `relist.core.steps`."""
    lp = work.known.list_policy
    msg = work.message

    def done(action: Action, detail: str, message: RawMessage) -> Work:
        needs = not message.is_ascii()
        detail += f"; needs 8BITMIME: {'yes' if needs else 'no'}"
        known = work.known.found(needs_8bitmime=needs)
        return work.note(NAME, action, detail, message=message, known=known)

    if lp is None:
        return done(Action.SKIPPED, "no list", msg)
    upstream = getattr(ctx, "upstream_8bitmime", True)
    if not lp.downgrade_8bit and upstream:
        return done(Action.SKIPPED, "downgrade_8bit = false and the upstream MTA offers 8BITMIME", msg)
    mode = getattr(work.known, "mode_chosen", "") or lp.mode
    if mode == "preserve" and upstream:
        return done(Action.SKIPPED, "mode preserve: the poster's body hash is kept "
                    "(the upstream MTA offers 8BITMIME)", msg)
    why = "downgrade_8bit = true" if lp.downgrade_8bit else "the upstream MTA lacks 8BITMIME"
    if msg.is_ascii():
        return done(Action.SKIPPED, f"{why}; nothing 8-bit", msg)
    new, log = downgrade(msg)
    headers = _eight_bit_headers(new.fields)
    if headers:
        log.append(f"{len(headers)} header field(s) with raw 8-bit bytes left as they are "
                   f"({', '.join(sorted(set(headers)))[:120]})")
    detail = f"{why}; " + "; ".join(log)
    if new is msg:
        return done(Action.SKIPPED, detail, msg)
    return done(Action.APPLIED, detail, new)
