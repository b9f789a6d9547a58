"""``relist report --html``: one self-contained page (pure: the report dict in, HTML out).

Inline CSS and inline SVG charts (relist.core.report.svg); no script and no external
reference, and a Content-Security-Policy that forbids loading anything, so opening
the file fetches nothing.  Charts per day over all the lists shown: signature health,
breakage by cause, DMARC mitigations, authentication bounces; then a table per list.
Every value from the store is HTML-escaped.
"""

from __future__ import annotations

from datetime import date, timedelta
from html import escape
from typing import Any

from relist.core.report.aggregate import AUTH_CAUSES
from relist.core.report.svg import bar_chart
from relist.core.report.text import pairs, pct

__all__ = ["days_between", "render"]

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px} p.meta{color:#666;margin:0 0 16px}
.charts{display:flex;flex-wrap:wrap;gap:16px} .chart{background:#fff;border:1px solid #ddd;padding:8px}
svg text.t{font:600 14px system-ui,sans-serif;fill:#222} svg text.l{font:12px system-ui,sans-serif;fill:#333}
svg text.a{font:11px system-ui,sans-serif;fill:#666}
table{border-collapse:collapse;background:#fff;margin:0 0 8px;min-width:560px}
th,td{border:1px solid #ddd;padding:4px 10px;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums} th{background:#f0f0f0}
"""


def days_between(days: list[str]) -> list[str]:
    """Every day from the first to the last of ``days`` (ISO dates), so that a day
    without posts shows as a gap, not as nothing."""
    try:
        first, last = date.fromisoformat(min(days)), date.fromisoformat(max(days))
    except ValueError:
        return sorted(set(days))
    if (last - first).days > 3660:
        return sorted(set(days))
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def _series(lists: dict[str, Any], days: list[str], pick) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for address, entry in lists.items():
        for day, bucket in entry["by_day"].items():
            for name, value in pick(address, bucket):
                row = out.setdefault(name, [0] * len(days))
                row[days.index(day)] += value
    return out


def _charts(lists: dict[str, Any]) -> list[str]:
    days = days_between([d for e in lists.values() for d in e["by_day"]]) if any(
        e["by_day"] for e in lists.values()) else []
    health = {name: [0] * len(days) for name in ("posts", "valid on arrival", "kept valid", "re-signed")}
    health.update(_series(lists, days, lambda a, b: (("posts", b["posts"]),
                                                     ("valid on arrival", b["signed_valid_on_arrival"]),
                                                     ("kept valid", b["kept_valid"]),
                                                     ("re-signed", b["resigned"]))))
    broken = _series(lists, days, lambda a, b: b["broken_by"].items())
    mitigated = _series(lists, days, lambda a, b: ((a, b["mitigated"]),) if b["mitigated"] else ())
    bounces = _series(lists, days, lambda a, b: ((c, n) for c, n in b["bounces_by_cause"].items()
                                                if c in AUTH_CAUSES))
    return [bar_chart("Signature health (posts per day)", days, health),
            bar_chart("Breakage by cause (posts per day)", days, broken, stacked=True),
            bar_chart("DMARC mitigations (posts per day, by list)", days, mitigated, stacked=True),
            bar_chart("Authentication bounces (per day, by cause)", days, bounces, stacked=True)]


def _table(address: str, e: dict[str, Any]) -> str:
    n = e["posts"]
    rows = [
        ("posts", n, "", (f"{e['transactions']} transactions; {e['members_reached']} deliveries accepted; "
                          f"{e['notices']} Mailman notices not counted; modes: {pairs(e['modes'])}")),
        ("signed, valid on arrival", e["signed_valid_on_arrival"], pct(e["signed_valid_on_arrival"], n),
         "an aligned poster signature verified on arrival"),
        ("kept valid", e["kept_valid"], pct(e["kept_valid"], n),
         f"{e['kept_intact']} intact, {e['repaired']} repaired"),
        ("re-signed as the list", e["resigned"], pct(e["resigned"], n), ""),
        ("DMARC-mitigated", e["mitigated"], pct(e["mitigated"], n), pairs(e["mitigations"])),
        ("broken by", sum(e["broken_by"].values()), "", pairs(e["broken_by"])),
        ("bounces", e["bounces"], "", (f"{pairs(e['bounces_by_cause'])}; receiver domains: "
                                       f"{pairs(e['top_receiver_domains'])}; poster domains: "
                                       f"{pairs(e['top_poster_domains'])}")),
        ("deferred / rejected", f"{e['deferred']} / {e['rejected']}", "",
         f"transactions; {e['deferred_recipients']} recipients deferred; "
         f"{e['internal_errors']} internal errors"),
    ]
    body = "".join(f"<tr><th>{escape(label)}</th><td class=\"n\">{escape(str(count))}</td>"
                   f"<td class=\"n\">{escape(share)}</td><td>{escape(note)}</td></tr>"
                   for label, count, share, note in rows)
    return (f"<h2>{escape(address)}</h2><table><tr><th></th><th>count</th><th>share of posts</th>"
            f"<th>detail</th></tr>{body}</table>")


def render(report: dict[str, Any], *, since: str = "", generated: str = "") -> str:
    lists = report.get("lists", {})
    total = sum(e["posts"] for e in lists.values())
    scope = f"since {since}" if since else "the whole store"
    charts = "".join(f'<div class="chart">{svg}</div>' for svg in _charts(lists))
    tables = "".join(_table(a, e) for a, e in lists.items()) or "<p>No list mail recorded.</p>"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "style-src 'unsafe-inline'\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>relist report</title><style>{_CSS}</style></head><body>"
            f"<h1>relist report</h1><p class=\"meta\">{len(lists)} list(s), {total} posts, {escape(scope)}"
            f"{', generated ' + escape(generated) if generated else ''} (UTC). Counted per post: the "
            "transactions of one list with one Message-ID.</p>"
            f"<div class=\"charts\">{charts}</div>{tables}</body></html>\n")
