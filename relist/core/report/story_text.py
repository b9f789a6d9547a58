"""``relist explain`` for a terminal (pure: the story dict in, text out).  Every value
from the store or the message goes through ``safety.printable``."""

from __future__ import annotations

from typing import Any

from relist.core.report.aggregate import UNMATCHED
from relist.core.safety import printable

__all__ = ["render"]

_MAX_REPLIES = 40
_DETAIL = 240


def _p(value: Any, limit: int = 300) -> str:
    return printable("" if value is None else str(value), limit)


def _arrival(story: dict[str, Any], out: list[str]) -> None:
    src = story["arrival_from"]
    where = ("the ingress leg's record" if src["leg"] == "ingress"
             else "the egress transaction (no ingress record: what Mailman sent)")
    if story.get("dry_run"):
        where = "the file as given"
    out.append(f"arrival, as verified from {where}" + (f" {_p(src['relist_id'])}" if src["relist_id"] else "")
               + (f" at {_p(src['time'])[:19]}" if src.get("time") else "") + ":")
    if not story["arrival"]:
        out.append("    no signature")
    for s in story["arrival"]:
        bits = (f", {s['key_bits']}-bit key" if s.get("key_bits") and "-bit key" not in str(s["reason"])
                else "")
        inst = f" i={s['instance']}" if s.get("instance") else ""
        out.append(f"    {_p(s.get('kind'), 20)}{inst} d={_p(s['domain'], 120)} s={_p(s['selector'], 80)} "
                   f"{_p(s.get('algorithm'), 30)}: {_p(s['result'], 20)} ({_p(s['reason'])}{bits})")
    d, a = story.get("dmarc"), story.get("arc")
    if d:
        policy = f" p={_p(d['policy'], 20)}" if d.get("policy") else ""
        out.append(f"    dmarc: {_p(d['result'], 20)} for {_p(d['from_domain'], 120) or '?'}{policy}"
                   + (f": {_p(d['reason'])}" if d.get("reason") else ""))
    if a:
        out.append(f"    arc: cv={_p(a['cv'], 20)}" + (f" ({_p(a['reason'])})" if a.get("reason") else ""))


def render(story: dict[str, Any]) -> str:
    out: list[str] = []
    ids = story["relist_ids"]
    head = (f"post {_p(story['message_id'], 200) or '(no Message-ID)'} "
            f"on {_p(story['list'], 200) or '(no list)'}")
    if story.get("dry_run"):
        head = (f"dry run of {_p(story.get('file'), 200)} as {_p(story['list'], 200)}'s Mailman would "
                f"hand it to relist (nothing delivered, nothing stored)")
    out.append(head)
    if ids:
        legs = {t["relist_id"]: t["leg"] for t in story["transactions"]}
        out.append(f"    {len(ids)} record(s), found by {_p(story.get('found_by'), 30)}: "
                   + ", ".join(f"{_p(i, 20)}" + (" (ingress)" if legs.get(i) == "ingress" else "")
                               for i in ids))
    for other in story.get("other_lists") or ():
        out.append(f"    also sent to {_p(other, 200)}: relist explain --list {_p(other, 200)} ...")
    out.append("")
    _arrival(story, out)
    m = story.get("ingress_match")
    if m:
        out.append("")
        if m["matched"]:
            out.append(f"the egress copy matched the ingress copy {_p(m['ingress_copy'], 20)}: the verdict "
                       "above is the post as it arrived, before Mailman")
        else:
            out.append(f"the egress copy matched no ingress copy ({_p(m['reason'])}): relist verified what "
                       "Mailman sent")
            if m.get("first_difference"):
                out.append(f"    first difference from {_p(m['first_difference'], 400)}")
    out.append("")
    hidden = story.get("skipped_steps", 0) if not any(s["action"] == "skipped" for s in story["steps"]) else 0
    what = ("what relist would do" if story.get("dry_run")
            else f"what relist did (transaction {_p(story['steps_of'], 20)})")
    out.append(what + (f"; {hidden} skipped step(s) not shown (--all shows them)" if hidden else "") + ":")
    for s in story["steps"]:
        detail = _p(s["detail"], 2000)
        if len(detail) > _DETAIL:
            detail = detail[:_DETAIL] + "... (--json has it all)"
        out.append(f"    {_p(s['step'], 20):<16} {_p(s['action'], 10):<9} {detail}".rstrip())
    out.append("")
    if story["breakage"]:
        out.append("poster signatures valid on arrival, and what became of them:")
        for b in story["breakage"]:
            fate = {"survived": "still valid in what relist sent",
                    "mailman": "broken by Mailman (before relist saw the post again)",
                    UNMATCHED: "broken before relist saw the post again: what Mailman sent matched no "
                               "ingress copy (the first difference is above)"}.get(
                b["broken_by"], f"broken by relist's step {_p(b['broken_by'], 40)}")
            out.append(f"    {_p(b['signature'], 200)}: {fate}")
    else:
        out.append("no poster signature verified on arrival: nothing to keep")
    mit = story.get("mitigation")
    if mit:
        detail = mit["detail"].removeprefix("no mitigation: ")
        out.append(("DMARC mitigation: " if mit["applied"] else "no DMARC mitigation: ") + _p(detail, 600))
    for made in story["signatures_made"]:
        out.append(f"{_p(made['step'], 20)}: {_p(made['detail'].split('; h=', 1)[0], 300)}")
    if story.get("internal_error"):
        out.append(f"internal error: {_p(story['internal_error'])}")
    if story.get("dry_run"):
        out.append("")
        out.append(f"relist would answer: {_p(story.get('would_reply'), 300)}")
        return "\n".join(out) + "\n"
    out.append("")
    out.append("transactions:")
    shown = 0
    for t in story["transactions"]:
        final = t["relist_reply"] or t["reply"]
        out.append(f"    {_p(t['relist_id'], 20)}  {_p(t['time'], 40)[:19].replace('T', ' ')}  {t['leg']:<7} "
                   f"{len(t['replies']) or len(t['recipients'])} recipient(s)  "
                   f"reply: {_p(final, 200) or '-'}")
        for rcpt, reply in t["replies"].items():
            if shown >= _MAX_REPLIES:
                break
            per = t["data_replies"].get("DATA " + rcpt)
            out.append(f"        {_p(rcpt, 200)}: {_p(reply, 200)}" + (f" / {_p(per, 200)}" if per else ""))
            shown += 1
    if shown >= _MAX_REPLIES:
        out.append(f"    (replies after the first {_MAX_REPLIES} not shown: --json has them all)")
    out.append("")
    if not story["bounces"]:
        out.append("bounces: none recorded for this post")
    else:
        out.append("bounces:")
        for b in story["bounces"]:
            out.append(f"    {_p(b['time'], 40)[:19].replace('T', ' ')}  {_p(b['recipient'], 200)}  "
                       f"{_p(b['cause'], 20)}  {_p(b['status'], 20)}  {_p(b['diagnostic'], 200)}")
    return "\n".join(out) + "\n"
