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

Hostile header lines: what is signed is ``RawMessage.signable()``, the message as
every DKIM verifier reads it alike (an mbox ``From `` line dropped, white space
before a colon removed, the missing empty line before the body written; the note
says which).  A header line that is not a field cannot be selected by h=, but
leaving it would make dkimpy refuse the whole message and Postfix end the header
there after relist signed; ``RawMessage.parse`` already reads the header as Postfix
does.

When the message still cannot be signed (a ``SignError`` on these bytes, a signing
domain that is no domain name, or a bug: ``on_error``, called by the safety net,
relist.core.safety), the same bytes fail the same way on every retry, so it is
never a 4xx.  The post is relayed without the list's signature while its From is the
poster's: it is then what Mailman sent, no worse.  When From is in the list's
signing domain (DMARC mitigation rewrote it, or it was already: Mailman's notices, a
Mailman that munged From itself), only the list's signature can make that From pass
DMARC, and relist does not send mail under the list's name that it cannot sign: the
post is refused with ``554 5.6.0`` naming the cause, so that Mailman bounces it
instead of retrying it for days.
"""

from __future__ import annotations


from relist.core.dkim.tags import valid_domain
from relist.core.errors import RejectMessage
from relist.core.message import HeaderField
from relist.core.model import Action, Context, Work
from relist.core.safety import describe, internal_error, printable
from relist.core.sign import SignError, oversigned, prepare, sign_dkim
from relist.core.sign.signature import pass_on
from relist.core.sign.step_support import as_field, header_names, key_for, signable, signing_domain

__all__ = ["NAME", "apply", "from_rewritten", "on_error"]

NAME = "sign"

def from_rewritten(work: Work) -> bool:
    """DMARC mitigation rewrote From (munged or wrapped) into the list's domain."""
    return any(n.step == "dmarc-mitigation" and n.action == Action.APPLIED for n in work.notes)


def from_needs_list_signature(work: Work) -> bool:
    """Only the list's signature can carry DMARC for this From: mitigation rewrote it,
    or it is in the list's signing domain already (Mailman's notices, a Mailman that
    munged From itself)."""
    if from_rewritten(work):
        return True
    lp, verdict = work.known.list_policy, work.known.verdict
    domain = verdict.dmarc.domain if verdict is not None else ""
    return bool(lp and domain and lp.aligned_with(domain))


def on_error(work: Work, ctx: Context, exc: Exception) -> Work:
    """This step failing on these bytes (module doc): relayed unsigned while From is
    the poster's, else refused for good (554 5.6.0).  The safety net calls it."""
    what = printable(str(exc) if isinstance(exc, SignError) else describe(exc), 300)
    if from_needs_list_signature(work):
        raise RejectMessage(f"relist: cannot sign this message as the list ({what}); its From "
                            "is in the list's domain, which fails DMARC unsigned", 554, "5.6.0")
    if isinstance(exc, SignError):
        return work.note(NAME, Action.SKIPPED, f"cannot sign: {what}; relayed without the list's "
                                               "signature (From is the poster's)")
    return internal_error(NAME, work, exc, "relayed without the list's signature (From is the poster's)")


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
    if valid_domain(domain) != domain:
        return on_error(work, ctx, SignError(f"the signing domain {domain!r} is not a domain name"))
    msg, tidied = signable(work)
    fields: list[HeaderField] = []
    done: list[str] = []
    canonical: list[bytes | None] = []   # sign_dkim's relaxed fields, for pass_on
    try:
        data = prepare(msg)   # parsed once, body hashed once, for every signature
        h = oversigned(header_names(lp), data)
        for selector, path, alg in wanted:
            key = key_for(ctx, path, f"{alg} selector {selector} for {lp.address}")
            raw = sign_dkim(data, domain=domain, selector=selector, key=key, now=ctx.now,
                            canonicalization=lp.canonicalization, headers=h,
                            ttl=lp.signature_ttl, identity=lp.signing_identity or None,
                            copy_headers=lp.copy_headers, canonical=canonical)
            fields.append(as_field(msg, raw, "dkim-signature"))
            done.append(f"{key.algorithm} d={domain} s={selector}")
    except SignError as exc:
        return on_error(work, ctx, exc)
    detail = f"{', '.join(done)}; h={b':'.join(h).decode()}{tidied}"
    signed = msg.prepend(*fields)
    # arc-seal's prepare() takes this step's work (and body hash) from the handoff.
    handoff = pass_on(data, signed, len(fields), canonical) if lp.arc_seal and lp.private_key else None
    return work.note(NAME, Action.APPLIED, detail, message=signed, known=work.learn(handoff=handoff))
