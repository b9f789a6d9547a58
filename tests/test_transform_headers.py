"""sender, list-headers, reply-to, remove-headers: header-only steps over real bytes."""

from __future__ import annotations

import email
from datetime import datetime, timezone
from email import policy as email_policy

import pytest

from relist.core.message import RawMessage
from relist.core.model import Action, Context, Envelope, Known, Work
from relist.core.policy import ListPolicy, RelayPolicy
from relist.core.steps import list_headers, remove_headers, reply_to, sender

# As Mailman 3.3 hands a post over (rfc-2369 and cook-headers ran), LF folded fields kept.
MAILMAN = (
    b"Received: from mx.example.net (mx.example.net [192.0.2.7])\r\n"
    b"\tby lists.example.org (Postfix) with ESMTPS id 4TqK1x\r\n"
    b"\tfor <ant@example.org>; Wed, 6 Mar 2024 09:00:01 +0000 (UTC)\r\n"
    b"From: Ann Poster <ann@example.net>\r\n"
    b"To: ant@example.org\r\n"
    b"Subject: [Ant] Minutes\r\n"
    b"Message-ID: <minutes-1@example.net>\r\n"
    b"Sender: someone@example.net\r\n"
    b"Reply-To: ann@example.net\r\n"
    b"X-Originating-IP: [198.51.100.9]\r\n"
    b"x-originating-ip: [198.51.100.10]\r\n"
    b"Message-ID-Hash: 6L3QZJ4D2Q4WZ6Y3HQK5V7PZQF4X7BNA\r\n"
    b"X-Message-ID-Hash: 6L3QZJ4D2Q4WZ6Y3HQK5V7PZQF4X7BNA\r\n"
    b"X-Mailman-Version: 3.3.10\r\n"
    b"Precedence: list\r\n"
    b"List-Id: Ant list <ant.example.org>\r\n"
    b"Archived-At: <https://lists.example.org/archives/ant/message/6L3QZJ/>\r\n"
    b"List-Archive: <https://lists.example.org/archives/list/ant@example.org/>\r\n"
    b"List-Help: <mailto:ant-request@example.org?subject=help>\r\n"
    b"List-Owner: <mailto:ant-owner@example.org>\r\n"
    b"List-Post: <mailto:ant@example.org>\r\n"
    b"List-Subscribe: <mailto:ant-join@example.org>\r\n"
    b"List-Unsubscribe: <mailto:ant-leave@example.org>\r\n"
    b"\r\n"
    b"The minutes.\r\n"
)
BARE = b"From: Ann <ann@example.net>\r\nTo: ant@example.org\r\nSubject: hi\r\n\r\nbody\r\n"

LP = ListPolicy(address="ant@example.org")
FULL = ListPolicy(address="ant@example.org", display_name="Ant list",
                  unsubscribe_url="https://lists.example.org/ant/unsub",
                  archive_url="https://lists.example.org/archives/ant/",
                  help_url="https://lists.example.org/ant/help",
                  subscribe_url="https://lists.example.org/ant/join")


def others_kept(before: RawMessage, after: RawMessage, names: set[str]):
    assert [f.raw for f in before.fields if f.name not in names] == \
        [f.raw for f in after.fields if f.name not in names]
    assert after.body == before.body


def parses(raw: bytes):
    m = email.message_from_bytes(raw, policy=email_policy.default)
    assert not m.defects
    return m


# -- sender ---------------------------------------------------------------------------------

@pytest.mark.parametrize("raw,was", [(BARE, None), (MAILMAN, "someone@example.net")],
                         ids=["absent", "replaced"])
def test_sender(raw, was):
    before = RawMessage.parse(raw)
    after, detail = sender.transform(before, LP)
    assert [f.raw for f in after.get_all("sender")] == [b"Sender: ant-bounces@example.org\r\n"]
    assert (was or "") in detail
    others_kept(before, after, {"sender"})
    if was:   # replaced in place, not moved
        names = [f.name for f in before.fields]
        assert [f.name for f in after.fields].index("sender") == names.index("sender")
    assert sender.transform(after, LP)[0] is None


def test_sender_off():
    off = ListPolicy(address="ant@example.org", add_sender=False)
    after, why = sender.transform(RawMessage.parse(BARE), off)
    assert after is None and why == "add_sender = false"


# -- reply-to --------------------------------------------------------------------------------

@pytest.mark.parametrize("setting,raw,want", [
    ("list", BARE, b"Reply-To: ant@example.org\r\n"),
    ("list", MAILMAN, b"Reply-To: ant@example.org\r\n"),
    ("Ant discussion <ant-talk@example.org>", MAILMAN,
     b"Reply-To: Ant discussion <ant-talk@example.org>\r\n"),
], ids=["list-absent", "list-replaces", "explicit"])
def test_reply_to(setting, raw, want):
    policy = ListPolicy(address="ant@example.org", reply_to=setting)
    before = RawMessage.parse(raw)
    after, _ = reply_to.transform(before, policy)
    assert [f.raw for f in after.get_all("reply-to")] == [want]
    others_kept(before, after, {"reply-to"})
    assert reply_to.transform(after, policy)[0] is None


@pytest.mark.parametrize("setting,reason", [("", "left alone"), ("a@b\r\nBcc: x@y", "not a usable address"),
                                            ("nobody", "not a usable address")])
def test_reply_to_not_applied(setting, reason):
    policy = ListPolicy(address="ant@example.org", reply_to=setting)
    after, why = reply_to.transform(RawMessage.parse(MAILMAN), policy)
    assert after is None and reason in why


# -- remove-headers -------------------------------------------------------------------------------

def test_remove_headers_all_occurrences_case_insensitive():
    policy = ListPolicy(address="ant@example.org",
                        remove_headers=("X-ORIGINATING-IP", "x-mailman-version", "X-Absent"))
    before = RawMessage.parse(MAILMAN)
    after, detail = remove_headers.transform(before, policy)
    assert after.get("x-originating-ip") is None and after.get("x-mailman-version") is None
    assert detail == "removed x-mailman-version (1), x-originating-ip (2)"
    others_kept(before, after, {"x-originating-ip", "x-mailman-version"})
    again, why = remove_headers.transform(after, policy)
    assert again is None and "none of the configured fields present" in why


def test_remove_headers_prefix_name_not_removed():
    # Removing "Message-ID-Hash" must not touch "X-Message-ID-Hash" or "Message-ID".
    policy = ListPolicy(address="ant@example.org", remove_headers=("Message-ID-Hash",))
    after, _ = remove_headers.transform(RawMessage.parse(MAILMAN), policy)
    assert after.get("x-message-id-hash") is not None and after.get("message-id") is not None


def test_remove_headers_none_configured():
    assert remove_headers.transform(RawMessage.parse(MAILMAN), LP) == (None, "no fields configured")


# -- list-headers ---------------------------------------------------------------------------------

LIST_NAMES = {n.lower() for n in list_headers.NAMES}


def test_list_headers_on_bare_message():
    before = RawMessage.parse(BARE)
    after, detail = list_headers.transform(before, FULL)
    got = {f.name: f.raw for f in after.fields if f.name in LIST_NAMES}
    assert got["list-id"] == b'List-Id: "Ant list" <ant.example.org>\r\n'
    assert got["list-post"] == b"List-Post: <mailto:ant@example.org>\r\n"
    assert got["list-owner"] == b"List-Owner: <mailto:ant-owner@example.org>\r\n"
    assert got["list-archive"] == b"List-Archive: <https://lists.example.org/archives/ant/>\r\n"
    assert got["list-unsubscribe"] == (b"List-Unsubscribe: <https://lists.example.org/ant/unsub>,\r\n"
                                       b" <mailto:ant-leave@example.org>\r\n")
    assert got["list-unsubscribe-post"] == b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    m = parses(after.to_bytes())
    assert "<mailto:ant-request@example.org?subject=help>" in str(m["List-Help"])
    assert "<https://lists.example.org/ant/join>" in str(m["List-Subscribe"])
    for f in after.fields:
        assert all(len(line) <= 78 for line in f.raw.split(b"\r\n"))
    others_kept(before, after, LIST_NAMES)
    assert list_headers.transform(after, FULL)[0] is None


def test_keep_leaves_mailman_fields_byte_identical_and_adds_missing():
    # A hand-edited or older Mailman message missing List-Owner.
    before = RawMessage.parse(MAILMAN).remove("list-owner")
    after, detail = list_headers.transform(before, FULL)      # list_headers = "keep"
    assert detail.startswith("added: List-Owner; kept: List-Id, List-Help")
    assert after.get("list-owner").raw == b"List-Owner: <mailto:ant-owner@example.org>\r\n"
    for name in ("list-id", "list-help", "list-unsubscribe", "list-post", "list-archive"):
        assert [f.raw for f in after.get_all(name)] == [f.raw for f in before.get_all(name)]
    # Nothing duplicated; Mailman's List-Unsubscribe has no https URI, so no one-click.
    for name in LIST_NAMES:
        assert len(after.get_all(name)) <= 1
    assert after.get("list-unsubscribe-post") is None
    assert list_headers.transform(after, FULL)[0] is None


def test_keep_with_nothing_missing_is_a_noop():
    after, why = list_headers.transform(RawMessage.parse(MAILMAN), LP)
    assert after is None and "already present" in why


def test_replace_writes_relists_fields_once():
    policy = ListPolicy(address="ant@example.org", list_headers="replace",
                        unsubscribe_url="https://lists.example.org/ant/unsub")
    before = RawMessage.parse(MAILMAN)
    after, detail = list_headers.transform(before, policy)
    assert after.get("list-id").raw == b"List-Id: <ant.example.org>\r\n"
    assert after.get("list-archive") is None           # no archive_url configured
    assert after.get("list-unsubscribe-post").raw.endswith(b"List-Unsubscribe=One-Click\r\n")
    for name in LIST_NAMES:
        assert len(after.get_all(name)) <= 1
    # Archived-At is not a list field of ours: kept.
    assert after.get("archived-at").raw == before.get("archived-at").raw
    others_kept(before, after, LIST_NAMES)
    again, why = list_headers.transform(after, policy)
    assert again is None and "already as configured" in why


def test_one_click_only_with_https():
    policy = ListPolicy(address="ant@example.org", list_headers="replace",
                        unsubscribe_url="http://lists.example.org/ant/unsub")
    after, _ = list_headers.transform(RawMessage.parse(MAILMAN), policy)
    assert after.get("list-unsubscribe-post") is None


def test_non_ascii_display_name_is_encoded():
    policy = ListPolicy(address="fourmis@example.org", display_name='Les "fourmis" é')
    after, _ = list_headers.transform(RawMessage.parse(BARE), policy)
    m = parses(after.to_bytes())
    assert str(m["List-Id"]) == 'Les "fourmis" é <fourmis.example.org>'
    quoted = ListPolicy(address="ant@example.org", display_name='Ant "the" list')
    after, _ = list_headers.transform(RawMessage.parse(BARE), quoted)
    assert after.get("list-id").raw == b'List-Id: "Ant \\"the\\" list" <ant.example.org>\r\n'


def test_bad_url_refused():
    policy = ListPolicy(address="ant@example.org", archive_url="https://x>\r\nBcc: y@z")
    after, why = list_headers.transform(RawMessage.parse(BARE), policy)
    assert after is None and "unusable URL" in why


# -- every step: no list -> skipped ---------------------------------------------------------------

@pytest.mark.parametrize("step", [sender, list_headers, reply_to, remove_headers])
def test_no_list_is_skipped(step):
    ctx = Context(Envelope("x@example.net", ("y@example.com",)), RelayPolicy(),
                  datetime(2024, 3, 6, tzinfo=timezone.utc), "r1")
    w = step.apply(Work(RawMessage.parse(BARE)), ctx)
    assert w.notes[-1] .as_dict() == {"step": step.NAME, "action": "skipped", "detail": "no list"}
    w = step.apply(Work(RawMessage.parse(BARE), Known(list_policy=FULL)), ctx)
    assert w.notes[-1].step == step.NAME and w.notes[-1].action in (Action.APPLIED, Action.SKIPPED)
