"""Mailman's own notices (welcome, goodbye, confirmations) pass through relist and are
signed, but the list's decorations apply to posts only, as in Mailman."""

from __future__ import annotations

import json

import pytest

from relist.core import pipeline
from relist.core.model import Context, Envelope
from relist.core.policy import ListPolicy, RelayPolicy
from relist.core.steps.identify import notice_role
from tests.helpers import FIXTURES
from tests.modes_support import NOW, facts_for

NOTICES = sorted((FIXTURES / "mailman" / "notices").glob("*/out-*.eml"))
POST = FIXTURES / "mailman" / "cases" / "decorated-01-plain-text" / "out-01.eml"
DECORATIONS = ("remove-headers", "subject-prefix", "footer", "list-headers", "sender", "reply-to")


@pytest.mark.parametrize("from_text, role", [
    ("plain-request@lists.example.org", "request"),
    ("<plain-confirm+4f2a9c@lists.example.org>", "confirm"),
    ('"Plain" <PLAIN-OWNER@Lists.Example.Org>', "owner"),
    ("plain-bounces+new1=members.example@lists.example.org", "bounces"),
    ("plain@lists.example.org", ""),                      # Mailman's DMARC munging: a post
    ("Alice via Plain <plain@lists.example.org>", ""),
    ("plain-request@elsewhere.example", ""),
    ("plain-archive@lists.example.org", ""),              # not a Mailman role
    ("plainer-request@lists.example.org", ""),
    ("plain-request@lists.example.org, x@y.example", ""),
])
def test_notice_role(from_text, role):
    assert notice_role(from_text, "plain@lists.example.org") == role


def policy_for(address: str) -> RelayPolicy:
    lp = ListPolicy(address=address, configured=True, mode="resign", footer="-- \nfooter\n",
                    subject_prefix="[x] ", list_headers="replace", reply_to="list",
                    remove_headers=("X-No-Archive",))
    return RelayPolicy(hostname="relist.test", authserv_id="relist.test", lists=(lp,))


def run(path):
    raw = path.read_bytes()
    meta = json.loads(path.with_suffix(".json").read_text())
    rcpt = meta["rcpt_tos"]
    lst = meta["mail_from"].split("-bounces")[0] + "@lists.example.org"
    pol = policy_for(lst)
    ctx = Context(Envelope(meta["mail_from"], tuple(rcpt)), pol, NOW, "n1", facts_for(raw, pol, {}))
    return raw, pipeline.process(raw, ctx)


def test_every_corpus_post_is_a_post():
    posts = sorted((FIXTURES / "mailman" / "cases").glob("*/out-*.eml"))
    assert len(posts) > 80
    for path in posts:
        _, out = run(path)
        assert "notice" not in out.record.steps[1].detail, path


@pytest.mark.parametrize("path", NOTICES, ids=[f"{p.parent.name}/{p.stem}" for p in NOTICES])
def test_notices_are_not_decorated(path):
    raw, out = run(path)
    notes = {n.step: n for n in out.record.steps}
    assert "a Mailman notice" in notes["identify"].detail
    for step in DECORATIONS:
        assert notes[step].action == "skipped" and "Mailman notice" in notes[step].detail, step
    head_in = raw.split(b"\r\n\r\n", 1)[0]
    body_in = raw.split(b"\r\n\r\n", 1)[1]
    assert out.message.endswith(b"\r\n\r\n" + body_in)           # no footer
    assert out.message.endswith(head_in + b"\r\n\r\n" + body_in)  # only fields added above


def test_a_post_on_the_same_list_is_decorated():
    _, out = run(POST)
    notes = {n.step: n for n in out.record.steps}
    assert "notice" not in notes["identify"].detail
    assert notes["footer"].action == "applied" and notes["subject-prefix"].action == "applied"
