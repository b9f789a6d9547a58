"""dmarc-mitigation: rewrite From (or wrap the post) when the author's DMARC policy
would make receivers refuse the list's copy.

Why: a list changes the post (Subject prefix, footer) and strips or breaks the
poster's DKIM signature, so the copy no longer passes DMARC for the poster's domain
(RFC 7960 §3.2.3, §4.1.3).  relist signs under the list's domain, so a From in the
list's domain makes the copy pass again.  Runs after every change to the content and
before signing, so the list's signature covers the new From/Reply-To/Cc.

When: in every mode (preserve included), decided on the message as it will leave
(after repair, every transformation, the trace fields and the downgrade), with the
DNS answers already fetched.  Never when ``dmarc_mitigation = "none"``, nor when the
list's own signature aligns with the From domain.  Otherwise, by ``dmarc_trigger``:

* ``policy``   - no poster signature aligned with the From domain survives, and that
  domain's effective DMARC policy (t=y one level lower, RFC 9989 §4.7) is quarantine
  or reject; a DMARC temperror (policy unknown) counts as strict: the safe side;
* ``evidence`` - no aligned poster signature survives, whatever the policy;
* ``always``   - every post.
preserve's promise covers the signatures that can be kept; when none can, the post
would be refused, and deliverability wins (the note says why).

How (``dmarc_mitigation``):

* ``munge_from`` - ``From: "<name> via <list>" <list address>`` (RFC 5322 §3.4; RFC 2047
  for non-ASCII); the original From goes into Reply-To, or into Cc when Reply-To is the
  list; ``X-Original-From:`` keeps the original From's value bytes.
* ``wrap`` - a new multipart/mixed whose second part is the post as message/rfc822,
  byte-identical (RFC 2046 §5.2.1); outer From munged as above, Subject/To/Cc/Date/
  Message-ID/threading/List-* and the trace fields copied.
"""

from __future__ import annotations

import re
from dataclasses import replace

from relist.core import mime
from relist.core.addresses import mailboxes, unusable
from relist.core.guard import catch_up, settle, surviving, track
from relist.core.message import HeaderField, RawMessage, clean_text, clean_value
from relist.core.model import Action, Context, Work
from relist.core.policy import ListPolicy
from relist.core.safety import describe, internal_error
from relist.core.templates import display_name, expand

__all__ = ["NAME", "apply", "bare_munge", "decide", "munge", "munged_from", "on_error", "surviving", "wrap"]

NAME = "dmarc-mitigation"

_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~ ]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_FWS = b" \t\r\n"   # white space and the line breaks of folds, stripped at a value's ends
# Outer fields of a wrapped post: the message's identity, threading, list fields and the
# trace block (Received, Authentication-Results, ARC sets continue on the outer message).
_WRAP_COPY = ("subject", "to", "cc", "date", "message-id", "in-reply-to", "references",
              "sender", "precedence", "received", "authentication-results",
              "arc-seal", "arc-message-signature", "arc-authentication-results")


# -- the decision ----------------------------------------------------------------------

def decide(lp: ListPolicy, verdict, survives) -> tuple[bool, str]:
    """(mitigate?, why), the same rule in every mode, on the bytes as they will leave.
    ``survives()`` -> (bool, detail): whether a poster signature aligned with From
    still verifies over them."""
    if lp.dmarc_mitigation == "none":
        return False, "no mitigation: dmarc_mitigation = none"
    if verdict is None:
        return True, "mitigating: no verification verdict, DMARC policy unknown (safe side)"
    d = verdict.dmarc
    if d.domain and lp.aligned_with(d.domain) and lp.signs:
        return False, (f"no mitigation: From domain {d.domain} aligns with the list's "
                       f"signing domain {lp.signing_domain or lp.domain}")
    if lp.dmarc_trigger == "always":
        return True, "mitigating: dmarc_trigger = always"
    ok, detail = survives()
    if ok:
        return False, f"no mitigation: {detail}"
    if lp.dmarc_trigger == "evidence":
        return True, f"mitigating (dmarc_trigger = evidence): {detail}"
    if d.result == "temperror":
        return True, (f"mitigating: {detail} and the DMARC policy of {d.domain or 'From'} is "
                      f"unknown ({d.reason}); safe side")
    if d.result == "permerror":
        return False, f"no mitigation: DMARC permerror ({d.reason}); {detail}"
    if not d.policy:
        return False, f"no mitigation: no DMARC policy for {d.domain or 'From'}; {detail}"
    effective = d.effective_policy
    lowered = f" (p={d.policy} lowered by t=y)" if effective != d.policy else ""
    if effective not in ("quarantine", "reject"):
        return False, f"no mitigation: p={effective}{lowered} for {d.domain}; {detail}"
    return True, f"mitigating: p={effective}{lowered} for {d.domain} and {detail}"


# -- From munging -------------------------------------------------------------------------

def _quote(phrase: str) -> str:
    """RFC 5322 §3.2.4 quoted-string, or RFC 2047 encoded words for non-ASCII (never
    inside quotes, RFC 2047 §5(3))."""
    phrase = _CONTROL.sub("", phrase).strip()
    if not phrase.isascii() or "=?" in phrase:
        return mime.encode_words(phrase)
    return '"' + phrase.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _printable(text: str) -> str:
    """Undecodable 8-bit bytes (kept by the parser as surrogates) as U+FFFD, control
    characters as spaces (``clean_text``)."""
    return clean_text(text)[0]


def _poster(from_field: HeaderField) -> tuple[str, str] | None:
    """(display name, address) of the first mailbox in From."""
    for name, addr in mailboxes(from_field.text()):
        if "@" in addr:
            name = mime.readable_words(name)
            return _printable(name).strip(), addr
    return None


def munged_from(name: str, address: str, lp: ListPolicy) -> str:
    """The new From value: ``"<name> via <list>" <list address>`` from ``munge_phrase``."""
    shown = name or _printable(address.split("@", 1)[0])
    pieces = (lp.munge_phrase or "{name} via {list_name}").split("{name}")
    phrase = shown.join(expand(p, lp) for p in pieces)   # the poster's name is never expanded
    return mime.fold("From", f"{_quote(phrase)} <{lp.address}>")


def _addresses(fields: tuple[HeaderField, ...]) -> list[str]:
    return [a.lower() for f in fields for _, a in mailboxes(f.text()) if a]


def _add_to(msg: RawMessage, name: str, value: bytes) -> RawMessage:
    """``name`` with ``value`` (a From value) added after the existing addresses.  Each
    value loses the white space and folds at its ends: a value may end in a fold with
    only white space after it (the header's last field, cut short), and a comma or line
    ending written after that fold would begin a line that is no field."""
    old = msg.get_all(name)
    value = value.strip(_FWS)
    if old:
        joined = (b"," + msg.eol + b" ").join(f.value.strip(_FWS) for f in old)
        value = joined + b"," + msg.eol + b" " + value
    field = HeaderField(name.encode("ascii") + b": " + value + msg.eol, name.lower())
    return msg.replace_field(name, field)


def munge(msg: RawMessage, lp: ListPolicy) -> tuple[RawMessage | None, str]:
    """From rewritten, original From in Reply-To (or Cc), X-Original-From added."""
    froms = msg.get_all("from")
    if len(froms) != 1:
        return None, f"cannot munge: {len(froms)} From fields"
    poster = _poster(froms[0])
    if poster is None:
        return None, "cannot munge: no address in From"
    name, address = poster
    if address.lower() == lp.address.lower():
        return None, "From is already the list address"
    why = _unusable_list_address(lp)
    if why:
        return None, why
    # The original From's bytes go into X-Original-From and Reply-To/Cc as they are,
    # but for a control character or a line break that is no fold (a bare CR, NUL...):
    # a field relist builds never carries one (relist.core.message.clean_value).
    original, cleaned = clean_value(froms[0].value, keep_8bit=True)
    value, fixed = clean_value(munged_from(name, address, lp).encode("utf-8", "surrogateescape"))
    cleaned += fixed
    out = msg.replace_field("From", msg.make_field("From", value))
    reply_to = _addresses(msg.get_all("reply-to"))
    if lp.reply_to.strip() == "list" or lp.address.lower() in reply_to:
        target = "Cc"
    else:
        target = "Reply-To"
    if address.lower() not in _addresses(msg.get_all(target)):
        out = _add_to(out, target, original)
        where = f"original From added to {target}"
    else:
        where = f"original From already in {target}"
    out = out.remove("x-original-from").append(_original_field("X-Original-From", original, msg.eol))
    control = f"; {cleaned} control character(s) replaced by spaces" if cleaned else ""
    return out, (f"From: {_printable(lp.address)} for {_printable(address)}; {where}; "
                 f"X-Original-From added{control}")


def _unusable_list_address(lp: ListPolicy) -> str:
    """Why the list address cannot be a From (``addresses.unusable``), or ""."""
    why = unusable(lp.address)
    return f"cannot munge: list address {_printable(lp.address)!r} {why}" if why else ""


def _original_field(name: str, original: bytes, eol: bytes) -> HeaderField:
    """``name`` carrying the original From's value bytes as they are (a space after the
    colon unless the value starts with white space)."""
    original = original.rstrip(_FWS)     # no line of only white space at its end (RFC 5322 §3.2.2)
    lead = b"" if original[:1] in (b" ", b"\t") else b" "
    return HeaderField(name.encode("ascii") + b":" + lead + original + eol, name.lower())


def bare_munge(msg: RawMessage, lp: ListPolicy) -> tuple[RawMessage | None, str]:
    """The least From munging (``on_error``'s fallback): ``From: <list address>``, the
    original From's bytes in ``X-Original-From``, and in ``Reply-To`` when the post has
    none; no name, no address parsing, none of the list's templates.  (None, why) when
    the list address cannot be a From (``addresses.unusable``, as ``munge`` checks)."""
    why = _unusable_list_address(lp)
    if why:
        return None, why
    froms = msg.get_all("from")
    original = clean_value(froms[0].value, keep_8bit=True)[0] if froms else b""
    out = msg.replace_field("From", msg.make_field("From", f"<{lp.address}>"))
    done = f"From: <{_printable(lp.address)}>"
    if not original.strip(_FWS):
        return out, done + ", no original From to keep"
    out = out.remove("x-original-from").append(_original_field("X-Original-From", original, msg.eol))
    if msg.get_all("reply-to"):
        return out, done + ", the original From in X-Original-From"
    out = out.append(_original_field("Reply-To", original, msg.eol))
    return out, done + ", the original From in X-Original-From and in Reply-To"


# -- wrapping ------------------------------------------------------------------------------

def _note_text(poster: str, lp: ListPolicy, domain: str) -> str:
    return (f"This message was sent to the {display_name(lp)} list by {poster}.\n\n"
            f"The author's domain ({domain or 'unknown'}) publishes a DMARC policy that does "
            "not let the list resend the message under the author's address, so the "
            "original message is attached unchanged.\n")


def wrap(msg: RawMessage, lp: ListPolicy, domain: str = "") -> tuple[RawMessage | None, str]:
    """The post as message/rfc822 inside a new multipart/mixed (RFC 2046 §5.2.1)."""
    inner = msg.to_bytes()
    head, why = munge(RawMessage(
        tuple(f for f in msg.fields if f.name in _WRAP_COPY or f.name.startswith("list-")
              or f.name in ("from", "reply-to")), msg.eol, b"", msg.eol), lp)
    if head is None:
        return None, why
    eol = msg.eol
    from_field = msg.get("from")
    poster = _poster(from_field) if from_field is not None else None
    who = f"{poster[0]} <{poster[1]}>" if poster and poster[0] else (poster[1] if poster else "?")
    text = "\n".join(clean_text(line)[0] for line in _note_text(who, lp, domain).split("\n"))
    if text.isascii():
        note_fields = b"Content-Type: text/plain; charset=us-ascii" + eol
        note_body = text.replace("\n", eol.decode()).encode("ascii")
    else:
        note_fields = (b"Content-Type: text/plain; charset=utf-8" + eol
                       + b"Content-Transfer-Encoding: quoted-printable" + eol)
        note_body = mime.qp_encode(text.encode("utf-8"), eol)
    boundary = mime.new_boundary(inner).encode("ascii")
    # RFC 2046 §5.2.1: message/rfc822 allows only 7bit, 8bit or binary; say 8bit when needed.
    cte = b"" if inner.isascii() else b"Content-Transfer-Encoding: 8bit" + eol
    # The line ending before a delimiter belongs to the delimiter (RFC 2046 §5.1.1), so
    # one is always added: the part's content is exactly ``inner``.
    body = (b"--" + boundary + eol + note_fields + eol + note_body + eol
            + b"--" + boundary + eol
            + b"Content-Type: message/rfc822" + eol + b"Content-Disposition: inline" + eol
            + cte + eol + inner + eol
            + b"--" + boundary + b"--" + eol)
    out = head.remove("mime-version").remove("content-type").remove("content-transfer-encoding")
    out = out.append(out.make_field("MIME-Version", "1.0"),
                     out.make_field("Content-Type", 'multipart/mixed;\r\n boundary="'
                                    + boundary.decode() + '"'))
    out = replace(out, separator=eol, body=body)
    return out, f"wrapped as message/rfc822 ({len(inner)} bytes); {why}"


# -- the step -------------------------------------------------------------------------------

def apply(work: Work, ctx: Context) -> Work:
    """See `relist.core.steps`."""
    lp = work.known.list_policy
    if lp is None:
        return work.note(NAME, Action.SKIPPED, "no list")
    verdict = work.known.verdict
    if work.known.mode_chosen == "resign" and lp.strip == "all":
        # strip, which follows, removes every poster signature: none survives what leaves
        def survives():
            return False, 'no aligned poster signature survives (strip = "all" removes them)'
    else:
        def survives():
            return surviving(work.message, verdict, ctx, work.known)
    act, why = decide(lp, verdict, survives)
    if not act:
        return work.note(NAME, Action.SKIPPED, why)
    domain = verdict.dmarc.domain if verdict is not None else ""
    if lp.dmarc_mitigation == "wrap":
        new, detail = wrap(work.message, lp, domain)
    else:
        new, detail = munge(work.message, lp)
    if new is None:
        return work.note(NAME, Action.SKIPPED, f"{why}; but {detail}")
    return work.note(NAME, Action.APPLIED, f"{why}; {detail}", message=new)


def on_error(work: Work, ctx: Context, exc: BaseException) -> Work:
    """A bug in this step on these bytes (relist.core.safety): skipping it would ship
    the post unmitigated to receivers that apply the From domain's policy, and a 5xx
    would make Mailman count a bounce for every member.  So, unless the decision
    (``decide``, taking no poster signature as surviving: the safe side) says no
    mitigation is needed, From is munged the least way (``bare_munge``), and the guard
    records which poster signatures that broke, as it does for the step itself; when
    the fallback fails too, the post goes on as it was, as for any other step.
    ``MemoryError`` still reaches the edge (451: it may pass)."""
    lp = work.known.list_policy
    if lp is None:       # (apply skips such a post first: no list, no address to munge to)
        return internal_error(NAME, work, exc, "skipped: no list")
    try:
        act, why = decide(lp, work.known.verdict, lambda: (False, "no poster signature is known to survive"))
    except MemoryError:
        raise
    except Exception as again:   # noqa: BLE001 - the decision itself failed: the safe side
        act, why = True, f"mitigating: the decision failed too ({describe(again)}); safe side"
    if not act:
        return internal_error(NAME, work, exc, f"skipped: {why}")
    try:
        new, detail = bare_munge(work.message, lp)
    except MemoryError:
        raise
    except Exception as again:   # noqa: BLE001 - the fallback failed: see the docstring
        return internal_error(NAME, work, exc, f"skipped, unmitigated: the fallback failed too "
                                               f"({describe(again)})")
    if new is None:
        return internal_error(NAME, work, exc, f"skipped, unmitigated: the fallback {detail}")
    done = f"{why}; fallback: {detail}"
    try:   # what the fallback broke, attributed to this step (relist.core.guard.settle)
        before = catch_up(track(work, ctx), ctx)
        after = internal_error(NAME, before, exc, done, action=Action.APPLIED, message=new)
        return settle(before, after, ctx, NAME, protect=False)
    except MemoryError:
        raise
    except Exception:   # noqa: BLE001 - the guard failed on these bytes: unattributed
        return internal_error(NAME, work, exc, done, action=Action.APPLIED, message=new)
