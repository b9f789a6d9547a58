"""identify: which list is this message from?

First the List-Id field (RFC 2919), matched against the configured lists; a List-Id
that matches no configured list is the list the envelope sender belongs to when that
list's List-Id is this one, else it is read the way Mailman writes it (``name.domain``
for ``name@domain``).  Without a List-Id, the list of the envelope sender when it is
one of a list's addresses in Mailman's forms (below).  The list's policy is the
list's own section over ``[list_defaults]``; a list with no section gets the defaults.

relist signs as a list only what that list's Mailman sends: the envelope sender must
be one of the list's addresses in the forms Mailman uses, ``<list>-bounces@<domain>``
(every post and notice in fixtures/mailman), ``<list>-bounces+<anything>@<domain>``
(VERP, ``+member=domain``, and bounce probes, ``+token``), ``<list>-owner@<domain>``
and ``<list>-request@<domain>``, or match one of the list's ``envelope_senders``
(exact addresses, ``*`` for any run of characters; case-insensitive).  Anything else
(a local user's mail carrying some list's List-Id, or one list's List-Id sent from
another list's address) is not list mail: it follows ``unknown_list`` like mail with
no list, and the note (or the reply) says why.

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

import functools
import re

from relist.core.addresses import mailboxes
from relist.core.errors import DeferMessage, RejectMessage
from relist.core.model import Action, Context, Work
from relist.core.policy import ListPolicy, list_id_for

__all__ = ["NAME", "SENDER_FORMS", "apply", "list_id_value", "notice_role", "sender_allowed", "sender_list"]

NAME = "identify"

_ANGLE = re.compile(r"<([^<>]+)>")
_POST_MARKERS = ("x-mailfrom", "message-id-hash", "x-message-id-hash")
_ROLES = ("bounces", "confirm", "join", "leave", "owner", "request", "subscribe", "unsubscribe")
# The envelope senders Mailman uses for a list's mail: <list>-bounces (every post and
# notice), <list>-bounces+<anything> (VERP and bounce probes), <list>-owner, <list>-request.
_MAILMAN_SENDER = re.compile(r"^(?P<list>.+)-(?P<role>bounces(?:\+[^@]*)?|owner|request)@(?P<domain>[^@]+)$",
                             re.IGNORECASE)
SENDER_FORMS = "{name}-bounces[+...]@{domain}, {name}-owner@{domain}, {name}-request@{domain}"


def list_id_value(text: str) -> str | None:
    """The list-id proper from a List-Id field value (RFC 2919 §3: ``phrase <id>``)."""
    m = _ANGLE.search(text)
    value = (m.group(1) if m else text).strip().lower()
    return value or None


def sender_list(mail_from: str) -> str | None:
    """The list address whose Mailman form ``mail_from`` is (``dev-bounces+x=y@d`` ->
    ``dev@d``), else None."""
    m = _MAILMAN_SENDER.match(mail_from or "")
    return f"{m.group('list')}@{m.group('domain')}".lower() if m else None


def sender_allowed(mail_from: str, lp: ListPolicy) -> bool:
    """True when ``mail_from`` may send as the list ``lp``: one of its addresses in
    Mailman's forms, or a match of one of its ``envelope_senders``."""
    sender = (mail_from or "").lower()
    if sender_list(sender) == lp.address:
        return True
    return any(_pattern(p).fullmatch(sender) for p in lp.envelope_senders)


@functools.lru_cache(maxsize=256)
def _pattern(pattern: str) -> re.Pattern:
    """An ``envelope_senders`` entry as a regex: ``*`` is any run of characters."""
    return re.compile(".*".join(re.escape(part) for part in pattern.lower().split("*")), re.DOTALL)


def _not_list_mail(work: Work, policy, detail: str, reply: str) -> Work:
    """``unknown_list``: pass (note why), defer or reject (the reply says why)."""
    if policy.unknown_list == "defer":
        raise DeferMessage(f"relist: {reply} (unknown_list = defer)", 451, "4.7.0")
    if policy.unknown_list == "reject":
        raise RejectMessage(f"relist: {reply}; this relay accepts list mail only", 550, "5.7.1")
    return work.note(NAME, Action.SKIPPED, detail + "; passed unchanged (unknown_list = pass)")


def apply(work: Work, ctx: Context) -> Work:
    """See `relist.core.steps`."""
    policy = ctx.policy
    mail_from = ctx.envelope.mail_from or ""
    from_sender = sender_list(mail_from)
    address = None
    source = ""
    list_id_text = work.message.header_text("list-id")
    if list_id_text:
        lid = list_id_value(list_id_text)
        if lid:
            configured = policy.list_for_id(lid)
            if configured is not None:
                address = configured.address
            elif from_sender is not None and list_id_for(from_sender) == lid:
                address = from_sender          # a list name with a dot: "a.b@d" is "a.b.d"
            elif "." in lid:
                name, _, domain = lid.partition(".")
                address = f"{name}@{domain}"
            source = "list-id" if address else ""
    if address is None and from_sender is not None:
        address = from_sender
        source = "envelope"
    if address is None:
        return _not_list_mail(
            work, policy, "no list: no List-Id and the envelope sender is not one of a list's addresses",
            "no List-Id and the envelope sender is not one of a list's addresses")
    lp = policy.list_for_address(address)
    if not sender_allowed(mail_from, lp):
        forms = SENDER_FORMS.format(name=lp.name, domain=lp.domain)
        return _not_list_mail(
            work, policy,
            f"not list mail: List-Id names {address}, but the envelope sender <{mail_from}> is not one "
            f"of its addresses ({forms}{', or envelope_senders' if lp.envelope_senders else ''})",
            "the envelope sender is not an address of the list named in List-Id")
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
    addresses = mailboxes(from_text)
    if len(addresses) != 1:
        return ""
    local, _, domain = addresses[0][1].lower().rpartition("@")
    if domain != list_domain or not local.startswith(name + "-"):
        return ""
    role = local[len(name) + 1:].partition("+")[0]
    return role if role in _ROLES else ""
