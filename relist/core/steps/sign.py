"""sign: add the list's DKIM-Signature(s) over the final bytes (RFC 6376 §5).

What: one rsa-sha256 signature with ``selector``/``private_key`` and, when configured,
one ed25519-sha256 signature with ``ed25519_selector``/``ed25519_private_key``
(RFC 8463 §6: receivers that do not know Ed25519 use the RSA one).  Both are computed
over the same bytes and prepended together, RSA on top.  d= is ``signing_domain`` or
the list's domain; h= is ``sign_headers`` (or the default list) oversigned, plus
X-Original-From when present, so the fields DMARC mitigation wrote are covered.

Key rotation: while ``ctx.now`` is before ``rotation_overlap_until``, a second
rsa-sha256 signature with ``previous_selector``/``previous_private_key`` goes right
below the current RSA one, so a verifier whose resolver does not see the new record
yet (negative caching, a slow secondary) still has one that verifies; from that instant
on, only the current key signs.  The ARC seal always uses the current selector.

Why here: "sign late".  Every change to the message (transformations, DMARC
mitigation, downgrade) comes first; only Received and Authentication-Results, which
no signature covers, may be added later.  Signing does not depend on the mode: adding
the list's signature never breaks the poster's.

A list with a selector whose key was not loaded is a configuration bug that start-up
catches (``load_configured_keys``); should it still happen, the post is deferred (4xx)
so Mailman retries rather than mail going out unsigned.
"""

from __future__ import annotations

import functools

from relist.core.errors import DeferMessage
from relist.core.message import HeaderField, RawMessage
from relist.core.model import Action, Context, Work
from relist.core.policy import ListPolicy
from relist.core.sign import DEFAULT_SIGN_HEADERS, SignError, oversigned, prepare, sign_dkim
from relist.core.sign.signature import pass_on

__all__ = ["NAME", "apply", "header_names", "key_for", "signing_domain"]

NAME = "sign"

ALWAYS = ("from", "x-original-from")   # From is required (RFC 6376 §5.4); see module doc


def signing_domain(lp: ListPolicy) -> str:
    return (lp.signing_domain or lp.domain).lower().rstrip(".")


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


def as_field(msg: RawMessage, raw: bytes, name: str) -> HeaderField:
    """A CRLF-built field in the message's own line ending."""
    if msg.eol != b"\r\n":
        raw = raw.replace(b"\r\n", msg.eol)
    return HeaderField(raw, name)


def apply(work: Work, ctx: Context) -> Work:
    """See `relist.core.steps`."""
    lp = work.known.list_policy
    if lp is None:
        return work.note(NAME, Action.SKIPPED, "no list")
    if not lp.sign:
        return work.note(NAME, Action.SKIPPED, "sign = false: the list's mail is signed by another hop")
    wanted = [(sel, path, alg) for sel, path, alg in (
        (lp.selector, lp.private_key, "rsa"),
        (lp.previous_selector if lp.in_rotation_overlap(ctx.now) else "", lp.previous_private_key, "rsa"),
        (lp.ed25519_selector, lp.ed25519_private_key, "ed25519")) if sel]
    if not wanted:
        return work.note(NAME, Action.SKIPPED, "no selector configured: not signed")
    domain = signing_domain(lp)
    msg = work.message
    data = prepare(msg)   # parsed once, body hashed once, for every signature
    h = oversigned(header_names(lp), data)
    fields, done, canonical = [], [], []
    for selector, path, alg in wanted:
        key = key_for(ctx, path, f"{alg} selector {selector} for {lp.address}")
        try:
            raw = sign_dkim(data, domain=domain, selector=selector, key=key, now=ctx.now,
                            canonicalization=lp.canonicalization, headers=h,
                            ttl=lp.signature_ttl, identity=lp.signing_identity or None,
                            copy_headers=lp.copy_headers, canonical=canonical)
        except SignError as exc:
            return work.note(NAME, Action.SKIPPED, f"cannot sign: {exc}")
        fields.append(as_field(msg, raw, "dkim-signature"))
        done.append(f"{key.algorithm} d={domain} s={selector}")
    detail = f"{', '.join(done)}; h={b':'.join(h).decode()}"
    work = work.note(NAME, Action.APPLIED, detail, message=msg.prepend(*fields))
    if lp.arc_seal and lp.private_key:   # arc-seal's prepare() takes this one's work (and body hash)
        pass_on(data, work.message, len(fields), canonical)
    return work
