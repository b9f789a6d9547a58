"""The safety net: a step that raises by mistake never turns a post into a retry loop.

Why: the edge answers an unexpected exception with ``451 4.3.0``, and a bug that the
same bytes trigger triggers again on every retry: Mailman retries for days
(``delivery_retry_period``), then discards the post without a word to anyone.  A
failure the same bytes reproduce is never a 4xx.  451 stays for the transient: a DNS
temperror where a step defers on purpose, a signing key not loaded
(``DeferMessage``), and ``MemoryError`` (the next try may find the memory).

The rule, for every step ``pipeline.process`` and ``mode.decided`` run
(``run_step``): an exception other than ``RejectMessage``/``DeferMessage`` is caught,
and what it means is decided by the step:

* by default the step is **skipped**: the post goes on as it was before that step,
  and the step's note says ``internal error in step NAME: Type: message (at
  file:line ...)``; the record's ``extra`` gets ``internal_error`` with the same text
  (the core does not log: rule 1; the record is where a postmaster finds it).  This
  is right for every step whose absence leaves the post no worse than what Mailman
  handed over: a transformation (its change is not made), verification (no verdict:
  every later step then takes the safe side, DMARC mitigation included), repair,
  strip, the trace and Authentication-Results fields, the ARC seal (the DKIM
  signature carries DMARC alignment), attribution;
* a step module may define ``on_error(work, ctx, exc) -> Work`` to say otherwise (it
  may raise ``RejectMessage``).  ``identify`` cannot tell the list, so the relay's
  ``unknown_list`` answer applies (``_identify_failed``).  ``dmarc-mitigation``
  (``relist.core.steps.dmarc_mitigation.on_error``): From munged the least way unless
  no mitigation is needed, since skipping it would ship a copy the From domain's
  policy refuses.  ``sign``
  (``relist.core.steps.dkim_sign.on_error``): relayed without the list's signature, unless
  the From is in the list's signing domain (DMARC mitigation rewrote it, or it was
  already): then
  nothing but the list's signature can make that From pass DMARC, and an unsigned
  copy under the list's name is refused (``554 5.6.0``, naming the cause), so that
  Mailman bounces the post instead of retrying it for days.
"""

from __future__ import annotations

from relist.core.errors import DeferMessage, RejectMessage
from relist.core.model import Action, Context, Work

__all__ = ["ask_steps", "describe", "internal_error", "printable", "run_step"]


def printable(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, each unprintable one (CR, LF, NUL, ...) as
    "?": fit for a note or an SMTP reply line."""
    return "".join(ch if ch.isprintable() else "?" for ch in text[:limit])


def describe(exc: BaseException, frames: int = 3) -> str:
    """``Type: message (at module:line <- ...)``: the innermost relist frames, read
    from the traceback without touching a source file."""
    try:
        text = str(exc)
    except Exception:   # noqa: BLE001 - an exception whose text cannot be made
        text = "?"
    text = printable(text, 160)
    where = []
    tb = exc.__traceback__
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if module.startswith("relist.") and module != __name__:
            where.append(f"{module}:{tb.tb_lineno}")
        tb = tb.tb_next
    at = f" (at {' <- '.join(reversed(where[-frames:]))})" if where else ""
    return f"{type(exc).__name__}: {text}{at}"


def internal_error(name: str, work: Work, exc: BaseException, consequence: str, *,
                   action: Action = Action.SKIPPED, message=None) -> Work:
    """``work`` (as it was before step ``name``) with the step's note and the record
    entry; an ``on_error`` that does something instead (``message``) notes ``action``."""
    what = describe(exc)
    known = work.known.found(internal_error=f"{name}: {what}")
    return work.note(name, action, f"internal error in step {name}: {what}; {consequence}",
                     message=message, known=known)


def _identify_failed(work: Work, ctx: Context, exc: BaseException) -> Work:
    """The list cannot be told: the relay's answer for mail of no known list."""
    unknown = ctx.policy.unknown_list
    if unknown == "reject":
        raise RejectMessage("relist: cannot tell which list this message belongs to; "
                            "this relay accepts list mail only", 550, "5.7.1")
    if unknown == "defer":
        raise DeferMessage("relist: cannot tell which list this message belongs to "
                           "(unknown_list = defer)", 451, "4.7.0")
    return internal_error("identify", work, exc, "no list: passed unchanged (unknown_list = pass)")


def run_step(step, work: Work, ctx: Context) -> Work:
    """``step.apply(work, ctx)``, with the rule of the module doc for an exception."""
    try:
        return step.apply(work, ctx)
    except (RejectMessage, DeferMessage, MemoryError):
        raise
    except Exception as exc:   # noqa: BLE001 - the net: see the module doc
        name = step.NAME
        handler = getattr(step, "on_error", None)
        if handler is not None:
            return handler(work, ctx, exc)
        if name == "identify":
            return _identify_failed(work, ctx, exc)
        return internal_error(name, work, exc, "skipped: the post goes on as it was before this step")


def ask_steps(steps, msg, policy, facts) -> set:
    """The DNS questions of ``steps`` (``questions(msg, policy, facts)`` where a step has
    it).  A step whose ``questions`` raises on these bytes asks for nothing; its ``apply``
    meets the same bytes under ``run_step``."""
    wanted: set = set()
    for step in _asking(steps):
        try:
            wanted.update(step.questions(msg, policy, facts))
        except MemoryError:
            raise
        except Exception:   # noqa: BLE001 - a bug on these bytes: see the docstring
            continue
    return wanted


def _asking(steps) -> tuple:
    """The steps of ``steps`` that have ``questions``, memoized for a tuple of steps by
    its identity (the pipeline's tuples live as long as the process; hashing one costs
    more than the look-up saves, and asking a step without the attribute costs an
    exception).  The functions themselves are looked up at each call."""
    hit = _ASKING.get(id(steps))
    if hit is not None and hit[0] is steps:
        return hit[1]
    asking = tuple(s for s in steps if getattr(s, "questions", None) is not None)
    if type(steps) is tuple:
        if len(_ASKING) >= 64:      # tuples made per call (tests, benchmarks): start again
            _ASKING.clear()
        _ASKING[id(steps)] = (steps, asking)    # the steps kept alive: the id stays theirs
    return asking


_ASKING: dict[int, tuple] = {}


def log_safe(text: object) -> str:
    """``text`` fit for one log line: a backslash, every control or other unprintable
    character (CR, LF, ESC, NUL, DEL, C1 controls, bidi and other format characters,
    line separators) and each undecodable byte (a surrogate from surrogateescape) is
    written as an escape (``\\\\``, ``\\r``, ``\\x1b``, ``\\u2028``); other text,
    UTF-8 included, is unchanged."""
    text = str(text)
    if text.isprintable() and "\\" not in text:
        return text
    out = []
    for ch in text:
        o = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch.isprintable():
            out.append(ch)
        elif ch in "\r\n\t":
            out.append({"\r": "\\r", "\n": "\\n", "\t": "\\t"}[ch])
        elif 0xDC80 <= o <= 0xDCFF:           # a raw byte kept by surrogateescape
            out.append(f"\\x{o - 0xDC00:02x}")
        elif o < 0x100:
            out.append(f"\\x{o:02x}")
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    return "".join(out)
