"""ARC chain validation (RFC 8617 §5.2) over DNS facts, with dkimpy doing the crypto.

relist's reading of dkimpy's answer:

- no ARC fields: ``none``;
- more than 50 sets, or an instance above 50 (§4.2.1): ``fail`` before any crypto;
- dkimpy's ``None`` ("ARC-Seal[n] reported failure, the chain is terminated") is
  ``fail``: §5.2 step 2 says a chain whose newest AS has cv=fail has status fail
  (the ValiMail suite expects an empty cv there; see docs/verification.md);
- ARC fields present but no set dkimpy can number: ``fail`` (§5.2 step 3);
- a DNS temporary error on an ARC key: ``fail`` with the reason naming the key,
  because §5.2.1 makes every validation error permanent, DNS errors included.

``oldest_pass`` follows §5.2 step 5: the lowest instance whose AMS still validates
when every newer AMS validates too, 0 when all of them do.
"""

from __future__ import annotations

import base64
import re

import dkim as dkimpy

from relist.core.verify.dkim_verify import ALGORITHMS, body_hash
from relist.core.verify.key_records import key_question
from relist.core.verify.results import ArcResult, ArcSet, Result, SignatureResult
from relist.core.dkim.tags import TagError, b_chars, parse_tags, strip_ws, valid_domain
from relist.core.facts import Facts, Question, Status
from relist.core.message import RawMessage

__all__ = ["ARC_FIELDS", "MAX_SETS", "key_questions", "verify_arc"]

ARC_FIELDS = ("arc-seal", "arc-message-signature", "arc-authentication-results")
MAX_SETS = 50            # RFC 8617 §4.2.1
_INSTANCE = re.compile(r"(?:^|;)\s*i\s*=\s*(\d+)\s*(?:;|$)")


def _instance(text: str) -> int | None:
    m = _INSTANCE.search(text)
    return int(m.group(1)) if m and len(m.group(1)) <= 4 else None


def key_questions(msg: RawMessage) -> set[Question]:
    """Key names of every AMS and AS (bounded by the set limit)."""
    out: set[Question] = set()
    for f in [f for f in msg.fields if f.name in ARC_FIELDS[:2]][: 2 * MAX_SETS]:
        try:
            tags = parse_tags(f.text())
        except TagError:
            continue
        d, s = valid_domain(tags.get("d", "")), valid_domain(tags.get("s", ""))
        if d and s:
            out.add(key_question(s, d))
    return out


def _dnsfunc(facts: Facts, temperrors: list[str]):
    def lookup(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode("utf-8", "surrogateescape")
        answer = facts.get(Question.txt(name))
        if answer.status == Status.TEMPERROR:
            temperrors.append(name.rstrip(".").lower())
            raise dkimpy.DnsTimeoutError(f"DNS temporary error for {name}")
        if answer.status == Status.ABSENT or not answer.records:
            return None
        return answer.records[0]
    return lookup


def _describe(kind: str, text: str, instance: int, valid: bool | None, body: bytes,
              temperrors: list[str]) -> SignatureResult:
    info: dict = {"instance": instance}
    try:
        tags = parse_tags(text)
    except TagError as exc:
        return SignatureResult(kind, Result.FAIL, f"malformed tag list: {exc}", **info)
    info.update(domain=tags.get("d", "").lower()[:255], selector=tags.get("s", "")[:255],
                algorithm=tags.get("a", "").lower()[:40],
                b=b_chars(tags.get("b", ""))[:1024])
    notes = []
    if kind == "arc":
        info["canonicalization"] = tags.get("c", "relaxed/relaxed").lower()
        info["headers"] = tuple(h.strip().lower() for h in tags.get("h", "").split(":") if h.strip())
        if "l" in tags and tags["l"].isdigit():
            info["body_length"] = int(tags["l"])
        algo = ALGORITHMS.get(info["algorithm"])
        if algo and "bh" in tags:
            try:
                c = info["canonicalization"]
                c = c if "/" in c else c + "/simple"
                digest, total = body_hash(body, c, algo[1], info.get("body_length"))
                ok = digest == base64.b64decode(strip_ws(tags["bh"]))
                info["body_hash_ok"], info["body_total"] = ok, total
                if not ok:
                    notes.append("body changed since this instance (bh mismatch)")
            except Exception:   # noqa: BLE001 - a hostile c= or bh= only loses the note
                pass
    name = f"{info['selector']}._domainkey.{info['domain']}".lower()
    if name in temperrors:
        notes.append(f"DNS temporary error for {name}, permanent per RFC 8617 §5.2.1")
    label = "AMS" if kind == "arc" else "AS"
    if valid is None:
        return SignatureResult(kind, Result.NONE, "; ".join([f"{label} not evaluated"] + notes), **info)
    if valid:
        return SignatureResult(kind, Result.PASS, "; ".join([f"{label} validates"] + notes), **info)
    return SignatureResult(kind, Result.FAIL, "; ".join([f"{label} does not validate"] + notes), **info)


def verify_arc(msg: RawMessage, raw: bytes | None, facts: Facts) -> ArcResult:
    """The ARC chain's validation (RFC 8617 §5.2) of ``msg`` (``raw``: its bytes, made
    from ``msg`` only when it has ARC fields when None)."""
    arc_fields = [f for f in msg.fields if f.name in ARC_FIELDS]
    if not arc_fields:
        return ArcResult("none", None, (), "no ARC sets")
    numbered: dict[int, dict[str, str]] = {}
    for f in arc_fields:
        i = _instance(f.text())
        if i is not None:
            numbered.setdefault(i, {}).setdefault(f.name, f.text())
    top = max(numbered, default=0)
    if top > MAX_SETS or len(numbered) > MAX_SETS or len(arc_fields) > 3 * MAX_SETS + 3:
        return ArcResult("fail", None, (), f"more than {MAX_SETS} ARC sets (RFC 8617 §4.2.1)")
    temperrors: list[str] = []
    try:
        verifier = dkimpy.ARC(msg.to_bytes() if raw is None else raw, minkey=1024)
        cv, results, comment = verifier.verify(dnsfunc=_dnsfunc(facts, temperrors))
        body = verifier.body
    except dkimpy.DKIMException as exc:
        return ArcResult("fail", None, (), f"ARC fields could not be read: {str(exc)[:120]}")
    except IndexError:
        # dkimpy's parser appends a continuation line to the previous field; with no
        # field before it, it fails with an IndexError (as in auth.dkim.open_message).
        return ArcResult("fail", None, (), "ARC fields could not be read: a continuation "
                                           "line comes before the first header field")
    by_instance = {r["instance"]: r for r in results}
    sets = []
    for i in sorted(numbered):
        fields, r = numbered[i], by_instance.get(i, {})
        ams = fields.get("arc-message-signature")
        seal = fields.get("arc-seal")
        sets.append(ArcSet(
            instance=i,
            ams=_describe("arc", ams, i, r.get("ams-valid"), body, temperrors) if ams else None,
            seal=_describe("arc-seal", seal, i, r.get("as-valid"), body, temperrors) if seal else None,
            cv=_cv_tag(seal),
        ))
    comment = str(comment)
    if temperrors:
        comment += f"; DNS temporary error for {', '.join(sorted(set(temperrors)))} " \
                   "(permanent per RFC 8617 §5.2.1)"
    if cv is None:
        return ArcResult("fail", None, tuple(sets), comment + " (RFC 8617 §5.2 step 2: fail)")
    if cv == dkimpy.CV_Pass:
        oldest = 0
        for r in results[1:]:          # instances N-1 down to 1
            if not r.get("ams-valid"):
                oldest = r["instance"] + 1
                break
        return ArcResult("pass", oldest, tuple(sets), comment)
    if cv == dkimpy.CV_None:
        return ArcResult("fail", None, tuple(sets), "ARC fields without a usable instance tag")
    return ArcResult("fail", None, tuple(sets), comment)


def _cv_tag(seal: str | None) -> str:
    if not seal:
        return ""
    try:
        return parse_tags(seal).get("cv", "").lower()[:10]
    except TagError:
        return ""
