"""Why one delivery failed: the first row of ``rules.RULES`` that matches.

``classify(status, diagnostic)`` takes what a bounce says about one recipient (the
enhanced status code, "" when there is none, and the receiver's text) and returns the
cause, whether the failure is permanent and the name of the row that decided, so
that a list admin can see why relist thinks a rejection was DMARC and not spam.

Permanent: the class of the enhanced code (RFC 3463 §3.1: 4 transient, 5 permanent),
else of the SMTP reply code the text starts with (RFC 5321 §4.2.1), else permanent (a
failure report that gives no code at all is a final one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from relist.core.bounce.rules import AUTHENTICATION, RULES, Cause, Rule

__all__ = ["AUTHENTICATION", "Cause", "Classification", "classify", "enhanced_codes"]

_ENHANCED = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?![\d.])")
# An SMTP reply code as it starts a reply line, with the enhanced code after it.
_REPLY = re.compile(r"(?<![\w.-])([245]\d\d)(?:[ -]+|$)(?:[245]\.\d{1,3}\.\d{1,3}(?![\d.])[ -]*)?")
_MAX_TEXT = 4096

_COMPILED: tuple[tuple[Rule, re.Pattern[str] | None, re.Pattern[str] | None], ...] = tuple(
    (rule, re.compile(rule.status) if rule.status else None,
     re.compile(rule.text, re.IGNORECASE) if rule.text else None) for rule in RULES)


@dataclass(frozen=True, slots=True)
class Classification:
    """The cause of one failed delivery, and which rule said so (``rules.Rule.name``)."""

    cause: Cause
    permanent: bool
    rule: str


def enhanced_codes(text: str) -> tuple[str, ...]:
    """The enhanced status codes (``5.7.26``) in ``text``, in order, without repeats."""
    return tuple(dict.fromkeys(_ENHANCED.findall(text)))


def _readable(diagnostic: str) -> str:
    """The receiver's text as one sentence: no reply codes, no line breaks."""
    text = " ".join(diagnostic[:_MAX_TEXT].replace("\u2019", "'").split())
    return " ".join(_REPLY.sub(" ", text).split())


def _permanent(status: str, diagnostic: str) -> bool:
    if status[:1] in ("4", "5", "2"):
        return status[:1] == "5"
    m = _REPLY.search(diagnostic.lstrip()[:16])
    return m is None or m.group(1)[0] == "5"


def classify(given_status: str | None, given_diagnostic: str | None) -> Classification:
    """Why the delivery failed (see the module doc and ``rules``); None: not given."""
    status = given_status.strip() if isinstance(given_status, str) else ""
    diagnostic = given_diagnostic if isinstance(given_diagnostic, str) else ""
    found = enhanced_codes(diagnostic[:_MAX_TEXT])
    codes = tuple(dict.fromkeys(((status,) if status else ()) + found))
    text = _readable(diagnostic)
    permanent = _permanent(status or (found[0] if found else ""), diagnostic)
    for rule, code_pattern, text_pattern in _COMPILED:
        if code_pattern is not None and not any(code_pattern.fullmatch(c) for c in codes):
            continue
        if text_pattern is not None and not text_pattern.search(text):
            continue
        return Classification(rule.cause, permanent, rule.name)
    raise AssertionError("rules.RULES ends with a row that matches everything")  # pragma: no cover
