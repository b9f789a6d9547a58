"""Verification results as values: one ``SignatureResult`` per signature, the ARC
chain's ``ArcResult``, the ``DmarcResult`` and the ``Verdict`` that holds them.

Result words are those of RFC 8601 §2.7 (dkim: none, pass, fail, policy, neutral,
temperror, permerror; dmarc: none, pass, fail, temperror, permerror) and RFC 8617
§4.4 for the ARC chain (none, fail, pass).  ``reason`` is human text that says why.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Any, cast

__all__ = [
    "Alignment", "ArcResult", "ArcSet", "DmarcResult", "Result", "SignatureResult", "Verdict",
]


class Result(enum.StrEnum):
    """RFC 8601 §2.7.1 result words."""

    PASS = "pass"
    FAIL = "fail"
    NEUTRAL = "neutral"      # could not be processed (unknown a=, c=, q=): RFC 6376 says ignore
    TEMPERROR = "temperror"  # DNS could not answer now
    PERMERROR = "permerror"  # malformed signature or unusable key: unrecoverable
    POLICY = "policy"        # not evaluated by local policy (over the signature cap)
    NONE = "none"


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


class _AsDict:
    __slots__ = ()

    def as_dict(self) -> dict[str, Any]:
        # (every _AsDict is a dataclass; the type checker cannot know it of a mixin)
        return {f.name: _plain(getattr(self, f.name)) for f in fields(cast(Any, self))}


@dataclass(frozen=True, slots=True)
class SignatureResult(_AsDict):
    """One DKIM-Signature, ARC-Message-Signature, ARC-Seal or DomainKey-Signature."""

    kind: str                          # "dkim" | "arc" (AMS) | "arc-seal" | "dk"
    result: Result
    reason: str
    domain: str = ""                   # d=
    selector: str = ""                 # s=
    algorithm: str = ""                # a=
    canonicalization: str = ""         # c= as header/body, defaults filled in
    headers: tuple[str, ...] = ()      # h=, lower-cased
    body_length: int | None = None     # l=
    body_total: int | None = None      # canonical body length, to say how much l= covers
    identity: str = ""                 # i= (DKIM AUID; for DK the Sender/From address)
    key_bits: int | None = None
    key_testing: bool = False          # key record t=y (RFC 6376 §3.6.1)
    body_hash_ok: bool | None = None   # None: not computed
    header_hash_ok: bool | None = None
    b: str = ""                        # b= without white space (AR header.b)
    instance: int | None = None        # ARC i=
    timestamp: int | None = None       # t=
    expiration: int | None = None      # x=
    index: int = 0                     # position among fields of its kind, top first

    @property
    def passed(self) -> bool:
        return self.result == Result.PASS

    def summary(self) -> str:
        who = f"d={self.domain} s={self.selector}" if self.domain else "(unparsed)"
        return f"{self.kind} {who}: {self.result} ({self.reason})"


@dataclass(frozen=True, slots=True)
class ArcSet(_AsDict):
    """One ARC set (RFC 8617 §4.2): its AMS and AS results and the cv the AS claims."""

    instance: int
    ams: SignatureResult | None
    seal: SignatureResult | None
    cv: str = ""                       # the cv= tag of this set's ARC-Seal


@dataclass(frozen=True, slots=True)
class ArcResult(_AsDict):
    """RFC 8617 §5.2 chain validation."""

    cv: str = "none"                   # "pass" | "fail" | "none"
    oldest_pass: int | None = None     # RFC 8617 §5.2 step 5; 0 = every AMS still validates
    sets: tuple[ArcSet, ...] = ()
    reason: str = "no ARC sets"

    @property
    def instances(self) -> int:
        return max((s.instance for s in self.sets), default=0)


@dataclass(frozen=True, slots=True)
class Alignment(_AsDict):
    """DMARC identifier alignment of one passing DKIM signature (RFC 9989 §4.4.1)."""

    domain: str
    selector: str
    mode: str                          # "relaxed" | "strict"
    aligned: bool | None               # None: could not be decided (DNS)
    org_domain: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class DmarcResult(_AsDict):
    result: str = "none"               # none | pass | fail | temperror | permerror
    domain: str = ""                   # RFC5322.From domain (Author Domain)
    policy_domain: str = ""            # where the applied record was found
    org_domain: str = ""               # Author Domain's Organizational Domain (RFC 9989 §4.10.2)
    record: str = ""                   # the applied record's text
    policy: str = ""                   # none | quarantine | reject: the one that applies
    policy_tag: str = ""               # which tag gave it: p | sp | np
    testing: bool = False              # t=y (RFC 9989 §4.7)
    pct: int | None = None             # historic pct= if the record still has it (not applied)
    adkim: str = "r"
    alignment: tuple[Alignment, ...] = ()
    reason: str = ""
    queries: int = 0                   # DMARC DNS queries the tree walk made for the author domain

    @property
    def effective_policy(self) -> str:
        """The policy after t=y (RFC 9989 §4.7: one level lower)."""
        if not self.testing:
            return self.policy
        return {"reject": "quarantine", "quarantine": "none"}.get(self.policy, self.policy)


@dataclass(frozen=True, slots=True)
class Verdict(_AsDict):
    """Everything verification found about a message as it arrived."""

    signatures: tuple[SignatureResult, ...] = ()   # DKIM then DomainKeys, top first
    arc: ArcResult = field(default_factory=ArcResult)
    dmarc: DmarcResult = field(default_factory=DmarcResult)
    from_domain: str = ""

    @property
    def dkim(self) -> tuple[SignatureResult, ...]:
        return tuple(s for s in self.signatures if s.kind == "dkim")

    @property
    def domainkeys(self) -> tuple[SignatureResult, ...]:
        return tuple(s for s in self.signatures if s.kind == "dk")

    def passing(self, kind: str = "dkim") -> tuple[SignatureResult, ...]:
        return tuple(s for s in self.signatures if s.kind == kind and s.passed)

    def check_dict(self) -> dict[str, Any]:
        """The short form for ``relist check --json``."""
        return {
            "signatures": [
                {"kind": s.kind, "domain": s.domain, "selector": s.selector,
                 "algorithm": s.algorithm, "result": str(s.result), "reason": s.reason}
                for s in self.signatures
            ],
            "dmarc": {"result": self.dmarc.result, "domain": self.dmarc.domain,
                      "policy": self.dmarc.policy, "testing": self.dmarc.testing,
                      "reason": self.dmarc.reason},
            "arc": {"cv": self.arc.cv, "oldest_pass": self.arc.oldest_pass,
                    "reason": self.arc.reason},
        }

    def summary(self) -> str:
        dk = ", ".join(f"{s.kind}={s.result}({s.domain})" for s in self.signatures) or "dkim=none"
        return f"{dk}; arc={self.arc.cv}; dmarc={self.dmarc.result}"
