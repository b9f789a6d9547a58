"""``relist explain``: the story of one post, from its stored records (pure).

In the order it happened: the arrival (what verification found: each signature,
DMARC, ARC; from the ingress leg's record when there is one), whether the egress copy
matched the ingress copy (and if not, the first difference), the steps that did
something, which step broke which signature, the DMARC mitigation, the signatures
relist made, the MTA's reply per recipient in every transaction of the post
(Mailman's fan-out), and the bounces received for it.  ``build`` returns the
``--json`` document; its keys ``relist_ids``, ``message_id``, ``list``, ``arrival``,
``steps``, ``breakage``, ``transactions`` and ``bounces`` are the contract.
"""

from __future__ import annotations

import json
from typing import Any

from relist.core.report.aggregate import UNMATCHED
from relist.core.report.notes import cause_of, facts_of, note_dicts, verify_source

__all__ = ["arrival_id", "build", "chosen", "is_ingress", "replies_of"]


def is_ingress(tx: dict[str, Any]) -> bool:
    return facts_of(tx.get("facts")).get("leg") == "ingress"


def chosen(txs: list[dict[str, Any]], asked: str = "") -> dict[str, Any]:
    """The transaction whose notes tell the story: the one asked for when it is an
    egress one, else the first egress transaction, else the first record."""
    for tx in txs:
        if tx["relist_id"] == asked and not is_ingress(tx):
            return tx
    return next((tx for tx in txs if not is_ingress(tx)), txs[0])


def _note(tx: dict[str, Any], step: str) -> dict[str, str]:
    return next((n for n in note_dicts(tx.get("steps")) if isinstance(n, dict) and n.get("step") == step), {})


def arrival_id(txs: list[dict[str, Any]], main: dict[str, Any]) -> str:
    """The record whose verdict is the post's arrival: the ingress copy the egress
    verdict was taken from, else the latest ingress record, else ``main`` itself."""
    ingress_id, _ = verify_source(_note(main, "verify").get("detail", ""))
    if ingress_id:
        return ingress_id
    ingress = [tx for tx in txs if is_ingress(tx)]
    return ingress[-1]["relist_id"] if ingress else main["relist_id"]


def replies_of(upstream: Any) -> dict[str, str]:
    if isinstance(upstream, str):
        try:
            upstream = json.loads(upstream or "{}")
        except ValueError:
            return {}
    return {str(k): str(v) for k, v in upstream.items()} if isinstance(upstream, dict) else {}


def _transaction(tx: dict[str, Any]) -> dict[str, Any]:
    replies = replies_of(tx.get("upstream"))
    rcpts = tx.get("rcpt_tos") or []
    if isinstance(rcpts, str):
        try:
            rcpts = json.loads(rcpts)
        except ValueError:
            rcpts = []
    facts = facts_of(tx.get("facts"))
    return {"relist_id": tx["relist_id"], "time": str(tx["time"]),
            "leg": "ingress" if facts.get("leg") == "ingress" else "egress",
            "mail_from": tx.get("mail_from", ""), "recipients": rcpts,
            "replies": {k: v for k, v in replies.items() if k != "DATA" and not k.startswith("DATA ")},
            "data_replies": {k: v for k, v in replies.items() if k == "DATA" or k.startswith("DATA ")},
            "reply": tx.get("reply", ""), "relist_reply": tx.get("relist_reply"),
            "size_in": tx.get("size_in"), "size_out": tx.get("size_out"),
            "duration_ms": tx.get("duration_ms"), "internal_error": facts.get("internal_error", "")}


def _arrival(signatures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"domain": s["domain"], "selector": s["selector"], "result": str(s["result"]),
             "reason": s["reason"], "kind": s.get("kind", "dkim"), "algorithm": s.get("algorithm", ""),
             "key_bits": s.get("key_bits"), "instance": s.get("instance")} for s in signatures]


def _match(main: dict[str, Any], txs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """How the egress copy matched the ingress copy, from the ``verify`` note."""
    if is_ingress(main):
        return None
    detail = _note(main, "verify").get("detail", "")
    ingress_id, why = verify_source(detail)
    if ingress_id:
        return {"matched": True, "ingress_copy": ingress_id,
                "reason": "fingerprint (Message-ID, DKIM b=, From, Date) and body up to Mailman's "
                          "escaping and additions at the end", "first_difference": ""}
    if not why:
        return None if not any(is_ingress(tx) for tx in txs) else {
            "matched": False, "ingress_copy": "", "reason": "no ingress copy was looked for",
            "first_difference": ""}
    _, _, diff = why.partition("first difference from ")
    return {"matched": False, "ingress_copy": "", "reason": why.split("; first difference", 1)[0],
            "first_difference": diff}


def story_dry_run(main: dict[str, Any]) -> bool:
    return not main.get("relist_id")


def build(txs: list[dict[str, Any]], main: dict[str, Any], *, signatures: list[dict[str, Any]],
          verdict: dict[str, Any] | None, arrival_from: str, bounces: list[dict[str, Any]],
          show_all: bool = False, found_by: str = "") -> dict[str, Any]:
    """The story (module doc).  ``txs``: every record of the post, oldest first;
    ``main``: the one whose notes are told (``chosen``); ``signatures``/``verdict``:
    what verification found in ``arrival_from``'s record."""
    notes = [n for n in note_dicts(main.get("steps")) if isinstance(n, dict)]
    steps = [{"step": n.get("step", ""), "action": n.get("action", ""), "detail": n.get("detail", "")}
             for n in notes if show_all or n.get("action") != "skipped"]
    facts = facts_of(main.get("facts"))
    breakage = [{"signature": who, "broken_by": cause}
                for who, cause in map(cause_of, facts.get("breakage") or ())]
    mitigation = next(({"applied": n.get("action") == "applied", "detail": n.get("detail", "")}
                       for n in notes if n.get("step") == "dmarc-mitigation"), None)
    made = [{"step": n["step"], "detail": n.get("detail", "")} for n in notes
            if n.get("step") in ("sign", "arc-seal", "sign-cache") and n.get("action") != "skipped"]
    arrival_tx = next((tx for tx in txs if tx["relist_id"] == arrival_from), None)
    match = _match(main, txs)
    if not breakage and match is not None and not match["matched"] and not story_dry_run(main):
        # Valid at ingress, broken in what Mailman sent, and no ingress copy matched:
        # broken before relist saw the post again (the report's cause of the same name).
        breakage = [{"signature": f"{s['domain']}/{s['selector']}", "broken_by": UNMATCHED}
                    for s in signatures if s.get("kind", "dkim") == "dkim" and str(s["result"]) == "pass"]
    v = verdict or {}
    return {
        "relist_ids": [tx["relist_id"] for tx in txs],
        "message_id": main.get("message_id", ""),
        "list": main.get("list_address"),
        "found_by": found_by,
        "arrival_from": {"relist_id": arrival_from,
                         "leg": "ingress" if arrival_tx is not None and is_ingress(arrival_tx) else "egress",
                         "time": str(arrival_tx["time"]) if arrival_tx else ""},
        "arrival": _arrival(signatures),
        "dmarc": {"from_domain": v.get("from_domain", ""), "result": v.get("dmarc_result", ""),
                  "policy": v.get("dmarc_policy", ""), "reason": v.get("dmarc_reason", "")} if v else None,
        "arc": {"cv": v.get("arc_cv", ""), "reason": v.get("arc_reason", "")} if v else None,
        "ingress_match": match,
        "steps_of": main["relist_id"],
        "mode": next((n.get("detail", "") for n in notes if n.get("step") == "mode"), ""),
        "steps": steps,
        "skipped_steps": sum(n.get("action") == "skipped" for n in notes),
        "repairs": list(facts.get("repairs") or ()),
        "breakage": breakage,
        "mitigation": mitigation,
        "signatures_made": made,
        "internal_error": facts.get("internal_error", ""),
        "transactions": [_transaction(tx) for tx in txs],
        "bounces": [{k: (bool(b[k]) if k == "permanent" else (str(b[k]) if k == "time" else b[k])) for k in b}
                    for b in bounces],
    }
