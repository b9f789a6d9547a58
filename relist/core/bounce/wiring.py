"""A bounce on the ingress leg: what it reports, per failed recipient, and what to do.

Pure: bytes and facts in, frozen values out.  The edge (``relist.app``) recognises the
envelope recipient, looks the bounced post up in the store (``Egress``: what relist
did to it) and records the ``Entry`` values; this module says what the bounce is
(``read``), where it goes (``action``) and, for ``auth_bounces = "owner"``, what the
list owner receives (``owner_notice``).

Entries: one per failed recipient the bounce names; when it names none (a bounce
flufl.bounce cannot read), one for the VERP member, else one for "" so that the
bounce is recorded anyway.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime, make_msgid

from relist.core.bounce.address import BounceAddress, recognise
from relist.core.bounce.classify import classify
from relist.core.bounce.dsn import Report, parse
from relist.core.bounce.rules import AUTHENTICATION, Cause

__all__ = ["ACTIONS", "Bounce", "Egress", "Entry", "action", "owner_address", "owner_notice", "read",
           "read_all"]

ACTIONS = ("mailman", "owner")
_EIGHT_BIT = re.compile(rb"[\x80-\xff]")


@dataclass(frozen=True, slots=True)
class Egress:
    """What the store knows of the post a bounce returns (the egress transaction)."""

    relist_id: str
    list_address: str | None = None
    steps: tuple[str, ...] = ()
    mode: str = ""
    poster_domain: str = ""
    dmarc_policy: str = ""


@dataclass(frozen=True, slots=True)
class Entry:
    """One failed recipient of a bounce, classified."""

    recipient: str
    cause: str
    permanent: bool
    status: str
    diagnostic: str
    remote_mta: str
    rule: str


@dataclass(frozen=True, slots=True)
class Bounce:
    """A bounce addressed to a list's bounce address."""

    where: BounceAddress
    report: Report
    entries: tuple[Entry, ...]

    @property
    def authentication(self) -> bool:
        """Every failed recipient failed for the sender's authentication."""
        return bool(self.entries) and all(e.cause in AUTHENTICATION for e in self.entries)


def read(raw: bytes, rcpt: str, list_addresses: Iterable[str]) -> Bounce | None:
    """The bounce ``raw`` is when ``rcpt`` is a list's bounce address, else None."""
    found = read_all(raw, (rcpt,), list_addresses)
    return found[0][1] if found else None


def read_all(raw: bytes, rcpts: Iterable[str], list_addresses: Iterable[str]) -> list[tuple[str, Bounce]]:
    """(recipient, bounce) for each of ``rcpts`` that is a list's bounce address; ``raw``
    is parsed once, and only when one is."""
    lists = tuple(list_addresses)
    wheres = [(rcpt, where) for rcpt in rcpts if (where := recognise(rcpt, lists)) is not None]
    if not wheres:
        return []
    report = parse(raw)
    return [(rcpt, _bounce(where, report)) for rcpt, where in wheres]


def _bounce(where: BounceAddress, report: Report) -> Bounce:
    entries = []
    for r in report.recipients:
        why = classify(r.status, r.diagnostic)
        entries.append(Entry(r.recipient or where.member or "", str(why.cause.value), why.permanent,
                             r.status, r.diagnostic, r.remote_mta, why.rule))
    if not entries:
        entries.append(Entry(where.member or "", Cause.OTHER.value, True, "", "", "", ""))
    return Bounce(where, report, tuple(entries))


def action(bounce: Bounce, auth_bounces: str) -> str:
    """``"owner"`` when the list wants authentication bounces and this is one."""
    return "owner" if auth_bounces == "owner" and bounce.authentication else "mailman"


def owner_address(list_address: str) -> str:
    name, _, domain = list_address.partition("@")
    return f"{name}-owner@{domain}"


def _did(egress: Egress | None) -> str:
    if egress is None:
        return ("relist has no record of the returned post (it is older than the store, or relist "
                "never relayed it).")
    what = f"relist relayed it as {egress.relist_id}"
    if egress.mode:
        what += f" in {egress.mode} mode"
    if egress.steps:
        what += f" (steps: {', '.join(egress.steps)})"
    return what + "."


def owner_notice(raw: bytes, bounce: Bounce, egress: Egress | None, *, now: datetime,
                 hostname: str) -> bytes:
    """The message for ``LIST-owner@``: a text/plain explanation on top, the bounce
    attached unchanged as message/rfc822."""
    list_address = bounce.where.list_address
    domain = (egress.poster_domain if egress and egress.poster_domain else bounce.report.returned.from_domain)
    policy = egress.dmarc_policy if egress else ""
    lines = [f"A post to {list_address} was refused for the poster's authentication, not for the "
             "member's mailbox.", ""]
    lines.append(f"Poster's domain: {domain or 'unknown'}" + (f" (DMARC p={policy})" if policy else ""))
    for e in bounce.entries:
        lines.append(f"Receiver: {e.remote_mta or 'unknown'} refused {e.recipient or 'a member'}: "
                     f"{e.cause} {e.status or ''}".rstrip())
        if e.diagnostic:
            lines.append(f"  said: {' '.join(e.diagnostic.split())[:500]}")
    lines.append(f"What relist did: {_did(egress)}")
    lines += ["", "relist delivered this bounce to you instead of Mailman (auth_bounces = \"owner\"),",
              "so it does not count against the member.  The bounce is attached unchanged.", ""]
    text = "\r\n".join(lines).encode("utf-8")
    boundary = "=_relist_bounce_" + make_msgid(domain=hostname)[1:-1].replace("@", "_").replace(".", "_")
    owner = owner_address(list_address)
    head = (f"From: relist <{owner}>\r\nTo: {owner}\r\n"
            f"Subject: Authentication bounce for {list_address}"
            f"{' (poster domain ' + domain + ')' if domain else ''}\r\n"
            f"Date: {format_datetime(now)}\r\nMessage-ID: {make_msgid(domain=hostname)}\r\n"
            f"Auto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n").encode("utf-8")
    return (head + f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: 8bit\r\n\r\n".encode() + text + b"\r\n"
            + f"--{boundary}\r\nContent-Type: message/rfc822\r\n"
              f"{'Content-Transfer-Encoding: 8bit' + chr(13) + chr(10) if _EIGHT_BIT.search(raw) else ''}"
              f"Content-Description: the bounce as it arrived\r\n\r\n".encode()
            + raw + (b"" if raw.endswith(b"\r\n") else b"\r\n") + f"--{boundary}--\r\n".encode())
