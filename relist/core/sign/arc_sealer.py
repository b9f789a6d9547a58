"""ARC sealing (RFC 8617 §5.1): add the next ARC set (AAR, AMS, AS) to a message.

The chain validation status ``cv`` comes from the caller (relist's own verification of
the incoming chain), never from an Authentication-Results field in the message: a
poster could forge ``arc=pass`` there.  Likewise the AAR payload is the caller's own
results text (comments kept), not Authentication-Results re-read from the message.

Rules applied here (each a reason when no set is added):
* the newest existing ARC-Seal says cv=fail: the chain is over, do not seal (§5.1 step 2);
* there are already 50 sets: i=51 is not allowed (§4.2.1);
* an ARC field belongs to no set numbered 1 to 50 (no readable i=, or i=0): verifiers
  disagree on where it goes, so no new set could validate for all of them (§4.2.1);
* i=1 must carry cv=none, i>1 pass or fail (§4.1.3, §5.2 step 3);
* cv=fail: the new ARC-Seal covers only the new set (§5.1.2).
Call this last, after DKIM signing: the default AMS h= covers the DKIM-Signature fields
present (§4.1.2 SHOULD) and never Authentication-Results or ARC-* fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

from relist.core.message import clean_text
from relist.core.sign.dkim_signer import _DEFAULT_B, NEVER_SIGN, h_names, oversigned
from relist.core.sign.signing_keys import RSA, SigningKey
from relist.core.sign.signature import (
    Header, Prepared, SignError, canon_policy, covered, prepare, signed_field,
)

__all__ = ["MAX_INSTANCE", "Seal", "SignError", "arc_sets", "seal_arc"]

MAX_INSTANCE = 50  # RFC 8617 §4.2.1
_ARC = (b"arc-authentication-results", b"arc-message-signature", b"arc-seal")  # hash order
_INSTANCE = re.compile(rb"(?:^|;)\s*i\s*=\s*(\d+)\s*(?:;|$)")
_CV = re.compile(rb"(?:^|;)\s*cv\s*=\s*([A-Za-z]+)\s*(?:;|$)")
_COMMENT = re.compile(r"\((?:[^()\\]|\\.)*\)")
_ARC_RESULT = re.compile(r"(?:^|;)\s*arc\s*=\s*([A-Za-z]+)")
_NEVER_AMS = frozenset(n.encode("ascii") for n in NEVER_SIGN - {"dkim-signature"})


@dataclass(frozen=True, slots=True)
class Seal:
    """The new ARC set as fields to prepend, in order (ARC-Seal, ARC-Message-Signature,
    ARC-Authentication-Results), each CRLF-terminated; empty with ``reason`` when not sealed."""

    fields: tuple[bytes, ...]
    instance: int = 0
    cv: str = ""
    reason: str = ""

    @property
    def sealed(self) -> bool:
        return bool(self.fields)


def arc_sets(headers: list[Header]) -> dict[int, dict[bytes, list[Header]]]:
    """Existing ARC fields grouped by instance, relaxed-canonicalized (RFC 8617 §4.2).
    Instance 0 holds the fields of no set: i=0, or no i= relist can read (``i=0(``,
    ``i=1x``).  dkimpy reads the digits at the start of any i= and hashes such a field
    into the seal of set 1, where relist's strict reading leaves it out."""
    relaxed = canon_policy("relaxed/relaxed")
    sets: dict[int, dict[bytes, list[Header]]] = {}
    for name, value in relaxed.headers([h for h in headers if h[0].lower().rstrip() in _ARC]):
        m = _INSTANCE.search(value.strip())
        sets.setdefault(int(m.group(1)) if m else 0, {}).setdefault(name, []).append((name, value))
    return sets


def _aar_value(instance: int, authserv_id: str, results: str) -> tuple[bytes, bytes]:
    """``i=N; authserv-id;`` then the results, one per line as written (RFC 8617 §4.1.1);
    and the same on one line, with a space for each line break.  Relaxed
    canonicalization gives both the same bytes (unfolding and reducing the whitespace
    run between two parts, neither of which starts or ends with whitespace, leaves one
    space), and the one-line form usually without regex work.  Each line is cleaned as
    a field relist writes (``clean_text``: a byte that was not UTF-8 in what the
    poster sent, here as a surrogate, becomes U+FFFD, as in Authentication-Results)."""
    lines = [clean_text(ln)[0].strip() for ln in results.replace("\r\n", "\n").split("\n")]
    parts = [ln for ln in lines if ln] or ["none"]  # RFC 8601 §2.2: no results
    head = f"i={instance}; {authserv_id};"
    return ("\r\n    ".join([head, *parts]).encode("utf-8"),
            " ".join([head, *parts]).encode("utf-8"))


def seal_arc(message: bytes | Prepared, *, domain: str, selector: str, key: SigningKey, authserv_id: str,
             cv: str, results: str, now: datetime, headers: Iterable[str | bytes] | None = None,
             standardize: bool = False) -> Seal:
    """The next ARC set for ``message`` (RFC 8617 §5.1), or no set with the reason.

    ``cv`` ("none" | "pass" | "fail") is relist's own validation of the existing chain;
    ``results`` the AAR payload (relist's own Authentication-Results text, without the
    authserv-id; comments kept).  ``headers``: None for the default AMS h= (the DKIM
    list oversigned, plus each DKIM-Signature present); otherwise h= exactly as given.
    ``standardize``: the ARC test suite's fixed header form (conformance tests only).
    ``message`` may be ``prepare(message)`` (parsed once, see ``sign_dkim``).
    """
    cv = cv.lower()
    if cv not in ("none", "pass", "fail"):
        raise SignError(f"cv = {cv!r}: expected none, pass or fail")
    if key.algorithm != RSA:
        raise SignError(f"ARC signs with rsa-sha256 only (RFC 8617 §4.1.3), not {key.algorithm}")
    if now.tzinfo is None:
        raise SignError("now must be timezone-aware")
    claimed = {m.lower() for m in _ARC_RESULT.findall(_COMMENT.sub("", results))}
    if claimed and claimed != {cv}:
        raise SignError(f"results say arc={'/'.join(sorted(claimed))} but cv={cv}")
    msg = prepare(message)
    raw = msg.headers
    # (a prepared message's names have no space before the colon: its index has them all)
    sets = arc_sets(raw) if any([n in msg.index for n in _ARC]) else {}
    if 0 in sets:
        unnumbered = sum([len(fields) for fields in sets[0].values()])
        return Seal((), 0, cv, f"{unnumbered} ARC field(s) without a valid instance (i=1 to "
                               f"{MAX_INSTANCE}, RFC 8617 §4.2.1): verifiers do not agree on "
                               "which set such a field belongs to, so a new set would validate "
                               "for some and fail for others; no new set")
    newest = max(sets, default=0)
    if newest:
        seals = sets[newest].get(b"arc-seal", [])
        m = _CV.search(seals[-1][1].strip()) if seals else None
        if m is not None and m.group(1).lower() == b"fail":
            return Seal((), 0, cv, f"the newest ARC-Seal (i={newest}) says cv=fail: "
                                   "the chain is over, no new set (RFC 8617 §5.1)")
        if newest >= MAX_INSTANCE:
            return Seal((), 0, cv, f"the chain already has {newest} sets; "
                                   f"at most {MAX_INSTANCE} are allowed (RFC 8617 §4.2.1)")
        if cv == "none":
            return Seal((), 0, cv, f"cv=none but the message has an ARC chain (i={newest}); "
                                   "i>1 needs pass or fail (RFC 8617 §5.2)")
    elif cv != "none":
        return Seal((), 0, cv, f"cv={cv} but the message has no ARC chain; "
                               "i=1 must carry cv=none (RFC 8617 §4.1.3)")
    instance = newest + 1
    relaxed = canon_policy("relaxed/relaxed")
    if headers is None:
        dkim_sigs = len(msg.index.get(b"dkim-signature", ()))
        h = oversigned(_DEFAULT_B, msg) + (b"dkim-signature",) * dkim_sigs
    else:
        h = h_names(tuple(headers))
    if not _NEVER_AMS.isdisjoint(h):
        bad = sorted(n.decode() for n in _NEVER_AMS.intersection(h))
        raise SignError(f"AMS h= must not include {', '.join(bad)} (RFC 8617 §4.1.2)")
    if b"from" not in h:
        raise SignError("AMS h= must include From (RFC 6376 §5.4)")
    d, s = domain.lower().rstrip(".").encode("ascii"), selector.encode("ascii")
    t = str(int(now.timestamp())).encode("ascii")
    i = str(instance).encode("ascii")

    aar_value, aar_line = _aar_value(instance, authserv_id, results)
    aar = b"ARC-Authentication-Results: " + aar_value + b"\r\n"
    ams_canon: list = []   # the AMS as the seal hashes it, when signed_field knows it
    ams = signed_field(b"ARC-Message-Signature", [
        (b"i", i), (b"a", b"rsa-sha256"), (b"c", b"relaxed/relaxed"), (b"d", d), (b"s", s),
        (b"t", t), (b"h", b" : ".join(h)), (b"bh", msg.body_hash(relaxed)), (b"b", b""),
    ], covered(msg, h, relaxed), relaxed, key, standardize, canonical=ams_canon)

    chain: list[Header] = []
    if cv != "fail":  # §5.1.2: a failed chain is not carried into the new seal
        for n in sorted(sets):
            for name in _ARC:
                chain += sets[n].get(name, [])
    new = [(b"ARC-Authentication-Results", b" " + aar_line + b"\r\n")]
    if ams_canon[0] is None:
        name, _, value = ams.partition(b":")
        new.append((name, value))
    signed = b"".join([n + b":" + v for n, v in chain + relaxed.headers(new)])
    if ams_canon[0] is not None:
        signed += ams_canon[0]
    seal = signed_field(b"ARC-Seal", [
        (b"i", i), (b"cv", cv.encode("ascii")), (b"a", b"rsa-sha256"), (b"d", d), (b"s", s),
        (b"t", t), (b"b", b""),
    ], signed, relaxed, key, standardize)
    return Seal((seal, ams, aar), instance, cv)
