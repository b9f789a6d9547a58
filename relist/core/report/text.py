"""``relist report`` for a terminal: one block per list (pure: the report dict in, text out).

Every value that comes from the store (list addresses, domains, causes) is passed
through ``safety.printable``: a store row cannot write control sequences to the
terminal.
"""

from __future__ import annotations

from typing import Any

from relist.core.safety import printable

__all__ = ["pairs", "pct", "render"]


def pct(n: int, total: int) -> str:
    return f"{100 * n / total:.0f}%" if total else "-"


def pairs(items: Any, limit: int = 8) -> str:
    """``{"a": 1, ...}`` or ``[["a", 1], ...]`` as "a 1, b 2" (printable)."""
    seq = list(items.items()) if isinstance(items, dict) else [tuple(x) for x in items]
    text = ", ".join(f"{printable(str(k), 80)} {v}" for k, v in seq[:limit])
    return text + (f", ... ({len(seq) - limit} more)" if len(seq) > limit else "") if seq else "-"


def render(report: dict[str, Any], *, since: str = "") -> str:
    lists = report.get("lists", {})
    total = sum(e["posts"] for e in lists.values())
    head = (f"relist report: {len(lists)} list{'s' if len(lists) != 1 else ''}, {total} post"
            f"{'s' if total != 1 else ''}" + (f" since {since}" if since else " (whole store)")
            + ", times UTC")
    out = [head]
    if not lists:
        out.append("no list mail recorded" + (" in that time" if since else ""))
    for address, e in lists.items():
        n = e["posts"]
        modes = ", ".join(f"{m} {c}" for m, c in e["modes"].items()) or "no posts"
        out += ["", f"{printable(address, 200)}  ({modes})"]
        rows = [
            ("posts", str(n), "", f"{e['transactions']} transactions, "
                                  f"{e['members_reached']} deliveries accepted"
             + (f"; {e['notices']} Mailman notices not counted" if e["notices"] else "")),
            ("valid on arrival", str(e["signed_valid_on_arrival"]), pct(e["signed_valid_on_arrival"], n),
             "an aligned poster signature verified"),
            ("kept valid", str(e["kept_valid"]), pct(e["kept_valid"], n),
             f"{e['kept_intact']} intact, {e['repaired']} repaired"),
            ("re-signed as the list", str(e["resigned"]), pct(e["resigned"], n), ""),
            ("DMARC-mitigated", str(e["mitigated"]), pct(e["mitigated"], n), pairs(e["mitigations"])
             if e["mitigations"] else ""),
            ("broken by", "", "", pairs(e["broken_by"])),
            ("bounces", str(e["bounces"]), "", pairs(e["bounces_by_cause"]) if e["bounces"] else ""),
        ]
        if e["bounces"]:
            rows.append(("  receiver domains", "", "", pairs(e["top_receiver_domains"])))
            rows.append(("  poster domains", "", "", pairs(e["top_poster_domains"])))
        rows.append(("deferred / rejected", f"{e['deferred']} / {e['rejected']}", "",
                     (f"transactions; {e['deferred_recipients']} recipients deferred; "
                      f"{e['internal_errors']} internal errors")))
        for label, count, share, note in rows:
            out.append(f"  {label:<24}{count:>8} {share:>5}  {note}".rstrip())
    return "\n".join(out) + "\n"
