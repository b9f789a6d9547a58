"""Verify a message as it arrived: every DKIM signature (up to the cap), DomainKeys,
the ARC chain and DMARC, into one ``Verdict``; and the DNS questions that needs."""

from __future__ import annotations

from datetime import datetime

from relist.core.verify import arc_verify as arc, dmarc, domainkeys
from relist.core.verify.dkim_verify import Checker, open_message, signature_question, verify_signature
from relist.core.verify.key_records import key_question
from relist.core.verify.results import Result, SignatureResult, Verdict
from relist.core.dkim.tags import TagError, parse_tags
from relist.core.facts import Facts, Question
from relist.core.message import RawMessage

__all__ = ["questions", "verify_message"]


def _dkim_fields(msg: RawMessage):
    return msg.get_all("dkim-signature")


def questions(msg: RawMessage, max_signatures: int, facts: Facts) -> set[Question]:
    """Every DNS name verification needs that ``facts`` may not answer yet."""
    wanted: set[Question] = set()
    domains = []
    for f in _dkim_fields(msg)[:max_signatures]:
        found = signature_question(f.value)
        if found is not None:
            wanted.add(key_question(*found))
            domains.append(found[1])
    for f in msg.get_all(domainkeys.FIELD)[:max_signatures]:
        found = signature_question(f.value)
        if found is not None:
            wanted.add(key_question(*found))
    wanted |= arc.key_questions(msg)
    wanted |= dmarc.questions(msg, facts, None, tuple(domains))
    return wanted


def _over_cap(value: bytes, index: int, cap: int) -> SignatureResult:
    try:
        tags = parse_tags(value)
    except TagError:
        tags = {}
    return SignatureResult("dkim", Result.POLICY,
                           f"not verified: over the limit of {cap} signatures per message",
                           index=index, domain=tags.get("d", "")[:255].lower(),
                           selector=tags.get("s", "")[:255], algorithm=tags.get("a", "")[:40].lower())


def verify_message(msg: RawMessage, facts: Facts, now: datetime, *, max_signatures: int = 10,
                   min_key_bits: int = 1024) -> Verdict:
    """The ``Verdict`` for ``msg`` with DNS from ``facts`` and time ``now``.  The message
    is read as split (``open_message``) and its body hashed through its ``body_memo``:
    no copy of a large post is made here (the ARC verifier, dkimpy's, takes bytes)."""
    fields = _dkim_fields(msg)
    results: list[SignatureResult] = []
    if fields:
        signer, error = open_message(msg)
        checker = Checker(facts=facts, now=int(now.timestamp()), min_key_bits=min_key_bits,
                          dkim=signer, dkim_error=error, memo=msg.body_memo())
        for index, f in enumerate(fields):
            if index >= max_signatures:
                results.append(_over_cap(f.value, index, max_signatures))
            else:
                results.append(verify_signature(f.value, index, checker))
    results.extend(domainkeys.verify_domainkeys(msg, facts, max_signatures))
    signatures = tuple(results)
    chain = arc.verify_arc(msg, None, facts)
    policy = dmarc.evaluate(msg, facts, signatures)
    return Verdict(signatures=signatures, arc=chain, dmarc=policy, from_domain=policy.domain)
