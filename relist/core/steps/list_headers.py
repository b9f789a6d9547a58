"""list-headers: the RFC 2369 / RFC 2919 / RFC 8058 list fields.

What: List-Id (RFC 2919 §3: ``"Display Name" <list.id>`` or ``<list.id>``),
List-Help, List-Unsubscribe, List-Subscribe, List-Post, List-Owner, List-Archive
(RFC 2369 §3: angle-bracketed URIs, comma separated, leftmost preferred), and
``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058 §3.1) only when the
List-Unsubscribe field that goes out contains an https URI.

``list_headers = "keep"`` leaves every such field already present (Mailman adds
most of them) byte-identical and adds only the missing ones, except one a poster
signature that still verifies signs the absence of (its h= names the field more
times than the post has it, RFC 6376 §8.15; repair drops Mailman's copy for that
reason): adding it would break the signature for a field Mailman already chose.
``"replace"`` removes all fields of these names and writes relist's.  A field is
never duplicated.
Why: these fields drive MUAs' unsubscribe buttons and mailbox providers' one-click
unsubscribe; relist writes them from its own settings so that they can be signed
under the list's domain (RFC 8058 §4 asks for both fields to be DKIM-signed).
"""

from __future__ import annotations

import functools
import re

from relist.core import mime
from relist.core.addresses import unusable
from relist.core.guard import oversigning
from relist.core.message import HeaderField, RawMessage
from relist.core.model import Context, Work
from relist.core.policy import LIST_HEADER_NAMES, ListPolicy
from relist.core.steps import apply_transform

__all__ = ["NAME", "apply", "fields_for", "transform"]

NAME = "list-headers"

# Written in this order (Mailman's rfc_2369 writes them sorted; any order is valid).
NAMES = LIST_HEADER_NAMES
ONE_CLICK = "List-Unsubscribe=One-Click"
_HTTPS = re.compile(r"<\s*https://", re.IGNORECASE)
_LOWER = frozenset(n.lower() for n in NAMES)


def apply(work: Work, ctx: Context) -> Work:
    """See `relist.core.steps`."""
    absent = (_signed_absent(work)
              if work.known.list_policy and work.known.list_policy.list_headers == "keep" else frozenset())
    return apply_transform(NAME, lambda msg, lp: transform(msg, lp, absent), work)


def _signed_absent(work: Work) -> frozenset[str]:
    """List field names (lower case) a still-valid poster signature signs the absence of."""
    return frozenset(name for name in _LOWER if oversigning(work.known, work.message, name))


def _uris(*uris: str) -> str:
    return ", ".join(f"<{u}>" for u in uris if u)


def _phrase(text: str) -> str:
    """An RFC 5322 phrase: a quoted string, or RFC 2047 words when not ASCII."""
    if mime.needs_encoding(text):
        return mime.encode_words(text)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _squash(text: str) -> str:
    return " ".join(text.split())


def fields_for(lp: ListPolicy) -> dict[str, str]:
    """relist's value for each list field (no List-Unsubscribe-Post: see ``transform``)."""
    name, domain = lp.name, lp.domain
    list_id = f"<{lp.list_id}>"
    values = {
        "List-Id": f"{_phrase(lp.display_name)} {list_id}" if lp.display_name else list_id,
        "List-Help": _uris(lp.help_url, f"mailto:{name}-request@{domain}?subject=help"),
        "List-Unsubscribe": _uris(lp.unsubscribe_url, f"mailto:{name}-leave@{domain}"),
        "List-Subscribe": _uris(lp.subscribe_url, f"mailto:{name}-join@{domain}"),
        "List-Post": _uris(f"mailto:{lp.address}"),
        "List-Owner": _uris(f"mailto:{name}-owner@{domain}"),
        "List-Archive": _uris(lp.archive_url),
    }
    return {k: v for k, v in values.items() if v}


@functools.lru_cache(maxsize=64)
def _built(lp: ListPolicy, eol: bytes) -> dict[str, HeaderField]:
    """``fields_for(lp)`` as folded fields ending with ``eol``: the same for every post
    of the list (cached, as the configuration they come from)."""
    proto = RawMessage((), b"", b"", eol)
    return {name: proto.make_field(name, mime.fold(name, value)) for name, value in fields_for(lp).items()}


def transform(msg: RawMessage, lp: ListPolicy, absent: frozenset[str] = frozenset()
              ) -> tuple[RawMessage | None, str]:
    """The message with the list fields, or None and the reason nothing changed.
    ``absent``: names not to add (keep mode: a poster signature signs their absence)."""
    why = unusable(lp.address)
    if why:
        return None, f"list address {lp.address!r} {why}"
    bad = [u for u in (lp.help_url, lp.unsubscribe_url, lp.subscribe_url, lp.archive_url)
           if u and (not u.isascii() or any(c in u for c in "<>\r\n\0 "))]
    if bad:
        return None, f"list-headers skipped: unusable URL {bad[0]!r}"
    ours = fields_for(lp)
    out = msg
    removed: list[str] = []
    if lp.list_headers == "replace":
        want = dict(ours)
        if _HTTPS.search(ours["List-Unsubscribe"]):
            want["List-Unsubscribe-Post"] = ONE_CLICK
        have = {n: [_squash(f.text()) for f in msg.get_all(n)] for n in NAMES}
        if all(have[n] == ([_squash(want[n])] if n in want else []) for n in NAMES):
            return None, "list fields already as configured (list_headers = replace)"
        for name in NAMES:
            if out.get(name) is not None:
                removed.append(name)
                out = out.remove(name)
    held = [name for name in ours if name.lower() in absent and out.get(name) is None]
    added = [name for name in ours if out.get(name) is None and name not in held]
    if added:
        built = _built(lp, out.eol)
        out = out.append(*(built[name] for name in added))
    unsub = out.get("list-unsubscribe")
    if (out.get("list-unsubscribe-post") is None and unsub is not None
            and _HTTPS.search(unsub.text())):
        out = out.append(out.make_field("List-Unsubscribe-Post", ONE_CLICK))
        added.append("List-Unsubscribe-Post")
    why_held = (f"; not added: {', '.join(held)} (a poster signature signs their absence)" if held else "")
    if not added and not removed:
        return None, ("all list fields already present (list_headers = keep)" if not held
                      else "nothing added" + why_held)
    kept = [n for n in NAMES if n not in added and msg.get(n) is not None]
    parts = []
    if lp.list_headers == "replace":
        parts.append("replaced: " + ", ".join(added))
    else:
        parts.append("added: " + ", ".join(added))
        if kept:
            parts.append("kept: " + ", ".join(kept))
    return out, "; ".join(parts) + why_held
