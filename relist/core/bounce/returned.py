"""The returned message's header, as far as a bounce carries it.

A bounce is only useful to relist when it can be tied to the post it bounced: by the
post's Message-ID (the store's key for a post) and better by relist's own id, which
relist writes into the Received field it prepends (``steps/trace.py``)::

    Received: from HELO ([IP])
    \tby HOST (relist)
    \twith ESMTP id 2398LNTG69D3MXBC; DATE      (LMTP on the ingress leg)

The id is ``relist.edge.ids.new_relist_id()``: 16 characters of ``0-9`` and the
consonants ``BCDFGHJKLMNPQRSTVWXYZ``, or 12 for a post relist relayed before its ids
began with the time (a bounce can come back days later).  A post passes relist
twice (ingress leg before Mailman, egress leg after), so the returned header may hold
two such fields; the topmost is the latest hop, the egress transaction the bounce is
about (``relist_id``), and all of them are kept, top first (``relist_ids``).

Where the header comes from, best first: a ``message/rfc822`` (or RFC 6532
``message/global``) part, a ``text/rfc822-headers`` part (RFC 6522), or a header
block quoted in the text of a bounce that is not MIME (qmail, old Exim, Yahoo).
Values are returned as clean text (``message.clean_text``): an 8-bit byte that is not
UTF-8 becomes U+FFFD, a control character a space, so they can go into a log or the
store as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from relist.core.addresses import mailboxes
from relist.core.message import RawMessage, clean_text

__all__ = ["ReturnedHeaders", "from_fields", "quoted"]

# trace.py: f"by {hostname} (relist)", f"with ESMTP id {relist_id}" (LMTP on the ingress
# leg), folded with CRLF TAB.
_RELIST_RECEIVED = re.compile(
    r"\bby\s+\S+\s+\(relist\)\s+with\s+(?:E?SMTP|LMTP)S?A?\s+id\s+"
    r"([0-9BCDFGHJKLMNPQRSTVWXYZ]{12}(?:[0-9BCDFGHJKLMNPQRSTVWXYZ]{4})?)(?![0-9A-Za-z])")
_LIST_ID = re.compile(r"<([^<>]*)>")
# A line that may start a quoted header block: a field name and a colon.
_FIELD_START = re.compile(rb"(?im)^(?:return-path|received|dkim-signature|arc-seal|message-id|from|date|"
                          rb"subject|to|mime-version|list-id|authentication-results|x-[a-z0-9-]+)[ \t]*:")
_MAX_CANDIDATES = 50
_MAX_BLOCK = 256 * 1024  # a quoted header block longer than this is not one
_MAX_VALUE = 998  # RFC 5322 §2.1.1 line limit: more is not a value relist keeps


@dataclass(frozen=True, slots=True)
class ReturnedHeaders:
    """What the bounce says about the message it returns ("" where it says nothing).

    ``source`` says where the header was found: ``"message/rfc822"``,
    ``"text/rfc822-headers"``, ``"quoted text"``, or ``""`` for no returned header.
    """

    message_id: str = ""
    relist_id: str = ""
    relist_ids: tuple[str, ...] = ()
    from_domain: str = ""
    list_id: str = ""
    source: str = ""


def _clean(text: str) -> str:
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return clean_text(" ".join(text.split()))[0][:_MAX_VALUE]


def from_fields(fields: Iterable[tuple[str, str]], source: str) -> ReturnedHeaders:
    """``ReturnedHeaders`` from (name, unfolded value) pairs, in header order."""
    message_id = from_ = list_id = None
    ids: list[str] = []
    for name, value in fields:
        name = name.strip().lower()
        if name == "received":
            m = _RELIST_RECEIVED.search(" ".join(value.split()))
            if m:
                ids.append(m.group(1))
        elif name == "message-id" and message_id is None:
            message_id = _clean(value)
        elif name == "from" and from_ is None:
            from_ = _clean(value)
        elif name == "list-id" and list_id is None:
            m = _LIST_ID.search(value)
            list_id = _clean(m.group(1) if m else value)
    domain = ""
    for _, address in mailboxes(from_ or ""):
        domain = address.rpartition("@")[2].strip().lower().rstrip(".")
        if domain:
            break
    return ReturnedHeaders(message_id or "", ids[0] if ids else "", tuple(ids), domain, list_id or "",
                           source)


def _looks_returned(msg: RawMessage) -> bool:
    names = {f.name for f in msg.fields}
    return "message-id" in names or "list-id" in names or any(
        _RELIST_RECEIVED.search(" ".join(f.text().split())) for f in msg.get_all("received"))


def quoted(text: bytes) -> tuple[int, ReturnedHeaders] | None:
    """The first header block quoted in ``text`` that looks like a returned message's
    (it has a Message-ID, a List-Id or relist's Received field), and its offset."""
    for n, m in enumerate(_FIELD_START.finditer(text)):
        if n >= _MAX_CANDIDATES:
            break
        block = RawMessage.parse(text[m.start():m.start() + _MAX_BLOCK])
        if _looks_returned(block):
            pairs = [(f.name, f.text()) for f in block.fields if f.name]
            return m.start(), from_fields(pairs, "quoted text")
    return None
