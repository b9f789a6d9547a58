"""downgrade over real bytes: 8-bit parts become 7-bit, nothing else changes, and the
signature made afterwards verifies on the bytes as transported."""

from __future__ import annotations

import email
from email import policy as email_policy

import pytest

from relist.core import mime
from relist.core.message import RawMessage
from relist.core.model import Action
from relist.core.steps import downgrade
from tests.test_step_sign import (
    context, dkimpy_ok, list_sigs, note, policy, run, verify_out,
)

HEAD = (b"From: Alice <alice@example.org>\r\nTo: dev@lists.example.org\r\n"
        b"Subject: hello\r\nDate: Sun, 1 Mar 2026 11:58:00 +0000\r\n"
        b"Message-ID: <d@example.org>\r\nList-Id: Dev <dev.lists.example.org>\r\n"
        b"MIME-Version: 1.0\r\n")
TEXT = "Grüße aus Köln — ça va?\r\nLine two with trailing space \r\n".encode()
PLAIN = HEAD + b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + TEXT

B = b"b0undary"
PART_8BIT = b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + TEXT
PART_PDF = (b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
            b"Content-Disposition: attachment; filename=a.pdf\r\n\r\nJVBERi0xLjQKJeLjz9MK\r\n")
PART_ASCII = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nplain ascii part\r\n"
PART_BIN = (b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
            b"\x00\xff\xfe\r\n\x80")
MIXED = (HEAD + b'Content-Type: multipart/mixed; boundary="' + B + b'"\r\n\r\npreamble\r\n'
         + b"\r\n".join(b"--" + B + b"\r\n" + p for p in (PART_8BIT, PART_PDF, PART_ASCII, PART_BIN))
         + b"\r\n--" + B + b"--\r\nepilogue\r\n")


def parts(raw: bytes) -> list[bytes]:
    msg = RawMessage.parse(raw)
    info = mime.content_info(msg.fields)
    layout = mime.scan_multipart(msg.body, info.boundary)
    return [msg.body[s:e] for s, e in layout.parts]


def extra(outcome) -> dict:
    return dict(outcome.record.extra)


def test_8bit_text_plain_becomes_quoted_printable_and_the_signature_verifies():
    outcome = run(PLAIN, context(PLAIN, policy(downgrade_8bit=True, subject_prefix="")))
    n = note(outcome, "downgrade")
    assert n.action == Action.APPLIED and "8bit -> quoted-printable" in n.detail
    assert "needs 8BITMIME: no" in n.detail and extra(outcome)["needs_8bitmime"] is False
    out = outcome.message
    assert out.isascii()                                   # fit for a 7-bit transport
    msg = RawMessage.parse(out)
    assert msg.header_text("content-transfer-encoding") == "quoted-printable"
    # every other original field is byte-identical
    original = {f.raw for f in RawMessage.parse(PLAIN).fields if f.name != "content-transfer-encoding"}
    assert original <= {f.raw for f in msg.fields}
    decoded = email.message_from_bytes(out, policy=email_policy.default).get_content()
    assert decoded.replace("\r\n", "\n").startswith(TEXT.decode().replace("\r\n", "\n"))
    # signed after the downgrade; transported unchanged, it verifies (relist and dkimpy)
    assert [str(s.result) for s in list_sigs(verify_out(out))] == ["pass", "pass"]
    assert dkimpy_ok(out, 0) and dkimpy_ok(out, 1)


def test_one_part_of_multipart_mixed_changes_the_others_stay_byte_identical():
    outcome = run(MIXED, context(MIXED, policy(downgrade_8bit=True, footer="")))
    out = outcome.message
    before, after = parts(MIXED), parts(out)
    assert len(after) == 4
    assert after[1] == before[1] and after[2] == before[2]           # untouched parts
    first = RawMessage.parse(after[0])
    assert first.header_text("content-transfer-encoding") == "quoted-printable"
    assert first.get("content-type").raw == RawMessage.parse(before[0]).get("content-type").raw
    assert mime.qp_decode(first.body).replace(b"\r\n", b"\n") == TEXT.replace(b"\r\n", b"\n")
    last = RawMessage.parse(after[3])
    assert last.header_text("content-transfer-encoding") == "base64"
    assert mime.b64_decode(last.body) == b"\x00\xff\xfe\r\n\x80"
    # preamble, delimiters and epilogue as they were
    body_in, body_out = RawMessage.parse(MIXED).body, RawMessage.parse(out).body
    assert body_out.startswith(b"preamble\r\n--" + B + b"\r\n")
    assert body_out.endswith(b"\r\n--" + B + b"--\r\nepilogue\r\n") and body_in.endswith(b"epilogue\r\n")
    assert out.isascii() and extra(outcome)["needs_8bitmime"] is False
    m = email.message_from_bytes(out, policy=email_policy.default)
    assert [p.get_content_type() for p in m.iter_parts()] == [
        "text/plain", "application/pdf", "text/plain", "application/octet-stream"]
    assert [str(s.result) for s in list_sigs(verify_out(out))] == ["pass", "pass"]
    assert dkimpy_ok(out, 0)


@pytest.mark.parametrize("lp, upstream, applied, fragment", [
    ({"downgrade_8bit": True}, True, True, "downgrade_8bit = true"),
    ({}, False, True, "the upstream MTA lacks 8BITMIME"),
    ({}, True, False, "upstream MTA offers 8BITMIME"),
], ids=["configured", "upstream-7bit", "not-needed"])
def test_when_it_runs(lp, upstream, applied, fragment):
    outcome = run(PLAIN, context(PLAIN, policy(**lp), upstream_8bitmime=upstream))
    n = note(outcome, "downgrade")
    assert (n.action == Action.APPLIED) is applied and fragment in n.detail
    assert extra(outcome)["needs_8bitmime"] is (not applied)
    assert outcome.message.isascii() is applied


def test_raw_8bit_header_is_left_and_recorded():
    raw = PLAIN.replace(b"Subject: hello", "Subject: héllo".encode())
    outcome = run(raw, context(raw, policy(downgrade_8bit=True, subject_prefix="")))
    n = note(outcome, "downgrade")
    assert n.action == Action.APPLIED and "1 header field(s) with raw 8-bit bytes left" in n.detail
    assert "subject" in n.detail and extra(outcome)["needs_8bitmime"] is True
    assert "Subject: héllo".encode() in outcome.message


@pytest.mark.parametrize("name, raw, expect_cte, expect_parts", [
    ("no-cte", HEAD + b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + TEXT, "quoted-printable", None),
    ("no-mime", HEAD.replace(b"MIME-Version: 1.0\r\n", b"") + b"\r\n" + TEXT, "quoted-printable", None),
    ("lf", PLAIN.replace(b"\r\n", b"\n"), "quoted-printable", None),
    ("rfc822", HEAD + b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + PLAIN,
     "7bit", None),
], ids=["no-cte", "no-mime", "lf", "rfc822"])
def test_variants(name, raw, expect_cte, expect_parts):
    new, log = downgrade.downgrade(RawMessage.parse(raw))
    out = new.to_bytes()
    assert out.isascii(), log
    assert new.header_text("content-transfer-encoding") == expect_cte
    assert new.header_text("mime-version") == "1.0"
    if name == "lf":
        assert b"\r" not in out
    if name == "rfc822":
        inner = RawMessage.parse(new.body)
        assert inner.header_text("content-transfer-encoding") == "quoted-printable"
        assert [f.raw for f in inner.fields if f.name != "content-transfer-encoding"] == \
            [f.raw for f in RawMessage.parse(PLAIN).fields if f.name != "content-transfer-encoding"]
    # idempotent: a second pass has nothing to do
    again, log2 = downgrade.downgrade(new)
    assert again is new and log2 == []


def test_broken_or_already_encoded_parts_are_left_and_recorded():
    broken = HEAD + b'Content-Type: multipart/mixed; boundary="zz"\r\n\r\n--zz\r\n' + PART_8BIT
    new, log = downgrade.downgrade(RawMessage.parse(broken))
    assert new.to_bytes() == broken and "no close delimiter" in log[0]
    qp8 = HEAD + b"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\xe9\r\n"
    new, log = downgrade.downgrade(RawMessage.parse(qp8))
    assert new.to_bytes() == qp8 and "8-bit bytes inside quoted-printable left as is" in log[0]


@pytest.mark.parametrize("upstream, applied", [(True, False), (False, True)],
                         ids=["8bitmime-offered", "7bit-upstream"])
def test_preserve_mode_downgrades_only_for_the_transport(upstream, applied):
    outcome = run(PLAIN, context(PLAIN, policy(downgrade_8bit=True, mode="preserve"),
                                 upstream_8bitmime=upstream))
    n = note(outcome, "downgrade")
    assert (n.action == Action.APPLIED) is applied, n.detail
    assert outcome.message.isascii() is applied
