"""Guard and attribution: what each byte-changing step does to the poster's signatures.

``guarded(step)`` wraps a pipeline step.  It runs the step, and when the step changed
bytes that one of the poster's signatures covers (a header field named in its h=, the
body, or the signature field itself) it re-verifies that signature over the new bytes
with the keys already in ``ctx.facts`` (no new DNS):

* preserve mode: a step that would break a signature is not applied; the step is
  recorded as skipped with the reason ("footer skipped: would break
  poster.example/s1 (body hash)");
* otherwise the step is applied and the first step that broke each signature is
  recorded in ``known.breakage`` (and appended to that step's note).

``attributed(step)`` records the same but never undoes the step, in preserve mode
too: DMARC mitigation acts only when no aligned signature survives anyway, and strip
removes only what is already broken (or what resign's ``strip = "all"`` asks for).

Only signatures that verified on arrival (``known.verdict``) and are still intact
are tracked (``known.intact``: their b= values), and only they are re-verified, only
when a step changed bytes they cover: a field outside every h= costs nothing.  A
change outside an l= body length keeps the signature valid; it is recorded as a
known risk (RFC 6376 §8.2: content outside l= is unsigned).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from relist.core.verify.dkim_verify import Checker, open_message, verify_signature
from relist.core.verify.results import Result, SignatureResult
from relist.core.dkim import canon
from relist.core.dkim.tags import TagError, b_chars, parse_tags
from relist.core.memo import small_lru_cache
from relist.core.message import HeaderField, RawMessage
from relist.core.model import Action, Context, StepNote, Work, replace

__all__ = ["UNGUARDED", "aligned_passing", "arrival_valid", "attributed", "oversigning", "b_value",
           "catch_up", "changed_fields", "covers_change", "guarded", "label", "recheck", "same_body",
           "same_header_input", "surviving", "track", "why_broken"]

MAILMAN = "mailman"          # attribution: broken before relist saw it again (egress leg)
UNGUARDED = "unguarded step"  # attribution: broken by a step outside the guard (downgrade)
_BREAK_NOT_FOLD = re.compile(rb"\n(?![ \t])")


def label(sig: SignatureResult) -> str:
    """How a signature is named in notes: ``d/s``."""
    return f"{sig.domain}/{sig.selector}"


def arrival_valid(known) -> tuple[SignatureResult, ...]:
    """The DKIM signatures that verified when the post arrived (the verify step)."""
    return known.verdict.passing("dkim") if known.verdict is not None else ()


def b_value(field: HeaderField) -> str | None:
    """A DKIM-Signature field's b= without white space (None when unreadable)."""
    return _b_of(field.raw)


@small_lru_cache(512, 4096)
def _b_of(raw: bytes) -> str | None:
    """``b_value`` by the field's bytes: one post's signature fields are looked at by
    every guarded step, the tag list is parsed once."""
    try:
        return b_chars(parse_tags(HeaderField(raw, "dkim-signature").value).get("b", "")) or None
    except TagError:
        return None


def _plain_positions(msg: RawMessage) -> dict[str, list[int]] | None:
    """The fields' positions by name, top down (``canon.index``), when every field is
    one field as dkimpy reads it: a name right before the colon, a line ending at the
    end, and any line break inside followed by white space; else None."""
    positions: dict[str, list[int]] = {}
    for i, f in enumerate(msg.fields):
        name, raw = f.name, f.raw
        if not name or raw[len(name):len(name) + 1] != b":" or not raw.endswith(b"\n"):
            return None
        if raw.count(b"\n") > 1 and _BREAK_NOT_FOLD.search(raw, 0, len(raw) - 1):
            return None
        positions.setdefault(name, []).append(i)
    return positions


def _canonical_field(raw: bytes, relaxed: bool) -> bytes:
    """One field as the DKIM header hash sees it (relist.core.dkim.canon, dkimpy's
    reading: line endings as CRLF; relaxed: RFC 6376 §3.4.2)."""
    name, _, value = raw.partition(b":")
    if not relaxed:
        return name + b":" + canon.crlf_lines(value)
    ((name, value),) = canon.relaxed_headers([(name, value)])
    return name + b":" + value


def same_header_input(before: RawMessage, after: RawMessage, sig: SignatureResult) -> bool | None:
    """Whether the header fields ``sig`` signs hash the same over ``before`` and ``after``.

    No key and no crypto: a signature valid over ``before`` with the body unchanged
    stays valid over ``after`` exactly when the header hash input is the same (the
    same digest under the same key), i.e. when every field its h= selects
    canonicalizes the same and its own field is unchanged.  Selection follows
    dkimpy's verifier, which the full verify uses too (From is selected once more
    than h= names it).  Only fields whose bytes differ are canonicalized.  None when
    this cannot be decided so cheaply (own field changed, an unusual header line, a
    shortened h= name in the result): the caller verifies instead.
    """
    if not sig.canonicalization:
        return None
    if any(len(h) >= 80 or "?" in h for h in sig.headers):
        return None          # the result's h= was made printable/bounded for display
    own = [f.raw for f in before.get_all("dkim-signature") if b_value(f) == sig.b]
    if len(own) != 1 or own != [f.raw for f in after.get_all("dkim-signature") if b_value(f) == sig.b]:
        return None
    old_at, new_at = _plain_positions(before), _plain_positions(after)
    if old_at is None or new_at is None:
        return None
    relaxed = sig.canonicalization.startswith("relaxed/")
    names = sig.headers
    if "from" in names:
        names += ("from",)  # dkimpy's rule (its bug#644046): one more From than h= names
    old, new = canon.selected(old_at, names), canon.selected(new_at, names)
    if len(old) != len(new):
        return False
    for i, j in zip(old, new):
        a, b = before.fields[i].raw, after.fields[j].raw
        if a != b and _canonical_field(a, relaxed) != _canonical_field(b, relaxed):
            return False
    return True


def recheck(msg: RawMessage, sigs, ctx: Context, body_same: bool = False,
            before: RawMessage | None = None) -> dict[str, SignatureResult]:
    """Each of ``sigs`` (arrival results) verified again over ``msg``, by b= value.

    A signature whose field is no longer in ``msg`` fails with "signature removed".
    ``body_same``: the body is the one these signatures last verified on, so only the
    header signature is checked (the body is neither read nor hashed again).  With
    ``before`` as well (the message each of ``sigs`` is known valid on), the header
    check is a comparison of the hash input (``same_header_input``), not a verify.
    """
    fields = msg.get_all("dkim-signature")
    where = {b_value(f): (i, f) for i, f in enumerate(fields)}
    checker = None
    out = {}
    for sig in sigs:
        found = where.get(sig.b)
        if found is None:
            out[sig.b] = SignatureResult("dkim", Result.FAIL, "signature removed",
                                         domain=sig.domain, selector=sig.selector, b=sig.b)
            continue
        same = same_header_input(before, msg, sig) if body_same and before is not None else None
        if same is not None:
            out[sig.b] = replace(sig, result=Result.PASS if same else Result.FAIL, body_hash_ok=None,
                                 header_hash_ok=same, index=found[0],
                                 reason=sig.reason if same else
                                 "signature did not verify (signed header fields changed)")
            continue
        if checker is None:
            checker = _checker(msg, ctx, header_only=body_same)
        result = verify_signature(found[1].value, found[0], checker)
        if body_same:
            ok = result.header_hash_ok is True
            result = replace(result, result=Result.PASS if ok else Result.FAIL, body_hash_ok=None,
                             reason=sig.reason if ok else
                             "signature did not verify (signed header fields changed)")
        out[sig.b] = result
    return out


def _checker(msg: RawMessage, ctx: Context, header_only: bool = False) -> Checker:
    """A verifier's ``Checker`` over ``msg``, sharing its body's hashes (the message
    value's ``body_memo``).  ``header_only``: the body is not read (it is the one the
    signatures last verified on)."""
    if header_only:
        opened, error = open_message(b"".join([f.raw for f in msg.fields]) + msg.eol)
    else:
        opened, error = open_message(msg)
    return Checker(facts=ctx.facts, now=int(ctx.now.timestamp()), min_key_bits=ctx.policy.min_key_bits,
                   dkim=opened, dkim_error=error, memo=None if header_only else msg.body_memo())


def why_broken(result: SignatureResult) -> str:
    """Short reason: "body hash", "signed header fields", both, or the verifier's."""
    parts = [what for ok, what in ((result.body_hash_ok, "body hash"),
                                   (result.header_hash_ok, "signed header fields")) if ok is False]
    return ", ".join(parts) or result.reason


def same_body(a: RawMessage, b: RawMessage) -> bool:
    return a.body == b.body and a.separator == b.separator


def changed_fields(before: RawMessage, after: RawMessage) -> frozenset[str]:
    """The names (lower case) whose fields differ between the two messages, in bytes,
    number or order: the sequence of same-named fields is what a verifier selects from
    (RFC 6376 §5.4.2).  One pass over each message, however many signatures ask."""
    if before.fields == after.fields:
        return frozenset()
    old: dict[str, list[bytes]] = {}
    new: dict[str, list[bytes]] = {}
    for f in before.fields:
        old.setdefault(f.name, []).append(f.raw)
    for f in after.fields:
        new.setdefault(f.name, []).append(f.raw)
    return frozenset(n for n in old.keys() | new.keys() if old.get(n) != new.get(n))


def covers_change(before: RawMessage, after: RawMessage, sig: SignatureResult,
                  changed: frozenset[str] | None = None) -> bool:
    """True when ``after`` differs from ``before`` in bytes ``sig`` covers: the body, a
    field named in its h= (RFC 6376 §5.4.2: the verifier selects fields by name from
    the bottom, so the sequence of same-named fields decides), or its own field.
    ``changed``: ``changed_fields(before, after)``, when the caller has it."""
    if not same_body(before, after):
        return True
    if changed is None:
        changed = changed_fields(before, after)
    if not changed:
        return False
    if not changed.isdisjoint(sig.headers):
        return True
    if "dkim-signature" not in changed:
        return False
    return not any(b_value(f) == sig.b for f in after.get_all("dkim-signature"))


def track(work: Work, ctx: Context) -> Work:
    """Start tracking (``known.intact``) if no step has yet.

    Without an ingress copy, the verdict was computed over these very bytes (no step
    before the first guarded one changes bytes), so every valid signature is intact.
    With one (egress leg), what Mailman sent is checked; a signature it broke is
    attributed to Mailman.
    """
    k = work.known
    if k.intact is not None:
        return work
    valid = arrival_valid(k)
    if k.ingress_copy is None or not valid:
        return replace(work, known=replace(k, intact=tuple(s.b for s in valid), intact_on=work.message))
    results = recheck(work.message, valid, ctx)
    broken = tuple((label(s), MAILMAN) for s in valid if not results[s.b].passed)
    intact = tuple(s.b for s in valid if results[s.b].passed)
    return replace(work, known=replace(k, intact=intact, intact_on=work.message,
                                       breakage=k.breakage + broken))


def catch_up(work: Work, ctx: Context) -> Work:
    """Account for bytes changed since the guard last looked (``known.intact_on``): a
    step outside the guard (``downgrade``) may have changed what a tracked signature
    covers.  A signature such a change broke is attributed to ``unguarded step``."""
    k = work.known
    base = k.intact_on
    if not k.intact or base is None or base is work.message:
        return work
    tracked = set(k.intact)
    alive = [s for s in arrival_valid(k) if s.b in tracked]
    names = changed_fields(base, work.message)
    changed = [s for s in alive if covers_change(base, work.message, s, names)]
    results = recheck(work.message, changed, ctx, same_body(base, work.message), base) if changed else {}
    late = {s.b for s in changed if not results[s.b].passed}
    known = replace(k, intact=tuple(b for b in k.intact if b not in late), intact_on=work.message,
                    breakage=k.breakage + tuple((label(s), UNGUARDED) for s in alive if s.b in late))
    return replace(work, known=known)


def settle(before: Work, after: Work, ctx: Context, name: str, protect: bool = True) -> Work:
    """Judge what a step did to the tracked signatures (see module doc); ``protect``
    False: record what it broke but never undo it, in preserve mode too."""
    if after.message == before.message:
        return after
    k = after.known
    if k.intact == ():
        return after     # nothing left to guard: a broken signature never comes back
    valid = {s.b: s for s in arrival_valid(k)}
    tracked = [valid[b] for b in (k.intact or ()) if b in valid]
    names = changed_fields(before.message, after.message) if tracked else frozenset()
    affected = [s for s in tracked if covers_change(before.message, after.message, s, names)]
    same = same_body(before.message, after.message)
    results = recheck(after.message, affected, ctx, same, before.message) if affected else {}
    broken = [s for s in affected if not results[s.b].passed]
    if broken and protect and k.mode_chosen == "preserve":
        reasons = ", ".join(f"{label(s)} ({why_broken(results[s.b])})" for s in broken)
        return before.note(name, Action.SKIPPED, f"{name} skipped: would break {reasons}")
    gone = {s.b for s in broken}
    known = replace(k, intact=tuple(b for b in (k.intact or ()) if b not in gone),
                    intact_on=after.message,
                    breakage=k.breakage + tuple((label(s), name) for s in broken))
    extra = ""
    if broken:
        extra += "; broke " + ", ".join(f"{label(s)} ({why_broken(results[s.b])})" for s in broken)
    if not same:
        risky = [s for s in affected if s.b not in gone and s.body_length is not None]
        extra += "".join(f"; known risk: {label(s)} signs only the first {s.body_length} body "
                         "octets (l=), the change lies outside them (RFC 6376 §8.2)" for s in risky)
    return _amend(replace(after, known=known), before, name, extra)


def _amend(work: Work, before: Work, name: str, extra: str) -> Work:
    """Append ``extra`` to the step's own note (or add one)."""
    if not extra:
        return work
    if len(work.notes) > len(before.notes) and work.notes[-1].step == name:
        last = work.notes[-1]
        return replace(work, notes=work.notes[:-1] + (replace(last, detail=last.detail + extra),))
    return replace(work, notes=work.notes + (StepNote(name, Action.RECORDED, extra.lstrip("; ")),))


@dataclass(frozen=True, slots=True)
class Guarded:
    """A step run under ``settle``; same NAME and DNS questions (``.step`` is the module).
    ``protect``: in preserve mode, a change that breaks a tracked signature is undone."""

    step: Any
    protect: bool = True

    @property
    def NAME(self) -> str:   # noqa: N802 - the step protocol's name
        return self.step.NAME

    @property
    def questions(self) -> Any:
        """The step's own ``questions`` (None when it asks none: the planner skips it)."""
        return getattr(self.step, "questions", None)

    @property
    def on_error(self) -> Any:
        """The step's own ``on_error`` (relist.core.safety), None when it has none."""
        return getattr(self.step, "on_error", None)

    def apply(self, work: Work, ctx: Context) -> Work:
        work = catch_up(track(work, ctx), ctx)
        return settle(work, self.step.apply(work, ctx), ctx, self.step.NAME, self.protect)


def guarded(step) -> Guarded:
    """``step`` guarded in preserve mode and attributed in every mode (module doc)."""
    return Guarded(step)


def attributed(step) -> Guarded:
    """``step`` attributed in every mode but never undone: a step whose change must
    happen once it decided to make it (DMARC mitigation, strip)."""
    return Guarded(step, protect=False)


def oversigning(known, msg: RawMessage, name: str) -> tuple[SignatureResult, ...]:
    """The poster signatures still intact (``known.intact``; every valid one before the
    guard tracks) whose h= names ``name`` more times than ``msg`` has it: they sign its
    absence (RFC 6376 §5.4.2, §8.15), so adding one more breaks them."""
    intact = set(known.intact) if known.intact is not None else None
    present = len(msg.get_all(name))
    return tuple(s for s in arrival_valid(known)
                 if (intact is None or s.b in intact) and s.headers.count(name) > present)


def aligned_passing(verdict) -> tuple[SignatureResult, ...]:
    """The DKIM signatures that passed on arrival and align with the From domain (RFC
    9989 §4.4.1; a key in testing mode, t=y, does not count)."""
    if verdict is None:
        return ()
    aligned = {(a.domain, a.selector) for a in verdict.dmarc.alignment
               if a.aligned and not a.reason.startswith("key in testing")}
    return tuple(s for s in verdict.passing("dkim") if (s.domain, s.selector) in aligned)


def surviving(msg: RawMessage, verdict, ctx: Context, known=None) -> tuple[bool, str]:
    """Does a poster signature that passed and aligned on arrival still verify over
    ``msg`` (the current bytes)?  Keys come from ``ctx.facts``: no new DNS question.
    When relist.core.guard already checked these very bytes (``known.intact_on is
    msg``), or found every signature broken (``known.intact`` empty: a broken signature
    never comes back, and the guard stops following the bytes), its answer is used
    instead of verifying again."""
    wanted = {s.b: s for s in aligned_passing(verdict) if s.b}
    if not wanted:
        return False, "no aligned poster signature passed on arrival"
    intact = getattr(known, "intact", None)
    if intact is not None and (not intact or getattr(known, "intact_on", None) is msg):
        alive = [wanted[b] for b in intact if b in wanted]
        if alive:
            return True, f"the aligned signature {label(alive[0])} survives"
        broke: dict[str, str] = {}
        for who, step in getattr(known, "breakage", ()):
            broke.setdefault(who, step)
        why = ", ".join(f"{label(s)} broken by {broke.get(label(s), 'a change')}" for s in wanted.values())
        return False, f"no aligned poster signature survives ({why})"
    fields = msg.get_all("dkim-signature")
    present = [(i, f) for i, f in enumerate(fields) if b_value(f) in wanted]
    if not present:
        return False, "the aligned poster signature was removed"
    checker = _checker(msg, ctx)
    reasons = []
    for index, f in present:
        result = verify_signature(f.value, index, checker)
        if result.passed:
            return True, f"the aligned signature {result.domain}/{result.selector} survives"
        reasons.append(f"d={result.domain}: {result.reason}")
    return False, "no aligned poster signature survives (" + "; ".join(reasons)[:200] + ")"
