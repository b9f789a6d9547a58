"""identify: which list is this message from?

First the List-Id field (RFC 2919), matched against the configured lists; a List-Id
that matches no configured list is read the way Mailman writes it
(``name.domain`` for ``name@domain``).  Without a List-Id, the envelope sender that
Mailman uses for list mail and its own notices: ``<list>-bounces@<domain>`` or, with
VERP, ``<list>-bounces+<member>@<domain>``.  The list's policy is the list's own
section over ``[list_defaults]``; a list with no section gets the defaults.

Mailman's own notices (welcome, goodbye, confirmations, owner and request replies)
belong to the list too, but they are not posts: their From is one of the list's
role addresses (``<list>-request@``, ``-owner``, ``-confirm+<token>``, ``-bounces``,
``-join``, ``-leave``, ``-subscribe``, ``-unsubscribe``), or (owner notifications,
From the site owner) they carry X-Mailman-Version but none of the fields Mailman's
posting pipeline adds to every post (X-MailFrom, Message-ID-Hash, X-Message-ID-Hash;
fixtures/mailman: all 87 post transactions have them, no notice has).
``known.notice`` names the role ("mailman" for the second kind), and the list
transformations leave notices alone, as Mailman does (they are signed like posts).

A message that belongs to no list is handled by ``unknown_list``: "pass" relays it
unchanged (recorded), "defer" answers 4xx, "reject" answers 5xx.
"""

from __future__ import annotations

import re
from email.utils import getaddresses

from relist.core.errors import DeferMessage, RejectMessage
from relist.core.model import Action, Context, Work

NAME = "identify"

_ANGLE = re.compile(r"<([^<>]+)>")
_POST_MARKERS = ("x-mailfrom", "message-id-hash", "x-message-id-hash")
_ROLES = ("bounces", "confirm", "join", "leave", "owner", "request", "subscribe", "unsubscribe")
_BOUNCES = re.compile(r"^(?P<list>.+)-bounces(?:\+[^@]*)?@(?P<domain>[^@]+)$", re.IGNORECASE)


def list_id_value(text: str) -> str | None:
    """The list-id proper from a List-Id field value (RFC 2919 §3: ``phrase <id>``)."""
    m = _ANGLE.search(text)
    value = (m.group(1) if m else text).strip().lower()
    return value or None


def apply(work: Work, ctx: Context) -> Work:
    """See `relist.core.steps`."""
    policy = ctx.policy
    address = None
    source = ""
    list_id_text = work.message.header_text("list-id")
    if list_id_text:
        lid = list_id_value(list_id_text)
        if lid:
            configured = policy.list_for_id(lid)
            if configured is not None:
                address = configured.address
            elif "." in lid:
                name, _, domain = lid.partition(".")
                address = f"{name}@{domain}"
            source = "list-id" if address else ""
    if address is None:
        m = _BOUNCES.match(ctx.envelope.mail_from or "")
        if m:
            address = f"{m.group('list')}@{m.group('domain')}".lower()
            source = "envelope"
    if address is None:
        detail = "no List-Id and the envelope sender is not a list's bounce address"
        if policy.unknown_list == "defer":
            raise DeferMessage(f"relist: {detail} (unknown_list = defer)", 451, "4.7.0")
        if policy.unknown_list == "reject":
            raise RejectMessage(f"relist: {detail}; this relay accepts list mail only", 550, "5.7.1")
        return work.note(NAME, Action.SKIPPED, detail + "; passed unchanged (unknown_list = pass)")
    lp = policy.list_for_address(address)
    detail = f"{address} (from {source}{'' if lp.configured else ', list defaults'})"
    role = notice_role(work.message.header_text("from") or "", address)
    if role:
        detail += f"; a Mailman notice (From: the list's -{role} address)"
    elif work.message.get("x-mailman-version") is not None and not any(
            work.message.get(name) is not None for name in _POST_MARKERS):
        role = "mailman"
        detail += "; a Mailman notice (no X-MailFrom or Message-ID-Hash: not a post)"
    return work.note(NAME, Action.RECORDED, detail,
                     known=work.learn(list_address=address, list_source=source, list_policy=lp, notice=role))


def notice_role(from_text: str, list_address: str) -> str:
    """The role when From is one of the list's own role addresses, else ""."""
    name, _, list_domain = list_address.lower().rpartition("@")
    lowered = from_text.lower()
    if name + "-" not in lowered or list_domain not in lowered:
        return ""          # the common case (a post), without parsing the address
    addresses = getaddresses([from_text])
    if len(addresses) != 1:
        return ""
    local, _, domain = addresses[0][1].lower().rpartition("@")
    if domain != list_domain or not local.startswith(name + "-"):
        return ""
    role = local[len(name) + 1:].partition("+")[0]
    return role if role in _ROLES else ""
