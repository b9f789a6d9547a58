"""What the two signing steps (``sign`` and ``arc-seal``) share: the signing domain,
the h= names, the loaded key for a configured path, the bytes to sign and the new
field in the message's own line ending.  Here, not in one of the steps, so that
neither step imports the other."""

from __future__ import annotations

import functools

from relist.core.errors import DeferMessage
from relist.core.message import HeaderField, RawMessage
from relist.core.model import Context, Work
from relist.core.policy import ListPolicy
from relist.core.sign.dkim_signer import DEFAULT_SIGN_HEADERS

__all__ = ["ALWAYS", "as_field", "header_names", "key_for", "signable", "signing_domain"]

ALWAYS = ("from", "x-original-from")   # From is required (RFC 6376 §5.4); see module doc


def signing_domain(lp: ListPolicy) -> str:
    """d= for the list's signatures (``ListPolicy.dkim_domain``)."""
    return lp.dkim_domain


def header_names(lp: ListPolicy) -> tuple[str, ...]:
    """The h= names before oversigning: the configured list, plus From and X-Original-From."""
    return _header_names(tuple(lp.sign_headers))


@functools.lru_cache(maxsize=256)
def _header_names(sign_headers: tuple[str, ...]) -> tuple[str, ...]:
    names = tuple(n.strip().lower() for n in sign_headers) or DEFAULT_SIGN_HEADERS
    return names + tuple(n for n in ALWAYS if n not in names)


def key_for(ctx: Context, path: str, what: str):
    """The loaded key for ``path``; DeferMessage when it is not there (see module doc)."""
    key = (ctx.keys or {}).get(path) if path else None
    if key is None:
        raise DeferMessage(f"relist: signing key not loaded ({what}); try again later")
    return key


def signable(work: Work) -> tuple[RawMessage, str]:
    """The message to sign (``RawMessage.signable``) and what the note adds about it."""
    msg, changes = work.message.signable()
    return msg, ("; signed as every verifier reads it: " + "; ".join(changes))[:600] if changes else ""


def as_field(msg: RawMessage, raw: bytes, name: str) -> HeaderField:
    """A CRLF-built field in the message's own line ending."""
    if msg.eol != b"\r\n":
        raw = raw.replace(b"\r\n", msg.eol)
    return HeaderField(raw, name)
