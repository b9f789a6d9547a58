"""Build one signed tag=value header field: shared by DKIM-Signature, ARC-Message-Signature
and ARC-Seal.

Folding (``fold``, dkimpy's algorithm), the b= tag handling (dkimpy's ``RE_BTAG``),
canonicalization and header selection (``relist.core.dkim.canon``) give the same bytes
as dkimpy's, so the field matches dkimpy's signer exactly (tests/test_sign_dkim.py);
the public-key operation is ``SigningKey.sign`` (OpenSSL through ``cryptography``),
which is where dkimpy spends its time (its RSA is pure Python).  Everything around it
is kept small so that a signature costs little more than its RSA operation
(bench/bench_sign.py): ``prepare`` parses a message once (or takes the pipeline's
``RawMessage`` split as it is) and hashes each body canonicalization once for all the
signatures made over it, and the field is folded once.  Across the two signing steps:
the sign step hands its prepared message on (``pass_on`` makes a ``Handoff`` that
travels in ``Known.handoff``), so that arc-seal's ``prepare`` of the signed message
reuses the split, the body hash and the covered fields instead of computing them
again (tests/test_sign_handoff.py).  No clock here: every timestamp is a parameter.
"""

from __future__ import annotations

import base64
import binascii
import functools
from dataclasses import dataclass
from typing import Iterable

from dkim import RE_BTAG

from relist.core.message import RawMessage
from relist.core.dkim import canon as _canon
from relist.core.dkim.canon import Canon, Header, index
from relist.core.sign.signing_keys import SigningKey

__all__ = ["Handoff", "Header", "Prepared", "SignError", "body_hash", "canon_policy", "check_values",
           "covered", "fold", "parse", "pass_on", "prepare", "signed_field", "signed_head"]

_B_PLACEHOLDER = b"0" * 60            # as dkimpy: forces b= onto its own folded line
_B_TAG = b"b=" + _B_PLACEHOLDER


class SignError(ValueError):
    """The message or the parameters cannot be signed (bad header line, bad tag value...)."""


def parse(message: bytes) -> tuple[list[Header], bytes]:
    """Header fields and CRLF body as dkimpy sees them (LF or CRLF input)."""
    try:
        return _canon.parse(message)
    except _canon.MessageFormatError as exc:
        raise SignError(f"cannot sign: {exc}") from None


class Prepared:
    """A message parsed once for signing (``prepare``): its header fields and CRLF body.
    Give it instead of the bytes to ``sign_dkim``, ``seal_arc`` and ``oversigned`` when
    several signatures go over the same message: it is parsed once, and each body
    canonicalization is hashed once (the same c= body gives the same bh=), each h=
    selected and canonicalized once.  Not a frozen dataclass: it is made on every
    signing path, and it fills in what it remembers (body hashes, h= values and
    selections, covered fields) as it goes; nothing else changes it."""

    __slots__ = ("headers", "body", "index", "unfolded", "selections", "split", "_bh",
                 "_covered", "_oversigned", "_canonical")

    def __init__(self, headers: list[Header], body: bytes, index: dict[bytes, list[int]],
                 unfolded: bool = False, split: RawMessage | None = None):
        self.headers = headers        # (name as written, value with CRLF line ends)
        self.body = body              # CRLF line ends
        self.index = index            # canon.index(headers): positions by lower-cased name
        self.unfolded = unfolded      # True: no field has a continuation line
        self.split = split            # the RawMessage whose fields these are, as they are
        # canon.selected(index, h) by h, filled in by oversigned() and covered()
        self.selections: dict[tuple[bytes, ...], list[int]] = {}
        self._bh: dict[str, bytes] = {}                                   # by c= body
        self._covered: dict[tuple[tuple[bytes, ...], str], bytes] = {}    # by (h, c= header)
        self._oversigned: dict[tuple[bytes, ...], tuple[bytes, ...]] = {}  # h= by names
        self._canonical: dict[int, bytes] = {}   # relaxed "name:value\r\n" by position

    def __repr__(self) -> str:
        return f"<Prepared {len(self.headers)} fields, {len(self.body)}-byte body>"

    def body_hash(self, canon: Canon) -> bytes:
        """bh= for ``canon``'s body canonicalization, computed on first use."""
        bh = self._bh.get(canon.body)
        if bh is None:
            # The message's body memo when it is this body: a hash the verifier made, or
            # one carried on past an appended footer (BodyMemo.appended), is not made again.
            memo = self.split.body_memo() if self.split is not None else None
            if memo is not None and memo.body is self.body:
                bh = base64.b64encode(memo.digest(canon.body, "sha256")[0])
            else:
                bh = body_hash(self.body, canon)
            self._bh[canon.body] = bh
        return bh


@dataclass(frozen=True, slots=True)
class Handoff:
    """A signing step's work handed to the next signing step (the sign step's to
    arc-seal's), as a value the step returns (``Known.handoff``): ``message`` is
    ``prepared``'s message with ``added`` fields prepended, ``canonical`` their relaxed
    canonical forms, top down (empty: not known).  ``prepare(message, handoff)`` then
    reuses the split and what was computed (body hashes; covered fields and h= values
    that do not involve the new fields' names): the same Prepared, only cheaper."""

    message: RawMessage
    prepared: Prepared
    added: int
    canonical: tuple = ()


def pass_on(before: Prepared, after: RawMessage, added: int, canonical: list | None = None) -> Handoff | None:
    """The :class:`Handoff` for ``after`` = ``before``'s message with ``added`` fields
    prepended (``RawMessage.prepend``), or None when there is nothing to reuse (``before``
    was not split from a ``RawMessage``, or nothing was added).  ``prepare`` checks the
    rest."""
    if before.split is None or added <= 0:
        return None
    return Handoff(after, before, added, tuple(canonical or ()))


def _prepended(before: Prepared, after: RawMessage, added: int,
               canonical: list | None = None) -> Prepared | None:
    """``_from_fields(after)`` made from ``before``, or None when ``after`` is not
    ``before.split`` with ``added`` CRLF-built fields prepended, each one a well-formed
    field as ``_from_fields`` would take it."""
    src = before.split
    if (src is None or after.body is not src.body or after.separator != src.separator
            or after.fields[added:] != src.fields):
        return None
    new: list[Header] = []
    for f in after.fields[:added]:
        m = _canon._CRLF_FIELDS.fullmatch(f.raw)
        if m is None:
            return None
        new.append((m[1], m[2]))
    headers = new + before.headers
    one_line = all([v.count(b"\n") == 1 for _, v in new])
    prepared = Prepared(headers, before.body, index(headers), before.unfolded and one_line, after)
    prepared._bh.update(before._bh)
    names = {n.lower() for n, _ in new}   # what selects none of the new fields is as it was
    prepared._covered.update([(k, v) for k, v in before._covered.items() if names.isdisjoint(k[0])])
    prepared._oversigned.update([(k, v) for k, v in before._oversigned.items() if names.isdisjoint(k)])
    if canonical and len(canonical) == added:
        prepared._canonical.update([(i, c) for i, c in enumerate(canonical) if c is not None])
    return prepared


def prepare(message: bytes | RawMessage | Prepared, handoff: Handoff | None = None) -> Prepared:
    """``message`` parsed for signing (SignError when a header line is malformed).
    A ``RawMessage`` (the pipeline's) is taken as split into fields when that split is
    the one dkimpy makes of its bytes (``_from_fields``), else parsed from its bytes;
    one that a signing step handed on (``handoff``, from ``pass_on``) is taken from what
    it prepared."""
    if isinstance(message, Prepared):
        return message
    if isinstance(message, RawMessage):
        if handoff is not None and handoff.message is message:
            prepared = _prepended(handoff.prepared, message, handoff.added, list(handoff.canonical))
            if prepared is not None:
                return prepared
        split = _from_fields(message)
        if split is not None:
            return Prepared(*split, message)
        message = message.to_bytes()
    headers, body = parse(message)
    unfolded = b"".join([v for _, v in headers]).count(b"\n") == len(headers)
    return Prepared(headers, body, _canon.index(headers), unfolded)


def _from_fields(msg: RawMessage) -> tuple[list[Header], bytes, dict[bytes, list[int]], bool] | None:
    """``parse(msg.to_bytes())`` and its index, from the fields as ``RawMessage`` split
    them (``RawMessage.dkim_split``), or None when that is not certainly the same."""
    split = msg.dkim_split()
    if split is None:
        return None
    headers, body, unfolded = split
    return headers, body, index(headers), unfolded


@functools.lru_cache(maxsize=8)
def canon_policy(c: str) -> Canon:
    try:
        return Canon.from_c(c)
    except ValueError:
        raise SignError(f"canonicalization {c!r}: expected HEADER/BODY, each simple or relaxed") from None


def body_hash(body: bytes, canon: Canon) -> bytes:
    """bh= (RFC 6376 §3.7): base64 SHA-256 of the canonical body, never truncated (no l=)."""
    return base64.b64encode(_canon.body_digest(body, canon.body, "sha256")[0])


def covered(message: Prepared, names: tuple[bytes, ...], canon: Canon) -> bytes:
    """The fields that h= ``names`` selects, bottom-up per name (RFC 6376 §5.4.2),
    canonical and joined as they are hashed (remembered per h= and c= header).  An h=
    that is one already done plus a run of a name not in it (the AMS h=: the DKIM h=
    and each DKIM-Signature) is that one's bytes plus the run's: selection is by runs
    of one name, and canonicalization field by field."""
    key = (names, canon.header)
    memo = message._covered
    done = memo.get(key) if memo else None
    if done is not None:
        return done
    before, j = None, len(names) - 1
    if memo and names:
        last = names[-1]
        while j and names[j - 1] == last:
            j -= 1
        before = memo.get((names[:j], canon.header)) if j else None
        if before is not None and last in names[:j]:
            before = None
    if before is not None:
        done = before + _hash_input(message, names[j:], canon)
    else:
        done = _hash_input(message, names, canon)
    memo[key] = done
    return done


def _hash_input(message: Prepared, names: tuple[bytes, ...], canon: Canon) -> bytes:
    picked = message.selections.get(names)
    if picked is None:
        picked = message.selections[names] = _canon.selected(message.index, names)
    if message._canonical and canon.header == "relaxed":   # fields a signer made
        known = message._canonical
        if all([i in known for i in picked]):
            return b"".join([known[i] for i in picked])
    headers = message.headers
    return canon.hash_input([headers[i] for i in picked], message.unfolded)


def fold(header: bytes, namelen: int = 0) -> bytes:
    """dkimpy's ``fold`` (same bytes, tests/test_sign_canon.py compares them): lines of
    at most 72 characters counting the field name and colon (``namelen`` + 1), later
    lines 71 after the leading space, broken at the last space that fits, or hard where
    there is none inside b=, bh= or z= (see ``_wrap`` for a long d= or i=); whatever is
    already folded (up to the last CRLF SP) stays."""
    maxleng = 72 - namelen
    if len(header) <= maxleng:
        return header
    if len(header) - header.rfind(b"\r\n") == 2 and len(header) <= maxleng + 2:
        return header
    i = header.rfind(b"\r\n ")
    if i == -1:
        return _wrap(header, maxleng)
    return header[:i + 3] + _wrap(header, maxleng, i + 3)   # (the tags before i: see _wrap)


# Tags whose value a verifier reads with its white space removed (RFC 6376 §3.5: b=
# and bh= are base64 with FWS ignored, z= is dkim-quoted-printable, where FWS is
# ignored too): only these may be broken where no space fits.
_BREAKABLE = (b"b", b"bh", b"z")


def _breakable_at(header: bytes, pos: int) -> bool:
    """Whether the tag value that ends the text before ``pos`` (in a ``t=v; t=v`` list,
    its own ';' included) may be broken at ``pos``."""
    tag = header[header.rfind(b";", 0, pos - 1) + 1:pos].lstrip()
    name, eq, _ = tag.partition(b"=")
    return bool(eq) and name.strip() in _BREAKABLE


def _wrap(header: bytes, maxleng: int, start: int = 0) -> bytes:
    """The folding loop of ``fold``: first line ``maxleng``, then 71; a line ends at
    the last space that fits (which the fold replaces), else after ``maxleng`` inside
    b=, bh= or z=.  Elsewhere (a d= or i= longer than a line) dkimpy would break the
    domain itself, and the signature would not verify (not even with dkimpy): the
    line runs on to the next space instead (RFC 5322 allows 998 characters).  Only
    ``header[start:]`` is wrapped; what comes before tells which tag a position is in."""
    lines = []
    end = len(header)
    while end - start > maxleng:
        i = header.rfind(b" ", start, start + maxleng)
        if i >= 0:
            lines.append(header[start:i])
            start = i + 1
        elif _breakable_at(header, start + maxleng):
            lines.append(header[start:start + maxleng])
            start += maxleng
        else:
            i = header.find(b" ", start + maxleng)
            if i < 0:
                break
            lines.append(header[start:i])
            start = i + 1
        maxleng = 71
    lines.append(header[start:])
    return b"\r\n ".join(lines)


def check_values(tags: Iterable[tuple[bytes, bytes]]) -> None:
    """SignError naming the first tag whose value has ';' (RFC 6376 §3.2) or a CR or
    LF (the value is folded here)."""
    values = b"".join([v for _, v in tags])
    if b";" in values or b"\r" in values or b"\n" in values:
        bad = next(t for t, v in tags if b";" in v or b"\r" in v or b"\n" in v)
        raise SignError(f"{bad.decode()}= value contains ';' or a line break")


def signed_head(name: bytes, head: bytes, signed: bytes, canon: Canon, key: SigningKey,
                canonical: list | None = None) -> bytes | None:
    """``signed_field`` in the usual case, b= last: ``head`` is the tags before it as
    ``t=v; `` each (values checked: no ';', no CR or LF), ``signed`` the covered fields
    joined.  None when b= does not come out alone on the last folded line (then
    ``signed_field`` does it the long way).

    The long placeholder puts b= alone on its line; then the lines above fold the
    same with the real value (no space in it either), and fold's loop goes on from
    there with 71-character lines, so the field is folded once, not twice.

    ``canonical``: a list to which the relaxed canonical form of the field returned
    is appended, as hashed (``b"name:value\\r\\n"``), or None when it is not known
    without canonicalizing the field (see ``plain`` below)."""
    flat = head + _B_TAG
    value = fold(flat, len(name))
    if not value.endswith(b"\r\n " + _B_TAG):
        return None
    # folding only turned spaces into CRLF SP (each break 2 bytes more; a hard break
    # would be 3): the relaxed canonical field is the unfolded one, which has no
    # whitespace run to reduce
    plain = ((canon.header == "relaxed" or canonical is not None)
             and b"\t" not in head and b"  " not in head
             and len(value) - len(flat) == 2 * value.count(b"\r\n"))
    if plain and canon.header == "relaxed":
        field = name.lower() + b":" + (head + b"b=").strip()
    else:
        (cname, cvalue), = canon.headers([(name, b" " + value[:-len(_B_PLACEHOLDER)] + b"\r\n")])
        field = cname + b":" + cvalue.rstrip()
    tail = b"b=" + binascii.b2a_base64(key.sign(signed + field), newline=False) + b"\r\n"
    # = _wrap(tail, 71): base64 has no space, so every line is 71 characters
    lines = [tail[i:i + 71] for i in range(0, len(tail), 71)]
    if canonical is not None:   # unfolded: each line break leaves its space
        canonical.append(name.lower() + b":" + (head + b" ".join(lines)[:-2]).strip() + b"\r\n"
                         if plain and len(lines[-1]) >= 2 else None)
    return name + b": " + value[:-len(_B_TAG)] + b"\r\n ".join(lines)


def signed_field(name: bytes, tags: list[tuple[bytes, bytes]], signed: list[Header] | bytes,
                 canon: Canon, key: SigningKey,
                 standardize: bool = False, canonical: list | None = None) -> bytes:
    """``Name: tags\\r\\n`` with b= filled in (RFC 6376 §3.7, RFC 8617 §5.1.1).

    ``tags`` in output order, one of them ``(b"b", anything)``; ``signed`` the canonical
    fields covered, in hash order (or ``covered()``: them joined).  The field itself is
    hashed last, canonicalized, with an empty b= and no trailing CRLF.  ``standardize``
    gives the ARC test suite's fixed form (tags sorted and lower-cased, no folding),
    for conformance tests only.  ``canonical``: as ``signed_head``'s.
    """
    if not isinstance(signed, bytes):
        signed = b"".join([n + b":" + v for n, v in signed])
    if not standardize and tags[-1][0] == b"b":
        head = b"".join([t + b"=" + v + b"; " for t, v in tags[:-1]])
        if head.count(b";") != len(tags) - 1 or b"\r" in head or b"\n" in head:
            check_values(tags)   # raises, naming the tag
        field = signed_head(name, head, signed, canon, key, canonical)
        if field is not None:
            return field
    if canonical is not None:
        canonical.append(None)
    fields = [(t, _B_PLACEHOLDER if t == b"b" else v) for t, v in tags]
    if standardize:
        fields = sorted(((t, v if t == b"bh" else v.lower().replace(b" ", b"")) for t, v in fields),
                        key=lambda tv: tv[0])
    flat = b"; ".join([t + b"=" + v for t, v in fields])
    if flat.count(b";") != len(fields) - 1 or b"\r" in flat or b"\n" in flat:
        check_values(tags)   # raises, naming the tag
    value = flat if standardize else fold(flat, len(name))
    # empty b= for hashing (RFC 6376 §3.7), as dkimpy empties it
    (cname, cvalue), = canon.headers([(name, b" " + RE_BTAG.sub(b"\\1", value) + b"\r\n")])
    signature = base64.b64encode(key.sign(signed + cname + b":" + cvalue.rstrip()))
    fields = [(t, signature if t == b"b" else v) for t, v in fields]
    value = b"; ".join([t + b"=" + v for t, v in fields]) + b"\r\n"
    if not standardize:
        value = fold(value, len(name))
    return name + b": " + value
