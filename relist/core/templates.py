"""Template substitution for footers and the Subject prefix.

Two spellings are understood in one pass (so a value is never expanded twice):

* relist's ``{name}`` placeholders, e.g. ``[{list_name}] ``;
* Mailman 3's ``$name`` / ``${name}`` placeholders (PEP 292, as in
  mailman/utilities/string.py ``expand`` and handlers/decorate.py
  ``decorate_template``), so a footer copied from Mailman renders the same.

The two spellings differ on one name, on purpose: relist's ``{list_name}`` is the
list's display name (as in ``munge_phrase``), while Mailman's ``$list_name`` is the
short name (local part).  Unknown placeholders are left as they are; ``$$`` is a
literal ``$`` (PEP 292).  See docs/transformations.md for the full table.

Every value is text fit for a header field or a body line (``clean_text``: control
characters become spaces, undecodable bytes U+FFFD): a list without a section takes
its address, hence its name, from the List-Id or the envelope sender, which a hostile
message writes.
"""

from __future__ import annotations

import functools
import re

from relist.core.message import clean_text
from relist.core.policy import ListPolicy

__all__ = ["expand", "substitutions"]

_PLACEHOLDER = re.compile(
    r"\$\$"                                   # PEP 292 escape
    r"|\$\{(?P<dbrace>[A-Za-z_][A-Za-z0-9_]*)\}"  # ${name}
    r"|\$(?P<dollar>[A-Za-z_][A-Za-z0-9_]*)"      # $name
    r"|\{(?P<brace>[A-Za-z_][A-Za-z0-9_]*)\}"     # {name}
)


def display_name(lp: ListPolicy) -> str:
    return clean_text(lp.display_name or lp.name)[0]


def substitutions(lp: ListPolicy) -> tuple[dict[str, str], dict[str, str]]:
    """The ``{name}`` values and the ``$name`` values for ``lp``."""
    name, domain = lp.name, lp.domain
    common = {
        "display_name": display_name(lp),
        "listname": lp.address,               # Mailman: fqdn_listname
        "fqdn_listname": lp.address,
        "short_listname": name,
        "list_id": lp.list_id,
        "domain": domain,
        "mail_host": domain,
        "request_email": f"{name}-request@{domain}",
        "request_address": f"{name}-request@{domain}",
        "owner_email": f"{name}-owner@{domain}",
        "bounces_address": lp.bounces_address,
        "unsubscribe_url": lp.unsubscribe_url,
        "subscribe_url": lp.subscribe_url,
        "archive_url": lp.archive_url,
        "help_url": lp.help_url,
    }
    braces = dict(common, list_name=display_name(lp), list_address=lp.address)
    dollars = dict(common, list_name=name)   # Mailman's decorate_template: short name
    return ({k: clean_text(v)[0] for k, v in braces.items()},
            {k: clean_text(v)[0] for k, v in dollars.items()})


@functools.lru_cache(maxsize=256)
def expand(template: str, lp: ListPolicy) -> str:
    """``template`` with every known placeholder replaced; unknown ones kept verbatim.
    Cached: both come from the configuration, and the same few are expanded for every
    post (the substitutions were a tenth of a Subject prefix's cost)."""
    if not template:
        return ""
    braces, dollars = substitutions(lp)

    def one(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        if m.group("brace") is not None:
            return braces.get(m.group("brace"), m.group(0))
        key = m.group("dbrace") or m.group("dollar")
        return dollars.get(key, m.group(0))

    return _PLACEHOLDER.sub(one, template)
