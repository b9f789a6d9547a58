"""Mailboxes of an address field, for any text a poster can write.

``email.utils.getaddresses`` parses comments recursively: a From with a couple of
thousand nested comments raises ``RecursionError`` (and so would, on every retry,
whatever step asked).  ``mailboxes`` is ``getaddresses`` for one field's text, and
falls back to the bare addresses (``<local@domain>`` or ``local@domain``) when the
standard parser cannot finish.  Every reader of From, Sender, Reply-To or Cc in the
core goes through it.
"""

from __future__ import annotations

import re
from email.utils import getaddresses

__all__ = ["mailboxes", "unusable"]

_ANGLE_ADDR = re.compile(r"<\s*([^<>\s@]+@[^<>\s@]+)\s*>|([^<>\s@,;:\"()]+@[^<>\s@,;:\"()]+)")


def mailboxes(text: str) -> list[tuple[str, str]]:
    """(display name, address) pairs of an address field's text; a field too deeply
    nested for the standard parser gives its bare addresses, without names."""
    try:
        return getaddresses([text])
    except RecursionError:
        return [("", m.group(1) or m.group(2)) for m in _ANGLE_ADDR.finditer(text)]


# RFC 5322 §3.4.1 addr-spec with a dot-atom local part (no quoted string, no comment,
# no white space or control character): what relist writes for a list's address.
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")


def unusable(address: str) -> str:
    """Why ``address`` cannot go into a field relist writes ("" when it can): a list's
    address comes from the configuration, or, for a list without a section, from the
    List-Id or the envelope sender, which a hostile message writes."""
    from relist.core.dkim.tags import valid_domain  # (auth imports this module)
    local, at, domain = address.rpartition("@")
    if not at or not domain:
        return "has no domain"
    if not _DOT_ATOM.match(local):
        return "is not a usable address (its local part is not a dot-atom)"
    if not domain.isascii() or valid_domain(domain) != domain.lower().rstrip("."):
        return "is not a usable address (its domain is not a domain name)"
    return ""
