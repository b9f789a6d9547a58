"""``guard.covers_change``: whether a step changed bytes a signature covers, decided
from ``changed_fields`` (one pass over each message) and held here to the definition
it replaced, field name by field name (Hypothesis: random edits of a header)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from relist.core import guard
from relist.core.message import HeaderField, RawMessage
from relist.core.verify.results import Result, SignatureResult

NAMES = ["from", "to", "subject", "dkim-signature", "list-id", "x-tag"]
SIGS = [b"DKIM-Signature: v=1; d=a.example; s=s; b=AAAA\r\n",
        b"DKIM-Signature: v=1; d=b.example; s=s; b=BBBB\r\n"]


def field(name: str, value: str) -> HeaderField:
    shown = name.title()
    return HeaderField(f"{shown}: {value}\r\n".encode(), name)


PLAIN = [n for n in NAMES if n != "dkim-signature"]
fields = st.one_of(
    st.builds(field, st.sampled_from(PLAIN), st.sampled_from(["a", "b"])),
    st.sampled_from([HeaderField(raw, "dkim-signature") for raw in SIGS]),
)
headers = st.lists(fields, max_size=8)
edits = st.lists(st.tuples(st.sampled_from(["drop", "insert", "swap", "body"]), st.integers(0, 9), fields),
                 max_size=3)


def edited(msg: RawMessage, how) -> RawMessage:
    out, body = list(msg.fields), msg.body
    for kind, at, f in how:
        if kind == "drop" and out:
            del out[at % len(out)]
        elif kind == "insert":
            out.insert(at % (len(out) + 1), f)
        elif kind == "swap" and len(out) > 1:
            i = at % (len(out) - 1)
            out[i], out[i + 1] = out[i + 1], out[i]
        elif kind == "body":
            body = body + b"more\r\n"
    return RawMessage(tuple(out), msg.separator, body, msg.eol)


def reference(before: RawMessage, after: RawMessage, sig: SignatureResult) -> bool:
    """The definition before changed_fields: each h= name's fields compared in turn."""
    def raws(m, n):
        return tuple(f.raw for f in m.get_all(n))
    if not guard.same_body(before, after):
        return True
    if any(raws(before, n) != raws(after, n) for n in set(sig.headers)):
        return True
    if raws(before, "dkim-signature") == raws(after, "dkim-signature"):
        return False
    return not any(guard.b_value(f) == sig.b for f in after.get_all("dkim-signature"))


@settings(max_examples=500, deadline=None)
@given(headers, edits, st.lists(st.sampled_from(PLAIN), max_size=5), st.sampled_from(["AAAA", "BBBB"]))
def test_covers_change_is_the_field_by_field_definition(head, how, h, b):
    before = RawMessage(tuple(head), b"\r\n", b"body\r\n", b"\r\n")
    after = edited(before, how)
    sig = SignatureResult("dkim", Result.PASS, "", domain="a.example", selector="s", b=b, headers=tuple(h))
    names = guard.changed_fields(before, after)
    want = reference(before, after, sig)
    assert guard.covers_change(before, after, sig) == want
    assert guard.covers_change(before, after, sig, names) == want
    assert names == {n for n in NAMES if tuple(f.raw for f in before.get_all(n))
                     != tuple(f.raw for f in after.get_all(n))}
