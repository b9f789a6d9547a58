"""Authentication-Results (RFC 8601): read the authserv-id of incoming fields and
write relist's own field from a ``Verdict``.

Written by hand rather than through ``authres`` so that comments such as
``(2048-bit key)`` survive (authres drops comments) and every value that comes
from the message (d=, s=, b=, reasons) is made safe: a token when it is one, a
quoted-string otherwise, comments stripped of parentheses and control characters.
"""

from __future__ import annotations

import re

from relist.core.verify.results import Result, SignatureResult, Verdict

__all__ = ["B_CHARS", "authserv_id", "build_value"]

B_CHARS = 12          # RFC 6008 §4: header.b carries at least 8 characters of b=
_TOKEN = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+$")   # RFC 2045 token
_DOMAIN = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_COMMENT_BAD = re.compile(r"[()\\\x00-\x1f\x7f]")


def authserv_id(value: str) -> str:
    """The authserv-id of an Authentication-Results value ('' if there is none)."""
    text = value.strip()
    while text.startswith("("):            # leading comments, possibly nested
        depth, i = 0, 0
        for i, ch in enumerate(text):
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
                if depth == 0:
                    break
        text = text[i + 1:].lstrip()
    if text.startswith('"'):
        end = text.find('"', 1)
        return text[1:end].lower() if end > 0 else ""
    m = re.match(r"[^\s;()]+", text)
    return m.group(0).lower() if m else ""


def _value(text: str) -> str:
    if _TOKEN.match(text):
        return text
    return '"' + _CONTROL.sub("", text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _comment(text: str, limit: int = 120) -> str:
    text = _COMMENT_BAD.sub("", text).strip()[:limit]
    return f" ({text})" if text else ""


def _reason(text: str) -> str:
    clean = _CONTROL.sub("", text)[:160]
    return f" reason={_value(clean)}"


def _domain(text: str) -> str:
    return text if _DOMAIN.match(text or "") else _value(text)


def _signature(s: SignatureResult) -> str:
    method = "domainkeys" if s.kind == "dk" else "dkim"
    out = f"{method}={s.result}"
    if s.result == Result.PASS:
        note = f"{s.key_bits}-bit key" if s.key_bits else ""
        if s.key_testing:
            note += "; testing"
        if s.body_length is not None:
            note += f"; l={s.body_length}"
        out += _comment(note)
    else:
        out += _reason(s.reason)
    if s.domain:
        out += f" header.d={_domain(s.domain)}"
    if s.selector:
        out += f" header.s={_domain(s.selector)}"
    if s.kind == "dkim" and s.identity and s.identity != f"@{s.domain}":
        out += f" header.i={_value(s.identity)}"
    if s.algorithm and s.kind == "dkim":
        out += f" header.a={_value(s.algorithm)}"
    if s.b:
        out += f" header.b={_value(s.b[:B_CHARS])}"
    return out


def build_value(authserv: str, verdict: Verdict) -> str:
    """The value of relist's Authentication-Results field, folded with CRLF TAB."""
    parts: list[str] = []
    policy_skipped = [s for s in verdict.signatures if s.result == Result.POLICY]
    for s in verdict.signatures:
        if s.result != Result.POLICY:
            parts.append(_signature(s))
    if policy_skipped:
        skipped_reason = f"{len(policy_skipped)} more signature(s) not verified: over the limit"
        parts.append(f"dkim=policy{_reason(skipped_reason)}")
    if not verdict.dkim:
        parts.append("dkim=none")
    a = verdict.arc
    if a.cv == "pass":
        parts.append(f"arc=pass{_comment(f'i={a.instances}')} header.oldest-pass={a.oldest_pass or 0}")
    elif a.cv == "fail":
        parts.append(f"arc=fail{_reason(a.reason)}")
    else:
        parts.append("arc=none")
    d = verdict.dmarc
    entry = f"dmarc={d.result}"
    if d.policy:
        note = f"p={d.policy}" + (f" via {d.policy_tag}" if d.policy_tag not in ("", "p") else "")
        if d.testing:
            note += " t=y"
        if d.policy_domain and d.policy_domain != d.domain:
            note += f"; record at {d.policy_domain}"
        entry += _comment(note)
    if d.result not in ("pass",) and d.reason:
        entry += _reason(d.reason)
    if d.domain:
        entry += f" header.from={_domain(d.domain)}"
    parts.append(entry)
    return f"{_value(authserv)};\r\n\t" + ";\r\n\t".join(parts)
