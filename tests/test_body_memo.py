"""A footer's lines appended to a body carry the body's DKIM hashes on
(``BodyMemo.appended``, issue 17): the canonical body up to its last text is hashed
once, not again with the footer.  Held to ``body_digest`` over the whole new body,
for both canonicalizations, chained appends, bodies with trailing white space,
tabs, space runs and empty lines; and shown to be used by the footer step (the
whole body is not canonicalized again when the verifier hashed it first)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relist.core.dkim.canon import BodyMemo, body_digest
from relist.core.message import RawMessage
from relist.core.steps import footer
from tests.test_transform_footer import lp

LINE = st.text(alphabet=" \tab.-=", max_size=12).map(lambda t: t.encode() + b"\r\n")
LINES = st.lists(LINE, max_size=8).map(b"".join)
CANONS = ("simple", "relaxed")


def _whole(body: bytes):
    return {c: body_digest(body, c, "sha256") for c in CANONS}


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=LINES.filter(lambda b: b.endswith(b"\r\n")), extra=LINES, more=LINES)
def test_carried_hashes_are_the_whole_bodys(body, extra, more):
    memo = BodyMemo(body)
    assert {c: memo.digest(c, "sha256") for c in CANONS} == _whole(body)
    once = memo.appended(body + extra, len(extra))
    assert {c: once.digest(c, "sha256") for c in CANONS} == _whole(body + extra)
    twice = once.appended(body + extra + more, len(more)) if (body + extra).endswith(b"\r\n") else None
    if twice is not None:
        assert {c: twice.digest(c, "sha256") for c in CANONS} == _whole(body + extra + more)


def test_a_hash_not_made_before_is_made_over_the_whole_new_body():
    body, extra = b"text \r\n\r\n", b"-- \r\nfooter\r\n"
    memo = BodyMemo(body)
    memo.digest("simple", "sha256")                    # only simple was asked for
    new = memo.appended(body + extra, len(extra))
    assert ("relaxed", "sha256", None) not in new._digest
    assert new.digest("relaxed", "sha256") == body_digest(body + extra, "relaxed", "sha256")
    assert new.digest("simple", "sha256", 5) == body_digest(body + extra, "simple", "sha256", 5)


def test_the_footer_step_carries_the_verifiers_hash(monkeypatch):
    raw = (b"From: a@example.net\r\nTo: ant@example.org\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" + b"a line of  text \r\n" * 200)
    msg = RawMessage.parse(raw)
    before = {c: msg.body_memo().digest(c, "sha256") for c in CANONS}   # the verifier, on arrival
    assert before == _whole(msg.body)
    made = []
    real = BodyMemo._whole
    monkeypatch.setattr(BodyMemo, "_whole", lambda self, c, h: made.append(c) or real(self, c, h))
    out, why = footer.transform(msg, lp("-- \n{list_name} list\n"))
    assert out is not None and "footer appended" in why
    assert out.body.startswith(msg.body) and len(out.body) > len(msg.body)
    assert {c: out.body_memo().digest(c, "sha256") for c in CANONS} == _whole(out.body)
    assert made == []                                 # carried, not made again
