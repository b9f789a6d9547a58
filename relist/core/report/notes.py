"""Reading the stored audit trail (the ``steps`` and ``facts`` JSON columns) quickly.

A report reads the notes of hundreds of thousands of transactions, and a note list is
a few kilobytes of JSON, most of it the ``sign`` note's ``h=``.  ``notes_of`` decodes
only the notes asked for: the store writes each note as ``{"step": NAME, "action": ...,
"detail": ...}`` (relist.edge.store), so each is found by its head and decoded alone;
a text in any other form (another writer, another JSON layout) is decoded whole.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["breakage_of", "cause_of", "facts_of", "is_notice", "mitigation_kind", "note_dicts", "notes_of",
           "post_notes", "verify_source"]

_scanstring = getattr(json.decoder, "scanstring")   # (json's C string scanner; not in its type stubs)
_POLICY = re.compile(r"\bp=(none|quarantine|reject)\b")


def note_dicts(steps: Any) -> list[dict[str, str]]:
    """Every note of a ``steps`` column value (JSON text, or already a list)."""
    if isinstance(steps, list):
        return steps
    try:
        value = json.loads(steps or "[]")
    except ValueError:
        return []
    return value if isinstance(value, list) else []


_HEADS: dict[str, str] = {}


def _fast(steps: str, name: str, need_detail: bool) -> dict[str, str] | None:
    """The note of step ``name`` read in place (the store's layout), {} when there is
    none, None when the text is not in that layout."""
    head = _HEADS.get(name)
    if head is None:
        head = _HEADS[name] = '{"step": ' + json.dumps(name) + ', "action": "'
    at = steps.find(head)
    if at < 0:
        return {} if '{"step": ' in steps else None
    a0 = at + len(head)
    a1 = steps.find('"', a0)
    if a1 < 0 or not steps.startswith('", "detail": "', a1):
        return None
    note = {"step": name, "action": steps[a0:a1], "detail": ""}
    if need_detail:
        try:
            note["detail"] = _scanstring(steps, a1 + len('", "detail": "'))[0]
        except ValueError:
            return None
    return note


def notes_of(steps: Any, wanted: tuple[str, ...], *,
             actions_only: tuple[str, ...] = ()) -> dict[str, dict[str, str]]:
    """The first note of each step named in ``wanted`` (step -> {step, action, detail});
    for the steps in ``actions_only``, the detail is left empty (not decoded)."""
    out: dict[str, dict[str, str]] = {}
    if isinstance(steps, str):
        for name in wanted:
            note = _fast(steps, name, name not in actions_only)
            if note is None:
                out = {}
                break
            if note:
                out[name] = note
        else:
            return out
    for note in note_dicts(steps):
        if isinstance(note, dict) and note.get("step") in wanted and note["step"] not in out:
            out[note["step"]] = note
    return out


def facts_of(facts: Any) -> dict[str, Any]:
    """The ``facts`` column as a dict ({} when unreadable)."""
    if isinstance(facts, dict):
        return facts
    try:
        value = json.loads(facts or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def breakage_of(facts: str) -> list[str] | None:
    """The ``breakage`` entries of a ``facts`` text, read in place (the store writes
    them as a JSON list of plain strings); None when that needs a JSON parser."""
    at = facts.find('"breakage": [')
    if at < 0:
        return []
    start = at + len('"breakage": [')
    end = facts.find("]", start)
    body = facts[start:end]
    if end < 0 or "\\" in body:
        return None
    if not body:
        return []
    if body[0] != '"' or body[-1] != '"':
        return None
    return body[1:-1].split('", "')


def cause_of(entry: str) -> tuple[str, str]:
    """A ``breakage`` entry ("poster.example/s1: mailman") as (signature, cause)."""
    who, _, what = str(entry).rpartition(": ")
    return (who, what) if who else ("?", str(entry))


def mitigation_kind(detail: str) -> str:
    """What DMARC mitigation did and why, in a few words: "From rewritten (p=reject)",
    "wrapped (p=quarantine)", "... (evidence)"."""
    how = "wrapped" if "wrapped as message/rfc822" in detail else "From rewritten"
    if "dmarc_trigger = evidence" in detail:
        return f"{how} (evidence)"
    m = _POLICY.search(detail)
    return f"{how} (p={m.group(1)})" if m else how


def is_notice(identify_detail: str) -> bool:
    """The ``identify`` note says this is one of Mailman's own notices, not a post."""
    return "a Mailman notice" in identify_detail


def verify_source(detail: str) -> tuple[str, str]:
    """From an egress ``verify`` note: (ingress relist id the verdict is about, or "";
    why no ingress copy was used, or "")."""
    if detail.startswith("as received by ingress (ingress copy "):
        return detail[len("as received by ingress (ingress copy "):].split(")", 1)[0], ""
    if detail.startswith("as received ("):
        inner = detail[len("as received ("):]
        end = inner.rfind("): ")
        return "", inner[:end] if end >= 0 else inner
    return "", ""


_IDENTIFY = '{"step": "identify", "action": "'
_VERIFY = '{"step": "verify", "action": "recorded", "detail": "'
_MODE = '{"step": "mode", "action": "recorded", "detail": "'
_MITIGATED = '{"step": "dmarc-mitigation", "action": "applied", "detail": "'
_SIGNED = '{"step": "sign", "action": "applied"'
_BY_INGRESS = "as received by ingress (ingress copy "
_NOT_BY_INGRESS = "as received ("


def post_notes(steps: Any) -> tuple[bool, str, str, bool, str, bool]:
    """What a report needs from one transaction's notes, read in place when the text
    is in the store's layout: (a Mailman notice, the mode chosen, the mitigation's
    detail or "", signed as the list, the ingress copy the verdict is about or "",
    no ingress copy matched)."""
    if not isinstance(steps, str) or '{"step": ' not in steps:
        return _post_notes_slow(steps)
    # The notes are in pipeline order (identify, verify, mode, dmarc-mitigation, sign):
    # each is looked for after the one before.
    notice, pos = False, 0
    at = steps.find(_IDENTIFY)
    if at >= 0:
        end = steps.find('"}', at)
        notice = steps.find("a Mailman notice", at, end if end >= 0 else len(steps)) >= 0
        pos = at
    ingress_id, unmatched = "", False
    at = steps.find(_VERIFY, pos)
    if at >= 0:
        start = at + len(_VERIFY)
        if steps.startswith(_BY_INGRESS, start):
            start += len(_BY_INGRESS)
            ingress_id = steps[start:steps.find(")", start)]
        else:
            unmatched = steps.startswith(_NOT_BY_INGRESS, start)
        pos = at
    mode = ""
    at = steps.find(_MODE, pos)
    if at >= 0:
        start = at + len(_MODE)
        stop = min((i for i in (steps.find(" ", start), steps.find('"', start)) if i >= 0), default=start)
        mode = steps[start:stop]
        pos = at
    mitigation = ""
    at = steps.find(_MITIGATED, pos)
    if at >= 0:
        try:
            mitigation, pos = _scanstring(steps, at + len(_MITIGATED))
        except ValueError:
            return _post_notes_slow(steps)
    signed = steps.find(_SIGNED, pos) >= 0
    return notice, mode, mitigation, signed, ingress_id, unmatched


def _post_notes_slow(steps: Any) -> tuple[bool, str, str, bool, str, bool]:
    notes = notes_of(note_dicts(steps), ("identify", "verify", "mode", "dmarc-mitigation", "sign"))
    mode = notes.get("mode", {})
    mit = notes.get("dmarc-mitigation", {})
    ingress_id, why = verify_source(notes.get("verify", {}).get("detail", ""))
    return (is_notice(notes.get("identify", {}).get("detail", "")),
            mode.get("detail", "").split(" ", 1)[0] if mode.get("action") == "recorded" else "",
            mit.get("detail", "") if mit.get("action") == "applied" else "",
            notes.get("sign", {}).get("action") == "applied", ingress_id, bool(why))
