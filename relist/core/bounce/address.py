"""Is an envelope recipient one of a list's bounce addresses?

Mailman 3 sends list mail with the envelope sender ``LIST-bounces@DOMAIN``; with VERP
(``[mta] verp_personalized_deliveries``, ``verp_delivery_interval``) it is
``LIST-bounces+LOCAL=MEMBERDOMAIN@DOMAIN`` for member ``LOCAL@MEMBERDOMAIN``
(``[mta] verp_format: $bounces+$local=$domain``), and for its own notices and probes
``LIST-bounces+TOKEN@DOMAIN`` (a token without ``=``).  Every bounce for a list
therefore arrives on relist's ingress leg addressed to one of those, and this module
says which list, and which member or token, a recipient names.

Comparison: the domain case-insensitively (RFC 5321 §2.4), ``LIST-bounces`` too
(Mailman's list names are lower case and it looks lists up case-insensitively); the
member's local part keeps its case.  The member's address is split at the *last*
``=``: a domain has no ``=``, a local part may (Mailman's own ``verp_regexp`` splits
at the first and then gets such a member wrong).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["BounceAddress", "recognise"]

_BOUNCES = "-bounces"


@dataclass(frozen=True, slots=True)
class BounceAddress:
    """What a list's bounce address names.

    ``list_address`` is the list's posting address as the caller spelled it.
    ``member`` is the VERP-decoded member address (``None`` for the plain bounce
    address, a notice token or a malformed VERP extension), ``token`` Mailman's
    notice/probe token (``None`` unless the extension has no ``=``).
    """

    list_address: str
    member: str | None = None
    token: str | None = None


def _split(address: str) -> tuple[str, str] | None:
    local, at, domain = address.strip().strip("<>").strip().rpartition("@")
    if not at or not local or not domain:
        return None
    return local, domain.lower().rstrip(".")


def recognise(rcpt: str | None, list_addresses: Iterable[object]) -> BounceAddress | None:
    """The list bounce address ``rcpt`` is, or ``None`` when it is none of them.

    ``list_addresses`` are the lists' posting addresses (``plain@lists.example.org``);
    entries that are not addresses are ignored.
    """
    mine = _split(rcpt) if isinstance(rcpt, str) else None
    if mine is None:
        return None
    local, domain = mine
    folded = local.lower()
    for list_address in list_addresses:
        if not isinstance(list_address, str):
            continue
        theirs = _split(list_address)
        if theirs is None or theirs[1] != domain:
            continue
        bounces = theirs[0].lower() + _BOUNCES
        if folded == bounces:
            return BounceAddress(list_address)
        if not folded.startswith(bounces + "+"):
            continue
        extension = local[len(bounces) + 1:]
        if "=" not in extension:
            return BounceAddress(list_address, token=extension or None)
        member_local, _, member_domain = extension.rpartition("=")
        if member_local and member_domain and "@" not in extension:
            return BounceAddress(list_address, member=f"{member_local}@{member_domain.lower()}")
        return BounceAddress(list_address)
    return None
