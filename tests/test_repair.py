"""The repair step (preserve mode, egress leg): what Mailman broke without meaning to is
undone and proven, over posts really signed with dkimpy; then the same over the real
Mailman 3 corpus in fixtures/mailman (skipped when absent)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from relist.core.facts import Answer, Facts, Question, Status
from relist.core.ingress import IngressCopy
from relist.core.model import Action
from relist.core.policy import ListPolicy, RelayPolicy
from tests.modes_support import (
    H, mail_dkim, note, poster_results, relay_policy, run, sign,
)
from tests.helpers import needs_mail_dkim

CORPUS = Path(__file__).resolve().parent.parent / "fixtures" / "mailman"

HEAD = (b"From: Alice Poster <alice@poster.example>\r\n"
        b"To: The Ant Mailing List Of Example <ant@lists.example.org>,\r\n"
        b" Bob Poster With A Long Display Name <bob@poster.example>\r\n")
REST = (b"Date: Wed, 01 May 2024 10:00:00 +0000\r\n"
        b"Message-ID: <r1@poster.example>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n")
CC = b"Cc: Dave Poster <dave@poster.example>,\r\n\tEve <eve@poster.example>\r\n"
SUBJECT = b"Subject: plain subject\r\n"
BODY = b"Hello list.\r\nFrom the desk of Alice: a line Mailman escapes.\r\nBye.\r\n"
# What Mailman adds below the post's fields (plain list, include_rfc2369_headers on).
MAILMAN = (b"Message-ID-Hash: MFBJEJFOAQXL3FOSNUQ3OJ2L42OV4FLB\r\n"
           b"X-Mailman-Version: 3.3.10\r\n"
           b"Precedence: list\r\n"
           b"List-Id: <ant.lists.example.org>\r\n"
           b"List-Post: <mailto:ant@lists.example.org>\r\n")
SIMPLE, RELAXED = (b"simple", b"simple"), (b"relaxed", b"relaxed")


def post_of(head: bytes, body: bytes = BODY) -> bytes:
    return head + REST + b"\r\n" + body


def split(signed: bytes) -> tuple[bytes, bytes]:
    head, _, body = signed.partition(b"\r\n\r\n")
    return head + b"\r\n", body


def from_escaping(signed):
    head, body = split(signed)
    return head + MAILMAN + b"\r\n" + body.replace(b"\r\nFrom the desk", b"\r\n>From the desk")


def cc_rewritten_and_moved(signed):
    head, body = split(signed)
    return head.replace(CC, b"") + MAILMAN + b"CC: Dave Poster <dave@poster.example>,\r\n" \
        b" Eve <eve@poster.example>\r\n" + b"\r\n" + body


def refolded(signed):
    head, body = split(signed)
    return head.replace(b"Example <ant@lists.example.org>,\r\n Bob",
                        b"Example\r\n <ant@lists.example.org>, Bob") + MAILMAN + b"\r\n" + body


def subject_reencoded(signed):
    head, body = split(signed)
    return head.replace(b"=?utf-8?q?Caf=C3=A9_cr=C3=A8me?=", b"=?utf-8?b?Q2Fmw6kgY3LDqG1l?=") \
        + MAILMAN + b"\r\n" + body


def mailman_adds(signed):
    head, body = split(signed)
    return head + MAILMAN + b"\r\n" + body


CASES = {
    # name: (post, canonicalization, h=, what Mailman does, expected repair text)
    "from-escaping": (post_of(HEAD + SUBJECT), SIMPLE, H, from_escaping,
                      'body: poster\'s bytes restored (Mailman escaped 1 "From " line(s)'),
    "cc-rewritten-moved": (post_of(HEAD + CC + SUBJECT, b"Hi.\r\n"), SIMPLE, H + ("cc",),
                           cc_rewritten_and_moved, "Cc: poster's bytes restored"),
    "refolded-simple": (post_of(HEAD + SUBJECT, b"Hi.\r\n"), SIMPLE, H, refolded,
                        "To: poster's bytes restored"),
    "subject-reencoded": (post_of(HEAD + b"Subject: =?utf-8?q?Caf=C3=A9_cr=C3=A8me?=\r\n", b"Hi.\r\n"),
                          SIMPLE, H, subject_reencoded, "Subject: poster's bytes restored"),
    "oversigned-list-id": (post_of(HEAD + SUBJECT, b"Hi.\r\n"), RELAXED,
                           H + ("list-id", "list-post", "precedence"), mailman_adds,
                           "List-Id: dropped 1 added by Mailman (h= signs 1, the post had 0)"),
}


def egress(name):
    post, canon, h, mailman, expected = CASES[name]
    signed = sign(post, headers=h, canon=canon)
    return signed, mailman(signed), expected


def run_egress(signed: bytes, out: bytes, **settings):
    pol = relay_policy(**{"mode": "preserve", **settings})
    return run(out, pol, ingress=(IngressCopy("in1", signed),), extra_facts=signed)


@pytest.mark.parametrize("name", sorted(CASES))
def test_repair_restores_validity(name):
    signed, out, expected = egress(name)
    work, ctx = run_egress(signed, out)
    assert [s.result for s in poster_results(out, ctx)] == ["fail"]   # Mailman's bytes alone
    repair = note(work, "repair")
    assert repair.action == Action.APPLIED and expected in repair.detail, repair.detail
    assert repair.detail.endswith("proof: poster.example/s1 pass")
    result = work.message.to_bytes()
    assert [s.result for s in poster_results(result, ctx)] == ["pass"]
    assert b"X-Mailman-Version: 3.3.10\r\n" in result and b"Message-ID-Hash: " in result
    assert work.known.breakage == (("poster.example/s1", "survived"),)
    assert dict(work.known.extra)["repairs"]


@needs_mail_dkim
@pytest.mark.parametrize("name", sorted(CASES))
def test_repaired_output_verifies_with_mail_dkim(name, tmp_path):
    signed, out, _ = egress(name)
    work, _ = run_egress(signed, out)
    assert mail_dkim(out, tmp_path).startswith("fail\n")               # Mailman's bytes alone
    assert mail_dkim(work.message.to_bytes(), tmp_path).startswith("pass\n")


def test_oversigned_fields_stay_out_after_repair():
    signed, out, _ = egress("oversigned-list-id")
    work, _ = run_egress(signed, out)
    for name in ("list-id", "list-post", "precedence"):
        assert work.message.get(name) is None, name
    # relist's own list-headers step does not add them back (in every mode), only the
    # list fields the poster did not sign.
    assert note(work, "list-headers").detail == (
        "added: List-Help, List-Unsubscribe, List-Subscribe, List-Owner; "
        "not added: List-Id, List-Post (a poster signature signs their absence)")


def test_unproven_repair_keeps_mailmans_bytes():
    signed, _, _ = egress("cc-rewritten-moved")
    out = cc_rewritten_and_moved(signed) + b"-- \r\nA Mailman footer.\r\n"
    work, ctx = run_egress(signed, out)
    repair = note(work, "repair")
    assert repair.action == Action.SKIPPED
    assert repair.detail.startswith("repair not proven (poster.example/s1: body hash mismatch")
    assert "Mailman's bytes kept; tried: Cc: poster's bytes restored" in repair.detail
    assert "not repaired: body: Mailman changed its content" in repair.detail
    assert b"\r\nCC: Dave Poster" in work.message.to_bytes()
    assert work.known.breakage == (("poster.example/s1", "mailman"),)


def test_meaningful_change_is_not_undone():
    signed, _, _ = egress("refolded-simple")
    out = mailman_adds(signed).replace(b"Subject: plain subject", b"Subject: [ant] plain subject")
    work, _ = run_egress(signed, out)
    assert note(work, "repair").detail == (
        "nothing repaired; not repaired: subject: Mailman changed its meaning; left as Mailman sent it")
    assert b"Subject: [ant] plain subject" in work.message.to_bytes()


def test_repair_needs_an_ingress_copy():
    signed, out, _ = egress("from-escaping")
    work, _ = run(out, relay_policy(mode="preserve"))
    assert note(work, "repair").detail == "no ingress copy: nothing to repair against"


@pytest.mark.parametrize("mode", ["preserve", "resign", "auto"])
def test_repair_runs_in_every_mode(mode):
    # Undoing Mailman's accident never hurts: in resign mode too the repaired signature
    # survives (nothing the list configured touches it), is kept, and gives DMARC its pass.
    signed, out, _ = egress("from-escaping")
    work, ctx = run(out, relay_policy(mode=mode), ingress=(IngressCopy("in1", signed),),
                    extra_facts=signed)
    assert note(work, "repair").action == Action.APPLIED
    assert [s.result for s in poster_results(work.message.to_bytes(), ctx)] == ["pass"]
    assert note(work, "dmarc-mitigation").action == Action.SKIPPED


# -- the real Mailman corpus -------------------------------------------------------------

def corpus_cases():
    if not (CORPUS / "cases").is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(
            reason=f"Mailman corpus absent ({CORPUS / 'cases'}): run fixtures/mailman/capture.py"))]
    out = []
    for case in sorted((CORPUS / "cases").glob("plain-*")):
        meta = json.loads((case / "meta.json").read_text())
        if meta.get("signed"):
            out.append(pytest.param(case, id=case.name))
    return out


def corpus_facts() -> Facts:
    dns = json.loads((CORPUS / "dns.json").read_text())
    return Facts({Question.txt(name): Answer(Status.FOUND, tuple(v.encode() for v in values))
                  for name, values in dns.items()})


@pytest.mark.parametrize("case", corpus_cases())
def test_mailman_corpus_plain_list_preserve_keeps_every_poster_signature(case):
    from relist.core import pipeline
    from relist.core.verify import verify_message
    from relist.core.message import RawMessage
    from relist.core.model import Context, Envelope, Work

    meta = json.loads((case / "meta.json").read_text())
    post, out = (case / "post.eml").read_bytes(), (case / "out-01.eml").read_bytes()
    env = json.loads((case / "out-01.json").read_text())
    lp = ListPolicy(address=meta["list"], configured=True, mode="preserve")
    pol = RelayPolicy(hostname="relist.test", authserv_id="relist.test", lists=(lp,))
    now = datetime(2024, 5, 2, tzinfo=timezone.utc)    # the posts' t= are 1 May 2024
    facts = corpus_facts()
    ctx = Context(Envelope(env["mail_from"], tuple(env["rcpt_tos"])), pol, now, "r1", facts,
                  ingress=(IngressCopy("in1", post),))
    work = Work(RawMessage.parse(out))
    for step in pipeline.STEPS:
        work = step.apply(work, ctx)
    assert note(work, "verify").detail.startswith("as received by ingress")
    signers = len(meta["signers"])
    arrived = verify_message(RawMessage.parse(post), facts, now).dkim
    assert [s.result for s in arrived] == ["pass"] * signers
    result = verify_message(work.message, facts, now).dkim
    assert [s.result for s in result] == ["pass"] * signers, note(work, "repair").detail
    assert [step for _, step in work.known.breakage] == ["survived"] * signers
