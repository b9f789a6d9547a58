"""Read a bounce: which recipients failed, what the receiver said, and what was returned.

Two readers, both well kept code rather than hand parsing:

* RFC 3464 delivery status notifications (in an RFC 6522 ``multipart/report``): the
  ``email`` package parses ``message/delivery-status`` into its header blocks, one per
  recipient, with ``Action``, ``Status``, ``Remote-MTA`` and ``Diagnostic-Code``.
* Everything else (Exim's and qmail's text bounces, old Exchange, Yahoo, GroupWise
  ...): flufl.bounce's detectors find the failed addresses (``all_failures``: the
  temporary and the permanent ones).  These formats carry no machine-readable status,
  so the status and the receiver's text are taken from the paragraph of the
  human-readable part that names the address.

The returned message's header (``returned``) ties the bounce to the post.

Total: ``parse`` never raises.  It reads at most ``MAX_INPUT`` bytes (the report and
the returned header come first; a 10 MiB returned body is not read), and whatever
cannot be read is said in ``Report.problems``.  Its only broad ``except`` clauses are
around the ``email`` package and flufl.bounce, which raise on some hostile input
(flufl.bounce 6.0.0: ``IndexError`` in the Yale detector for a message without a
From field, ``AttributeError`` in the Sina detector for an 8-bit one; the From and
X-Mailer fields the detectors read are therefore made ASCII before they run).
"""

from __future__ import annotations

import email
import email.message
import email.parser
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from flufl.bounce import all_failures

from relist.core.bounce.classify import enhanced_codes
from relist.core.bounce.returned import ReturnedHeaders, from_fields, quoted
from relist.core.message import RawMessage, clean_text

__all__ = ["MAX_INPUT", "FailedRecipient", "Report", "parse"]

MAX_INPUT = 512 * 1024  # Postfix returns 50 kB of a message (bounce_size_limit), Exim 100 kB
_MAX_DIAGNOSTIC = 2000
_MAX_PARTS = 1000
_MAX_FLUFL_PARTS = 200  # a bounce has a handful of parts
# flufl.bounce's SimpleMatch detector tries ~25 patterns on every line, twice: on 1 MiB of
# empty lines that is 13 s.  The text it looks for opens a bounce, so it reads the start.
_FLUFL_INPUT = 32 * 1024
_STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")
_RETURNED_TYPES = ("message/rfc822", "message/global")
_HEADER_TYPES = ("text/rfc822-headers", "message/rfc822-headers", "message/global-headers",
                 "text/rfc822-header")
_REPLY_AT = re.compile(r"(?<![\w.-])[245]\d\d(?:[ -]|: )")
_PARAGRAPHS = re.compile(r"\n[ \t]*\n")
_TAGS = re.compile(r"<[^<>]*>")
_ADDRESS = re.compile(r"[^\s<>()\[\],;:=\"']{1,64}@[^\s<>()\[\],;:=\"']{1,255}")


@dataclass(frozen=True, slots=True)
class FailedRecipient:
    """One recipient the bounce reports as failed (or delayed).

    ``status`` is the enhanced status code ("" when the bounce gives none),
    ``action`` the DSN action (``failed``, ``delayed``; for other formats what
    flufl.bounce concluded), ``diagnostic`` the receiver's text (the DSN's
    Diagnostic-Code, else the paragraph of the human-readable part about this
    recipient), ``remote_mta`` the host that refused, when known.
    """

    recipient: str
    status: str
    action: str
    diagnostic: str
    remote_mta: str
    permanent: bool


@dataclass(frozen=True, slots=True)
class Report:
    """What one bounce says.  ``format`` is ``"dsn"``, ``"flufl.bounce"`` or "" (no
    failed recipient found)."""

    recipients: tuple[FailedRecipient, ...] = ()
    returned: ReturnedHeaders = field(default_factory=ReturnedHeaders)
    format: str = ""
    problems: tuple[str, ...] = ()


# -- small helpers ------------------------------------------------------------------

def _text(value: str) -> str:
    """A header value or payload decoded with surrogateescape, as clean UTF-8 text."""
    value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return clean_text(" ".join(value.split()))[0]


def _fields(msg: email.message.Message) -> list[tuple[str, str]]:
    """(lower-case name, clean unfolded value) of every field, never a ``Header``."""
    return [(str(name).strip().lower(), _text(str(value))) for name, value in msg.raw_items()]


def _first(fields: list[tuple[str, str]], name: str) -> str:
    return next((v for n, v in fields if n == name), "")


def _typed(value: str) -> str:
    """``rfc822; user@example.org`` -> ``user@example.org`` (RFC 3464 typed fields)."""
    return value.partition(";")[2].strip() if ";" in value else value.strip()


def _decoded(part: email.message.Message) -> bytes:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload
    raw = part.get_payload()
    return raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else b""


def _as_text(data: bytes, charset: str | None) -> str:
    try:
        return data.decode(charset or "utf-8", "replace")
    except (LookupError, ValueError):
        return data.decode("utf-8", "replace")


def _parts(msg: email.message.Message) -> Iterator[email.message.Message]:
    """The parts of the report, without descending into attached messages or the
    DSN's own header blocks."""
    stack, seen = [msg], 0
    while stack and seen < _MAX_PARTS:
        part = stack.pop()
        seen += 1
        yield part
        if part.is_multipart() and part.get_content_type().startswith("multipart/"):
            stack.extend(reversed([p for p in part.get_payload() if isinstance(p, email.message.Message)]))


# -- the human-readable text ---------------------------------------------------------

def _human(msg: email.message.Message | None, raw_body: bytes) -> bytes:
    """The human-readable text of the bounce (text/plain parts, else text/html without
    its tags), as bytes; the whole body of a message that is not MIME."""
    if msg is None:
        return raw_body
    plain, html = [], []
    for part in _parts(msg):
        ctype = part.get_content_type()
        if ctype == "text/plain":
            plain.append(_decoded(part))
        elif ctype == "text/html":
            html.append(_TAGS.sub(" ", _decoded(part).decode("utf-8", "replace")).encode("utf-8"))
    return b"\n\n".join(plain or html)


def _by_address(human: str) -> dict[str, str]:
    """Each address named in ``human`` (lower case) -> the paragraph about it: the
    first that names it with an SMTP reply in it, else the first that names it.  One
    pass, so that a report with thousands of recipients costs its length, no more."""
    found: dict[str, tuple[str, bool]] = {}
    for paragraph in _PARAGRAPHS.split(human.replace("\r\n", "\n")):
        replied = _REPLY_AT.search(paragraph) is not None
        for word in paragraph.split():
            if "@" not in word:
                continue
            for m in _ADDRESS.finditer(word):
                address = m.group().strip(".").lower()
                if address not in found or (replied and not found[address][1]):
                    found[address] = (paragraph, replied)
    return {address: paragraph for address, (paragraph, _) in found.items()}


def _about(paragraphs: dict[str, str], address: str) -> tuple[str, str]:
    """(status, diagnostic) for ``address`` from its paragraph (``_by_address``); the
    diagnostic starts at the SMTP reply code when there is one."""
    paragraph = paragraphs.get(address.lower(), "")
    reply = _REPLY_AT.search(paragraph)
    diagnostic = _text(paragraph[reply.start():] if reply else paragraph)[:_MAX_DIAGNOSTIC]
    codes = enhanced_codes(diagnostic)
    return (codes[0] if codes else ""), diagnostic


# -- RFC 3464 -----------------------------------------------------------------------

def _blocks(part: email.message.Message) -> list[list[tuple[str, str]]]:
    """The header blocks of a delivery-status part as field lists."""
    payload = part.get_payload()
    if part.get_content_type() == "message/delivery-status" and isinstance(payload, list):
        return [_fields(b) for b in payload if isinstance(b, email.message.Message)]
    # Parsed as one message (RFC 6533 message/global-delivery-status: the email package
    # takes the first block for a header and the others for a body) or not at all.
    if isinstance(payload, list) and payload and isinstance(payload[0], email.message.Message):
        first = payload[0]
        body = first.get_payload()
        text = "".join(f"{n}: {v}\n" for n, v in first.raw_items()) + "\n" + (body if isinstance(body, str)
                                                                                else "")
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    else:
        text = _as_text(_decoded(part), "utf-8")
    parser = email.parser.HeaderParser()
    return [_fields(parser.parsestr(block.strip() + "\n"))
            for block in _PARAGRAPHS.split(text.replace("\r\n", "\n")) if block.strip()]


def _dsn(msg: email.message.Message, human: dict[str, str]) -> list[FailedRecipient]:
    out: list[FailedRecipient] = []
    for part in _parts(msg):
        if part.get_content_type() not in _STATUS_TYPES:
            continue
        for block in _blocks(part):
            recipient = _typed(_first(block, "original-recipient") or _first(block, "final-recipient"))
            recipient = recipient.strip("<> ")
            if not recipient:
                continue
            action = _first(block, "action").lower().split(" ")[0].split("(")[0]
            codes = enhanced_codes(_first(block, "status"))
            status = codes[0] if codes else ""
            if action.startswith(("deliver", "relay", "expand")):
                continue
            if not action:
                action = "delayed" if status.startswith("4") else "failed"
            diagnostic = _typed(_first(block, "diagnostic-code"))[:_MAX_DIAGNOSTIC]
            if not diagnostic:
                found, diagnostic = _about(human, recipient)
                status = status or found
            permanent = not action.startswith("delay")
            out.append(FailedRecipient(recipient, status, action, diagnostic,
                                       _typed(_first(block, "remote-mta")), permanent))
    return out


# -- flufl.bounce -------------------------------------------------------------------

def _ascii(msg: email.message.Message, name: str, default: str) -> None:
    """Make field ``name`` an ASCII ``str``: flufl.bounce's detectors call ``.lower()``
    on it and index into what ``getaddresses`` finds in it."""
    raw = next((str(v) for n, v in msg.raw_items() if n.lower() == name.lower()), "")
    value = _text(raw).encode("ascii", "replace").decode("ascii")
    del msg[name]
    msg[name] = value if value.strip(" <>") else default


def _flufl(msg: email.message.Message, human: dict[str, str]) -> list[FailedRecipient]:
    if sum(1 for _ in itertools.islice(msg.walk(), _MAX_FLUFL_PARTS + 1)) > _MAX_FLUFL_PARTS:
        # Its detectors walk every part's lines, several of them: quadratic in effect.
        raise ValueError(f"more than {_MAX_FLUFL_PARTS} MIME parts, not a bounce it knows")
    # ``msg`` is parse's own parsed copy, read by nothing after this.
    _ascii(msg, "From", "MAILER-DAEMON")
    if msg.get_all("X-Mailer"):
        _ascii(msg, "X-Mailer", "unknown")
    temporary, permanent = all_failures(msg)
    out = []
    for address, is_permanent in sorted([(a, True) for a in permanent]
                                        + [(a, False) for a in temporary - permanent]):
        recipient = address.decode("ascii", "replace")
        status, diagnostic = _about(human, recipient)
        out.append(FailedRecipient(recipient, status, "failed" if is_permanent else "delayed", diagnostic,
                                   "", is_permanent))
    return out


# -- the returned header ------------------------------------------------------------

def _attached(msg: email.message.Message) -> ReturnedHeaders | None:
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in _RETURNED_TYPES:
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], email.message.Message):
                return from_fields(_fields(payload[0]), "message/rfc822")
            block = RawMessage.parse(_decoded(part))
            return from_fields([(f.name, f.text()) for f in block.fields if f.name], "message/rfc822")
        if ctype in _HEADER_TYPES:
            block = RawMessage.parse(_decoded(part).lstrip(b"\r\n"))
            return from_fields([(f.name, f.text()) for f in block.fields if f.name], "text/rfc822-headers")
    return None


# -- the whole ----------------------------------------------------------------------

def parse(raw: Any) -> Report:
    """What the bounce ``raw`` (bytes-like; anything else is a problem in the report)
    says (see the module doc).  Never raises."""
    problems: list[str] = []
    try:
        data = bytes(raw)
    except Exception as exc:  # noqa: BLE001 - not bytes-like (TypeError, or a buffer's own error)
        return Report(problems=(f"input is not bytes: {type(exc).__name__}",))
    if len(data) > MAX_INPUT:
        problems.append(f"read the first {MAX_INPUT} of {len(data)} bytes")
        data = data[:MAX_INPUT]
    msg: email.message.Message | None
    try:
        msg = email.message_from_bytes(data)
    except Exception as exc:  # noqa: BLE001 - the email package on hostile MIME (RecursionError...)
        problems.append(f"email package could not parse the message: {type(exc).__name__}: {exc}")
        msg = None
    else:
        defects = sorted({type(d).__name__ for p in _parts(msg) for d in p.defects})
        if defects:
            problems.append("MIME defects: " + ", ".join(defects))

    human_bytes = b""
    try:
        human_bytes = _human(msg, RawMessage.parse(data).body)
    except Exception as exc:  # noqa: BLE001 - the email package's payload decoding
        problems.append(f"could not read the human-readable part: {type(exc).__name__}: {exc}")

    returned = None
    try:
        returned = _attached(msg) if msg is not None else None
    except Exception as exc:  # noqa: BLE001 - the email package's walk and payloads
        problems.append(f"could not read the returned message: {type(exc).__name__}: {exc}")
    cut = len(human_bytes)
    if returned is None or not (returned.message_id or returned.relist_ids or returned.list_id):
        found = quoted(human_bytes)  # not attached (or attached empty): quoted in the text?
        if found is not None:
            cut, returned = found
    if returned is None:
        problems.append("no returned message header")
        returned = ReturnedHeaders()
    elif not returned.message_id:
        problems.append(f"the returned header ({returned.source}) has no Message-ID")
    human = _by_address(_as_text(human_bytes[:cut], "utf-8"))

    recipients: list[FailedRecipient] = []
    form = ""
    if msg is not None:
        try:
            recipients = _dsn(msg, human)
            form = "dsn" if recipients else ""
        except Exception as exc:  # noqa: BLE001 - the email package's header parsing
            problems.append(f"could not read the delivery status: {type(exc).__name__}: {exc}")
        if not recipients:
            try:
                short = email.message_from_bytes(data[:_FLUFL_INPUT]) if len(data) > _FLUFL_INPUT else msg
                recipients = _flufl(short, human)
                form = "flufl.bounce" if recipients else ""
            except Exception as exc:  # noqa: BLE001 - flufl.bounce re-raises its detectors' errors
                problems.append(f"flufl.bounce failed: {type(exc).__name__}: {exc}")
    if not recipients:
        problems.append("no failed recipient found")
    return Report(tuple(recipients), returned, form, tuple(problems))
