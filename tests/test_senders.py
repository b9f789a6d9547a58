"""Who may have relist sign as a list (issue 11, item 8): only the list's own Mailman.

relist changes and signs a message as list L only when its envelope sender is one of
L's addresses in the forms Mailman uses (``L-bounces``, ``L-bounces+...``, ``L-owner``,
``L-request`` at L's domain) or matches L's ``envelope_senders``.  Anything else (a
local user's mail carrying L's List-Id, or L's List-Id sent from another list's address)
follows ``[server] unknown_list`` and is recorded with the reason.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from datetime import datetime, timezone

import pytest

from relist.config import ConfigError, parse
from relist.core import pipeline, signcache
from relist.core.message import RawMessage
from relist.core.model import Action, Context, Envelope, Work
from relist.core.policy import ListPolicy, RelayPolicy
from relist.core.steps import identify
from relist.demo import load_corpus
from tests.helpers import FIXTURES, client, split_added
from tests.helpers import wait_for
from tests.test_relay import MSG

NOW = datetime(2024, 5, 2, 12, 0, tzinfo=timezone.utc)
LIST = "test@lists.example.org"


def relay(unknown_list: str = "pass", **list_settings) -> RelayPolicy:
    lp = ListPolicy(address=LIST, configured=True, footer="-- \nfooter\n", subject_prefix="[t] ",
                    **list_settings)
    return RelayPolicy(hostname="relist.test", authserv_id="relist.test", unknown_list=unknown_list,
                       lists=(lp,))


def ctx_for(mail_from: str, pol: RelayPolicy | None = None) -> Context:
    return Context(Envelope(mail_from, ("m@example.com",)), pol or relay(), NOW, "S1")


def identified(raw: bytes, mail_from: str, pol: RelayPolicy | None = None) -> Work:
    return identify.apply(Work(RawMessage.parse(raw)), ctx_for(mail_from, pol))


# -- Mailman's forms ----------------------------------------------------------------------

@pytest.mark.parametrize("sender", [
    "test-bounces@lists.example.org",                             # every post and notice
    "test-bounces+m01=members.example@lists.example.org",         # VERP
    "test-bounces+a4f9c2e1b7d3@lists.example.org",                # a bounce probe
    "test-owner@lists.example.org",
    "test-request@lists.example.org",
    "Test-Bounces@Lists.Example.ORG",                             # case-insensitive
])
def test_mailman_forms_sign_as_the_list(sender):
    work = identified(MSG, sender)
    note = work.notes[-1]
    assert note.action == Action.RECORDED and note.detail.startswith(LIST)
    assert work.known.list_policy is not None and work.known.list_address == LIST


@pytest.mark.parametrize("sender", [
    "test-bounces@lists.example.org",
    "test-request@lists.example.org",
])
def test_without_list_id_the_sender_names_the_list(sender):
    raw = MSG.replace(b"List-Id: Test list <test.lists.example.org>\r\n", b"")
    work = identified(raw, sender)
    assert work.known.list_address == LIST and work.known.list_source == "envelope"


def test_every_mailman_corpus_transaction_is_list_mail():
    """All 93 transactions Mailman made (posts, VERP, notices) are recognised as list mail
    of the list they came from, with the lists left unconfigured (list defaults)."""
    txs = load_corpus(FIXTURES / "mailman")
    assert len(txs) >= 93
    forms = set()
    for tx in txs:
        mailman_list = tx.mail_from.split("-bounces")[0] + "@lists.example.org"
        work = identified(tx.data, tx.mail_from, RelayPolicy(unknown_list="reject"))
        assert work.known.list_address == mailman_list, tx.name
        forms.add("verp" if "+" in tx.mail_from else "bounces")
    assert forms == {"verp", "bounces"}


def test_every_corpus_sender_is_a_mailman_form():
    """fixtures/mailman: the envelope senders Mailman really uses are the forms above."""
    senders = {json.loads(p.read_text())["mail_from"] for p in (FIXTURES / "mailman").glob("*/*/out-*.json")}
    assert senders and all(identify.sender_list(s) for s in senders), senders


# -- not list mail -----------------------------------------------------------------------

@pytest.mark.parametrize("sender, why", [
    ("alice@lists.example.org", "a local user"),
    ("root@mailhost.example.org", "cron mail"),
    ("", "the null sender"),
    ("other-bounces@lists.example.org", "another list's address"),
    ("test-bounces@elsewhere.example", "the list's name at another domain"),
    ("test-confirm+abc@lists.example.org", "a role Mailman never uses as envelope sender"),
    ("test@lists.example.org", "the posting address"),
    ("xtest-bounces@lists.example.org", "a longer name"),
])
def test_other_senders_with_the_list_id_are_passed_unchanged(sender, why):
    pol = relay()
    ctx = ctx_for(sender, pol)
    out = pipeline.process(MSG, ctx)
    note = next(n for n in out.record.steps if n.step == "identify")
    assert note.action == Action.SKIPPED, why
    assert f"envelope sender <{sender}> is not one of its addresses" in note.detail
    assert "test-bounces[+...]@lists.example.org" in note.detail and "unknown_list = pass" in note.detail
    assert out.record.list_address is None
    assert out.reply is None
    added, rest = split_added(out.message)
    assert rest == MSG                             # no footer, prefix, List-*, Sender
    assert added == [b"authentication-results", b"received"]
    assert b"DKIM-Signature" not in out.message and b"ARC-Seal" not in out.message


def test_no_list_at_all_still_passes():
    raw = MSG.replace(b"List-Id: Test list <test.lists.example.org>\r\n", b"")
    work = identified(raw, "alice@example.com")
    assert work.notes[-1].action == Action.SKIPPED
    assert work.notes[-1].detail.startswith("no list: no List-Id")


@pytest.mark.parametrize("unknown_list, code, enhanced", [("defer", 451, "4.7.0"), ("reject", 550, "5.7.1")])
def test_other_senders_follow_unknown_list(unknown_list, code, enhanced):
    out = pipeline.process(MSG, ctx_for("alice@lists.example.org", relay(unknown_list)))
    assert out.message is None
    assert (out.reply.code, out.reply.enhanced) == (code, enhanced)
    assert "envelope sender is not an address of the list named in List-Id" in out.reply.text
    assert "\r" not in out.reply.text and "\n" not in out.reply.text


def test_a_list_id_of_another_list_from_a_list_sender():
    """List-Id names one list, the envelope sender is another list's: neither list's."""
    other = ListPolicy(address="other@lists.example.org", configured=True)
    pol = replace(relay(), lists=relay().lists + (other,))
    work = identified(MSG, "other-bounces@lists.example.org", pol)
    assert work.known.list_policy is None
    assert "List-Id names test@lists.example.org" in work.notes[-1].detail


# -- envelope_senders ------------------------------------------------------------------

@pytest.mark.parametrize("patterns, sender, allowed", [
    (("news@lists.example.org",), "news@lists.example.org", True),
    (("news@lists.example.org",), "NEWS@Lists.Example.Org", True),
    (("news@lists.example.org",), "news2@lists.example.org", False),
    (("*@mailman.example.org",), "anything-bounces+x@mailman.example.org", True),
    (("*@mailman.example.org",), "x@mailman.example.org.evil.example", False),
    (("bulk-*@lists.example.org",), "bulk-2024@lists.example.org", True),
    (("a.b@lists.example.org",), "aXb@lists.example.org", False),      # "." is literal
    (("*",), "anyone@anywhere.example", True),                         # "*" alone: any sender
    (("*",), "", True),
    ((), "news@lists.example.org", False),
])
def test_envelope_senders(patterns, sender, allowed):
    work = identified(MSG, sender, relay(envelope_senders=patterns))
    assert (work.known.list_policy is not None) is allowed
    if not allowed and patterns:
        assert "or envelope_senders" in work.notes[-1].detail


def test_envelope_senders_from_the_configuration():
    assert parse({"list_defaults": {"envelope_senders": ["*"]}}).relay.defaults.envelope_senders == ("*",)
    cfg = parse({"list_defaults": {"envelope_senders": ["Site-Owner@Example.org"]},
                 "lists": {LIST: {"envelope_senders": ["News-*@lists.example.org"]}}})
    lp = cfg.relay.list_for_address(LIST)
    assert lp.envelope_senders == ("news-*@lists.example.org",)      # the list's own replaces
    assert cfg.relay.defaults.envelope_senders == ("site-owner@example.org",)
    assert identified(MSG, "news-x@lists.example.org", cfg.relay).known.list_policy is lp
    # a list without a section gets [list_defaults]
    other = MSG.replace(b"test.lists.example.org", b"misc.lists.example.org")
    work = identified(other, "site-owner@example.org", cfg.relay)
    assert work.known.list_address == "misc@lists.example.org"


@pytest.mark.parametrize("value", [["news"], ["<news@lists.example.org>"], ["news @x.org"], ["@x.org"],
                                   ["news@"], ["**"], [1]])
def test_envelope_senders_bad_values_name_the_key(value):
    with pytest.raises(ConfigError) as err:
        parse({"lists": {LIST: {"envelope_senders": value}}})
    assert "envelope_senders" in str(err.value) and LIST in str(err.value)


# -- list names with a dot ---------------------------------------------------------------

def test_a_dotted_list_name_is_found_from_its_sender():
    raw = MSG.replace(b"test.lists.example.org", b"team.a.lists.example.org")
    # not configured: List-Id "team.a.lists.example.org" is the list of team.a-bounces@
    work = identified(raw, "team.a-bounces@lists.example.org", RelayPolicy())
    assert work.known.list_address == "team.a@lists.example.org"
    pol = RelayPolicy(lists=(ListPolicy(address="team.a@lists.example.org", configured=True),))
    work = identified(raw, "team.a-bounces+m=x.example@lists.example.org", pol)
    assert work.known.list_policy is pol.lists[0]


# -- sign once ------------------------------------------------------------------------

def test_sign_cache_never_hands_a_signed_result_to_another_sender():
    """Identical bytes from a sender the list does not allow get no list treatment, even
    right after the list's own transaction of the same post."""
    pol = relay()
    cache = signcache.SignCache()
    first, cache = signcache.process_with(cache, MSG, ctx_for("test-bounces@lists.example.org", pol))
    assert b"[t] " in first.message
    second, cache = signcache.process_with(cache, MSG, ctx_for("alice@lists.example.org", pol))
    assert b"[t] " not in second.message
    assert not any(n.step == signcache.NAME for n in second.record.steps)


# -- over SMTP ---------------------------------------------------------------------------

LISTS = {"lists": {LIST: {"subject_prefix": "[t] ", "mode": "resign", "sign": False}}}


def test_relay_passes_a_local_users_list_id_unchanged_and_records_why(relist_factory, sink, tmp_path):
    srv = relist_factory(LISTS)
    with client(srv.port) as c:
        assert c.sendmail("alice@lists.example.org", ["a@example.com"], MSG) == {}
        assert c.sendmail("test-bounces@lists.example.org", ["a@example.com"], MSG) == {}
    added, rest = split_added(sink.messages[0].data)
    assert rest == MSG
    assert b"Subject: [t] " in sink.messages[1].data
    db = tmp_path / "relist.db"

    def rows():
        with sqlite3.connect(db) as conn:
            return conn.execute("select mail_from, list_address, steps from transactions"
                                " order by rowid").fetchall()
    assert wait_for(lambda: len(rows()) == 2)
    (sender, lst, steps), (_, lst2, _) = rows()
    assert sender == "alice@lists.example.org" and lst is None and lst2 == LIST
    identify_note = next(s for s in json.loads(steps) if s["step"] == "identify")
    assert identify_note["action"] == "skipped"
    assert "<alice@lists.example.org> is not one of its addresses" in identify_note["detail"]


def test_relay_rejects_a_local_users_list_id_with_unknown_list_reject(relist_factory, sink):
    srv = relist_factory({**LISTS, "server": {"unknown_list": "reject"}})
    with client(srv.port) as c:
        c.mail("alice@lists.example.org")
        c.rcpt("a@example.com")
        code, text = c.data(MSG)
    assert code == 550 and b"5.7.1" in text
    assert sink.messages == []


def test_a_from_nested_too_deeply_for_the_email_package_does_not_break_identify():
    raw = MSG.replace(b"From: Poster <poster@poster.example>",
                      b"From: test-request@lists.example.org " + b"(" * 3000 + b")" * 3000)
    work = identified(raw, "test-bounces@lists.example.org")
    assert work.known.list_address == LIST
