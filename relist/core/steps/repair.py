"""repair: undo what Mailman broke without meaning to, and prove it.

What (egress leg, every mode, only when the ingress leg kept the post as it arrived,
``known.ingress_copy``): for each header field named in the h= of a
signature that verified on arrival,

* a field whose meaning Mailman kept but whose bytes it changed (refolded, renamed
  ``Cc`` to ``CC``, re-encoded RFC 2047 words, moved) gets the poster's bytes back,
  in Mailman's position (RFC 6376 §5.4.2: only the order of same-named fields counts);
* a field Mailman added (List-Id, List-Post, Precedence...) that the h= names more
  times than the post had it, i.e. the poster signed its absence (RFC 6376 §5.4.2,
  §8.15 oversigning), is dropped;
* a field whose meaning Mailman changed is left as Mailman made it, with the reason.

The body gets the poster's bytes back when Mailman's body differs only in ways that
carry no meaning: ">From " escaping of lines (mbox quoting), line endings, trailing
white space.  Mailman's other fields (X-Mailman-*, Message-ID-Hash...) stay.

Then the proof: the repaired message is verified again (``verify_message`` with the
facts and time already in the context: no new DNS), and every signature that passed
on arrival must pass.  If one does not, Mailman's bytes are kept and that is
recorded.  Why: a change is only undone when it provably restores the signature,
and undoing an accident never hurts: in resign mode too a poster signature that
survives the list's own changes keeps the post's DMARC pass (``strip`` keeps it).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace

from relist.core import mime
from relist.core.addresses import mailboxes
from relist.core.verify import verify_message
from relist.core.guard import arrival_valid, label
from relist.core.message import HeaderField, RawMessage
from relist.core.model import Action, Context, Work

__all__ = ["NAME", "apply", "meaning"]

NAME = "repair"

_ADDRESS_FIELDS = frozenset({"from", "to", "cc", "bcc", "reply-to", "sender",
                             "resent-from", "resent-to", "resent-cc", "resent-sender"})
_ESCAPED_FROM = re.compile(rb"(?m)^>From ")
_WSP = re.compile(r"\s+")


def _words(text: str) -> str:
    return _WSP.sub(" ", mime.readable_words(text) or text).strip()


def meaning(field: HeaderField):
    """What a field says, up to folding, name case and RFC 2047 encoding."""
    text = field.text()
    if field.name in _ADDRESS_FIELDS:
        return field.name, tuple((_words(n), a.lower()) for n, a in mailboxes(text))
    return field.name, _words(text)


def _body_form(body: bytes) -> bytes:
    """The body up to meaningless changes: ">From " quoting, line ends, trailing space."""
    lines = [line.rstrip(b" \t\r") for line in _ESCAPED_FROM.sub(b"From ", body).split(b"\n")]
    while lines and not lines[-1]:
        lines.pop()
    return b"\n".join(lines)


def _signed_names(sigs) -> dict[str, int]:
    """Each field name in any h=, with the most times one h= names it."""
    most: dict[str, int] = {}
    for sig in sigs:
        for name, n in Counter(sig.headers).items():
            most[name] = max(most.get(name, 0), n)
    return most


def _repair_headers(post: RawMessage, msg: RawMessage, names: dict[str, int]):
    """(repaired message, repairs, refusals) for the signed fields."""
    done, refused = [], []
    for name, signed in names.items():
        orig, now = post.get_all(name), msg.get_all(name)
        if [f.raw for f in orig] == [f.raw for f in now]:
            continue
        pairs, spare = [], list(now)
        for o in orig:
            twin = next((f for f in spare if meaning(f) == meaning(o)), None)
            if twin is None:
                break
            pairs.append((o, twin))
            spare.remove(twin)
        if len(pairs) < len(orig):
            why = "removed" if len(now) < len(orig) else "changed its meaning"
            refused.append(f"{name}: Mailman {why}; left as Mailman sent it")
            continue
        title = orig[0].raw.split(b":", 1)[0].decode("ascii", "replace") if orig else name
        if spare and signed > len(orig):
            shown = spare[0].raw.split(b":", 1)[0].decode("ascii", "replace")
            drop = {id(f) for f in spare}
            msg = msg.remove_where(lambda f: id(f) in drop)
            done.append(f"{shown}: dropped {len(spare)} added by Mailman (h= signs "
                        f"{signed}, the post had {len(orig)})")
        swap = {id(new): old for old, new in pairs if old.raw != new.raw}
        if swap:
            msg = msg.with_fields(swap.get(id(f), f) for f in msg.fields)
            done.append(f"{title}: poster's bytes restored (Mailman refolded, renamed or "
                        "re-encoded it)")
    return msg, done, refused


def apply(work: Work, ctx: Context) -> Work:
    """See `relist.core.steps`."""
    k = work.known
    if k.list_policy is None:
        return work.note(NAME, Action.SKIPPED, "no list")
    post = k.ingress_copy
    if post is None:
        return work.note(NAME, Action.SKIPPED, "no ingress copy: nothing to repair against")
    valid = arrival_valid(k)
    if not valid:
        return work.note(NAME, Action.SKIPPED, "no signature verified on arrival")
    msg, done, refused = _repair_headers(post, work.message, _signed_names(valid))
    if msg.body != post.body:
        if _body_form(msg.body) == _body_form(post.body):
            escaped = len(_ESCAPED_FROM.findall(msg.body)) - len(_ESCAPED_FROM.findall(post.body))
            msg = replace(msg, body=post.body, separator=post.separator)
            done.append(f"body: poster's bytes restored (Mailman escaped {escaped} \"From \" "
                        "line(s) or changed white space)")
        else:
            refused.append("body: Mailman changed its content; left as Mailman sent it")
    refusals = ("; not repaired: " + "; ".join(refused)) if refused else ""
    if not done:
        return work.note(NAME, Action.SKIPPED, ("nothing repaired" + refusals if refused
                                                else "nothing to repair")[:500])
    verdict = verify_message(msg, ctx.facts, ctx.now, max_signatures=ctx.policy.max_signatures,
                             min_key_bits=ctx.policy.min_key_bits)
    now = {s.b: s for s in verdict.dkim}
    failing = [s for s in valid if s.b not in now or not now[s.b].passed]
    if failing:
        why = ", ".join(f"{label(s)}: {now[s.b].reason if s.b in now else 'missing'}" for s in failing)
        return work.note(NAME, Action.SKIPPED, (f"repair not proven ({why}); Mailman's bytes kept; "
                                                f"tried: {'; '.join(done)}{refusals}")[:1000])
    proof = ", ".join(f"{label(s)} pass" for s in valid)
    known = work.learn(intact=tuple(s.b for s in valid), intact_on=msg).found(repairs=tuple(done))
    return work.note(NAME, Action.APPLIED, (f"{'; '.join(done)}; proof: {proof}{refusals}")[:1000],
                     message=msg, known=known)
