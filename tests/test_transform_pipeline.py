"""The six transformation steps together, in the order recommended for STEPS."""

from __future__ import annotations

import email
from datetime import datetime, timezone
from email import policy as email_policy
from pathlib import Path

import pytest

from relist.core.message import RawMessage
from relist.core.model import Action, Context, Envelope, Known, Work
from relist.core.policy import ListPolicy, RelayPolicy
from relist.core.steps import (
    footer, list_headers, remove_headers, reply_to, sender, subject_prefix,
)

DATA = Path(__file__).resolve().parent / "data" / "transform"
ORDER = (remove_headers, subject_prefix, footer, list_headers, sender, reply_to)

LP = ListPolicy(address="ant@example.org", display_name="Ant", subject_prefix="[{list_name}] ",
                footer="-- \n{list_name}: {unsubscribe_url}\n", reply_to="list",
                remove_headers=("Return-Path", "User-Agent"), list_headers="replace",
                unsubscribe_url="https://lists.example.org/ant/u")
CTX = Context(Envelope("ant-bounces@example.org", ("m@example.com",)), RelayPolicy(),
              datetime(2024, 3, 6, tzinfo=timezone.utc), "r1")


def run(raw: bytes) -> Work:
    work = Work(RawMessage.parse(raw), Known(list_policy=LP))
    for step in ORDER:
        work = step.apply(work, CTX)
    return work


@pytest.mark.parametrize("name", ["thunderbird-alternative.eml", "mixed-pdf.eml"])
def test_all_steps_then_retry(name):
    raw = (DATA / name).read_bytes()
    work = run(raw)
    assert [n.step for n in work.notes] == [s.NAME for s in ORDER]
    assert all(n.action == Action.APPLIED for n in work.notes if n.step != "remove-headers"), work.notes
    out = work.message.to_bytes()
    m = email.message_from_bytes(out, policy=email_policy.default)
    assert m["Subject"].startswith("[Ant] ")
    assert m["Sender"] == "ant-bounces@example.org"
    assert m["Reply-To"] == "ant@example.org"
    assert m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "Return-Path" not in m and "User-Agent" not in m
    # A retry of the whole sequence changes nothing (Mailman may resend after a 4xx).
    again = run(out)
    assert again.message.to_bytes() == out
    assert all(n.action == Action.SKIPPED for n in again.notes if n.step != "remove-headers")


def test_mutated_messages_never_crash_and_stay_idempotent():
    """Seeded byte mutations of every fixture (a fuzz run of 360,000 step calls found
    the crashes this guards against: CharsetError from a non-ASCII charset name, a NUL
    in a charset, stray CR inside Content-Type, surrogates in a Subject)."""
    import random
    from tests import test_transform_footer as tf
    from tests import test_transform_subject as ts
    seeds = [c[1] for c in tf.CASES] + [ts.msg(c[1]) for c in ts.CASES]
    policies = [
        ListPolicy(address="ant@example.org", display_name="Fourmis é", subject_prefix="[{list_name}] ",
                   footer="Grüße {list_name}\n", reply_to="list", remove_headers=("x-a",)),
        ListPolicy(address="ant@example.org", subject_prefix="[{list_name}]", footer="-- \nplain\n",
                   list_headers="replace", unsubscribe_url="https://lists.example.org/u"),
    ]
    rng = random.Random(20240306)
    alphabet = b"=?:;\"\r\n -\xc3\xa9\xff\x00boundaryqQbB["
    for _ in range(1500):
        raw = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            p = rng.randrange(len(raw) + 1)
            op = rng.random()
            if op < 0.4:
                raw[p:p] = bytes([rng.choice(alphabet)])
            elif p < len(raw):
                if op < 0.8:
                    del raw[p]
                else:
                    raw[p] = rng.choice(alphabet)
        msg = RawMessage.parse(bytes(raw))
        lp = rng.choice(policies)
        for step in ORDER:
            out, detail = step.transform(msg, lp)
            assert detail
            if out is not None:
                email.message_from_bytes(out.to_bytes())
                if step is not remove_headers:
                    assert step.transform(out, lp)[0] is None, (step.NAME, bytes(raw))
