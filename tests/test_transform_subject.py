"""subject-prefix step: table over real Subject bytes (issue: list transformations).

The expected decoded subjects follow GNU Mailman 3.3's handlers/subject_prefix.py:
the prefix goes first, before "Re:", and a prefix found after reply markers moves to
the front with the Re:/AW:/SV:/VS: run collapsed to one "Re: ".
"""

from __future__ import annotations

import email
from email import policy as email_policy
from email.header import decode_header, make_header

import pytest

from relist.core.message import RawMessage
from relist.core.policy import ListPolicy
from relist.core.steps import subject_prefix

LP = ListPolicy(address="ant@example.org", subject_prefix="[{list_name}] ")
FR = ListPolicy(address="fourmis@example.org", display_name="Fourmis é",
                subject_prefix="[{list_name}] ")
MM = ListPolicy(address="ant@example.org", display_name="Ant", subject_prefix="[$display_name] ")

HEAD = b"From: Ann <ann@example.net>\r\nTo: ant@example.org\r\n"
TAIL = b"Message-ID: <m1@example.net>\r\n\r\nbody\r\n"


def msg(subject: bytes | None) -> bytes:
    return HEAD + (b"" if subject is None else subject) + TAIL


def decoded_subject(raw: bytes) -> str:
    m = email.message_from_bytes(raw, policy=email_policy.compat32)
    return str(make_header(decode_header(m["subject"]))).replace("\r\n", "").replace("\n", "")


CASES = [
    # id, Subject field bytes (None: absent), policy, expected decoded subject, exact new field bytes or None
    ("plain", b"Subject: hello\r\n", LP, "[ant] hello", b"Subject: [ant] hello\r\n"),
    ("reply", b"Subject: Re: hello\r\n", LP, "[ant] Re: hello", b"Subject: [ant] Re: hello\r\n"),
    ("forward", b"Subject: Fwd: hello\r\n", LP, "[ant] Fwd: hello", b"Subject: [ant] Fwd: hello\r\n"),
    ("german-reply", b"Subject: AW: hallo\r\n", LP, "[ant] AW: hallo", b"Subject: [ant] AW: hallo\r\n"),
    ("prefix-after-re", b"Subject: Re: [ant] hello\r\n", LP, "[ant] Re: hello",
     b"Subject: [ant] Re: hello\r\n"),
    ("prefix-after-re-chain", b"Subject: RE: AW: [ant] Re: [ant] hello\r\n", LP, "[ant] Re: hello",
     b"Subject: [ant] Re: hello\r\n"),
    ("prefix-after-fwd", b"Subject: Fwd: [ant] hello\r\n", LP, "[ant] Fwd: hello", None),
    ("encoded", b"Subject: =?utf-8?q?caf=C3=A9_cr=C3=A8me?=\r\n", LP, "[ant] café crème",
     b"Subject: [ant] =?utf-8?q?caf=C3=A9_cr=C3=A8me?=\r\n"),
    ("encoded-reply-with-prefix", b"Subject: Re: =?utf-8?q?=5Bant=5D_caf=C3=A9?=\r\n", LP,
     "[ant] Re: café", None),
    ("nonascii-prefix-plain", b"Subject: hello\r\n", FR, "[Fourmis é] hello", None),
    ("nonascii-prefix-encoded", b"Subject: =?iso-8859-1?q?caf=E9?=\r\n", FR, "[Fourmis é] café", None),
    ("mailman-dollar-template", b"Subject: hello\r\n", MM, "[Ant] hello", b"Subject: [Ant] hello\r\n"),
    ("missing", None, LP, "[ant] (no subject)", b"Subject: [ant] (no subject)\r\n"),
    ("empty", b"Subject: \r\n", LP, "[ant] (no subject)", b"Subject: [ant] (no subject)\r\n"),
    ("raw-8bit", "Subject: Grüße\r\n".encode(), LP, None, "Subject: [ant] Grüße\r\n".encode()),
    ("unknown-charset-word", b"Subject: =?x-klingon?q?nuqneH?=\r\n", LP, None,
     b"Subject: [ant] =?x-klingon?q?nuqneH?=\r\n"),
    ("folded-long", b"Subject: a rather long subject line that goes on and on and on about the whole\r\n"
     b" nothing in particular\r\n", LP,
     "[ant] a rather long subject line that goes on and on and on about the whole nothing in particular",
     b"Subject: [ant]\r\n a rather long subject line that goes on and on and on about the whole\r\n"
     b" nothing in particular\r\n"),
    ("name-case-kept", b"SUBJECT:  hello\r\n", LP, "[ant] hello", b"SUBJECT: [ant] hello\r\n"),
]


@pytest.mark.parametrize("case_id,subject,policy,want,field", CASES, ids=[c[0] for c in CASES])
def test_subject_prefix_table(case_id, subject, policy, want, field):
    raw = msg(subject)
    before = RawMessage.parse(raw)
    after, detail = subject_prefix.transform(before, policy)
    assert after is not None, detail
    out = after.to_bytes()
    if want is not None:
        assert decoded_subject(out) == want
    if field is not None:
        assert after.get("subject").raw == field
    for line in after.get("subject").raw.split(b"\r\n"):
        assert len(line) <= 78 or b" " not in line.strip()
    # Every other field keeps its bytes and order.
    assert [f.raw for f in before.fields if f.name != "subject"] == \
        [f.raw for f in after.fields if f.name != "subject"]
    assert after.body == before.body
    again, why = subject_prefix.transform(after, policy)
    assert again is None and why == "prefix already present"


@pytest.mark.parametrize("subject", [b"Subject: [ant] hello\r\n", b"Subject: [ant] Re: hello\r\n",
                                     b"Subject: =?utf-8?q?=5Bant=5D_caf=C3=A9?=\r\n",
                                     b"Subject:   [ant] spaced\r\n",
                                     b"Subject: [Ant] Mailman's capitalised tag\r\n"])
def test_never_doubled(subject):
    after, why = subject_prefix.transform(RawMessage.parse(msg(subject)), LP)
    assert after is None and why == "prefix already present"


def test_no_prefix_configured():
    after, why = subject_prefix.transform(RawMessage.parse(msg(b"Subject: x\r\n")),
                                          ListPolicy(address="ant@example.org"))
    assert after is None and why == "no subject prefix configured"


def test_prefix_with_line_break_refused():
    bad = ListPolicy(address="ant@example.org", subject_prefix="[x]\r\nBcc: victim@example.com ")
    after, why = subject_prefix.transform(RawMessage.parse(msg(b"Subject: x\r\n")), bad)
    assert after is None and "line break" in why


def test_only_first_subject_changed():
    raw = msg(b"Subject: one\r\nSubject: two\r\n")
    after, _ = subject_prefix.transform(RawMessage.parse(raw), LP)
    assert [f.raw for f in after.get_all("subject")] == [b"Subject: [ant] one\r\n", b"Subject: two\r\n"]


def test_raw_8bit_with_moved_prefix_left_alone():
    raw = msg(b"Subject: Re: [ant] Gr\xfc\xdfe\r\n")      # latin-1 bytes, not UTF-8
    after, why = subject_prefix.transform(RawMessage.parse(raw), LP)
    assert after is None and "raw 8-bit" in why
