"""Message authentication, pure: DKIM (RFC 6376/8301/8463), ARC (RFC 8617), DMARC
(RFC 9989, DKIM only), DomainKeys (RFC 4870, informational) and the
Authentication-Results field (RFC 8601).  DNS comes in as ``Facts``, time as a
datetime; see docs/verification.md."""

from relist.core.verify.authresults import authserv_id, build_value
from relist.core.verify.results import (
    Alignment, ArcResult, ArcSet, DmarcResult, Result, SignatureResult, Verdict,
)
from relist.core.verify.verdict import questions, verify_message

__all__ = [
    "Alignment", "ArcResult", "ArcSet", "DmarcResult", "Result", "SignatureResult", "Verdict",
    "authserv_id", "build_value", "questions", "verify_message",
]
