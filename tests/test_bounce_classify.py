"""Bounces (issue 13): why a delivery failed -- the rules table, row by row, and the traps."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from relist.core.bounce import AUTHENTICATION, RULES, Cause, Classification, classify
from relist.core.bounce.classify import enhanced_codes


def test_rule_names_are_unique():
    assert [n for n, k in Counter(r.name for r in RULES).items() if k > 1] == []


@pytest.mark.parametrize("rule", RULES, ids=[r.name for r in RULES])
def test_every_rule_classifies_its_own_example(rule):
    assert rule.source and rule.example
    why = classify("", rule.example)
    assert (why.rule, why.cause) == (rule.name, rule.cause)
    # the status a DSN would carry with it gives the same answer
    codes = enhanced_codes(rule.example)
    if codes:
        assert classify(codes[0], rule.example).rule == rule.name


@pytest.mark.parametrize("rule", RULES, ids=[r.name for r in RULES])
def test_every_pattern_compiles_and_the_last_row_matches_everything(rule):
    for pattern in (rule.status, rule.text):
        re.compile(pattern)
    assert (RULES[-1].status, RULES[-1].text, RULES[-1].cause) == ("", "", Cause.OTHER)


# (status, diagnostic, cause, permanent, rule): the traps of issue 13 and the codes alone
TRAPS = [
    # 5.7.1 is spam, relaying and DMARC alike: the text decides
    ("5.7.1", ("550-5.7.1 [192.0.2.25] Our system has detected that this message is 550-5.7.1 likely "
     "unsolicited mail. To reduce the amount of spam sent to Gmail, 550-5.7.1 this message has been "
     "blocked."), Cause.SPAM, True, "gmail-spam"),
    ("5.7.1", "554 5.7.1 <m07@members.example>: Relay access denied", Cause.OTHER, True, "relay-denied"),
    ("5.7.1", "550 5.7.1 Unable to relay for m07@members.example", Cause.OTHER, True, "relay-denied"),
    ("5.7.1", ("550 5.7.1 Unauthenticated email from yahoo.com is not accepted due to domain's DMARC "
     "policy. Please contact administrator of yahoo.com domain if this was a legitimate mail."),
     Cause.DMARC, True, "gmail-dmarc"),
    ("5.7.1", "550 5.7.1 Message refused", Cause.OTHER, True, "x.7.1"),
    ("5.7.1", "", Cause.OTHER, True, "x.7.1"),
    # temporary authentication failures are not permanent
    ("4.7.26", ("421-4.7.26 This email has been rate limited because it is unauthenticated. Gmail "
     "requires all senders to authenticate with either SPF or DKIM."), Cause.AUTH, False,
     "gmail-unauthenticated"),
    ("", ("451-4.7.26 Unauthenticated email from poster.example is not accepted due to domain's DMARC "
     "policy, but temporary DNS failures prevent authentication."), Cause.DMARC, False, "gmail-dmarc"),
    ("4.7.27", ("421-4.7.27 Your email has been rate limited because SPF authentication didn't pass for "
     "this message. Gmail requires all bulk email senders to authenticate their email with SPF."),
     Cause.SPF, False, "gmail-spf"),
    ("4.7.30", ("421-4.7.30 Your email has been rate limited because DKIM authentication didn't pass for "
     "this message."), Cause.DKIM, False, "gmail-dkim"),
    ("4.7.0", ("421 4.7.0 [TSS04] Messages from 192.0.2.25 temporarily deferred due to unexpected volume "
     "or user complaints - 4.16.55.1"), Cause.SPAM, False, "yahoo-complaints"),
    # mailboxes
    ("4.2.2", "452-4.2.2 The recipient's inbox is out of storage space.", Cause.MAILBOX, False,
     "mailbox-full"),
    ("5.2.2", "552-5.2.2 The recipient's inbox is out of storage space and inactive.", Cause.MAILBOX,
     True, "mailbox-full"),
    ("5.1.1", "550-5.1.1 The email account that you tried to reach does not exist.", Cause.MAILBOX, True,
     "mailbox-unknown"),
    ("5.1.1", "", Cause.MAILBOX, True, "mailbox-status"),
    ("5.2.1", "550 5.2.1 The email account that you tried to reach is inactive.", Cause.MAILBOX, True,
     "mailbox-unknown"),
    ("5.1.10", "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
     Cause.MAILBOX, True, "mailbox-unknown"),
    ("4.2.2", "", Cause.MAILBOX, False, "mailbox-status"),
    # a mailbox code whose text is DMARC (Comcast), and a mailbox text whose cause is SPF (GMX)
    ("5.2.0", "550 5.2.0 meQj1n01053u42A0HeQj3v Message rejected due to DMARC.", Cause.DMARC, True,
     "comcast-dmarc"),
    ("5.0.0", "550-Requested action not taken: mailbox unavailable 550 Reject due to SPF policy.",
     Cause.SPF, True, "gmx-spf"),
    # the codes that name a cause by themselves
    ("5.7.26", "", Cause.DMARC, True, "rfc7372-multiple"),
    ("5.7.23", "", Cause.SPF, True, "rfc7372-spf"),
    ("4.7.24", "", Cause.SPF, False, "rfc7372-spf"),
    ("5.7.20", "", Cause.DKIM, True, "rfc7372-dkim"),
    ("5.7.25", "", Cause.AUTH, True, "rfc7372-rdns"),
    ("5.7.509", "", Cause.DMARC, True, "microsoft-5.7.509"),
    ("5.7.515", "", Cause.AUTH, True, "microsoft-5.7.515"),
    # an unspecific Status with the specific code in the text (Exim reports 5.0.0)
    ("5.0.0", "550 5.7.26 blocked", Cause.DMARC, True, "rfc7372-multiple"),
    # codes a provider uses differently from the registry are not trusted alone
    ("5.7.29", "", Cause.OTHER, True, "unclassified"),
    ("5.7.30", "", Cause.OTHER, True, "unclassified"),
    # submission and recipient-side restrictions are not the post's authentication
    ("5.7.1", "530 5.7.0 Authentication required", Cause.OTHER, True, "submission-auth"),
    ("5.7.12", "550 5.7.12 Sender was not authenticated by organization", Cause.OTHER, True,
     "submission-auth"),
    # nothing at all
    ("", "", Cause.OTHER, True, "unclassified"),
    ("", "host mx.members.example said: something went wrong", Cause.OTHER, True, "unclassified"),
    ("", "421 try again later", Cause.OTHER, False, "unclassified"),
    ("2.0.0", "250 2.0.0 OK", Cause.OTHER, False, "unclassified"),
]


@pytest.mark.parametrize(("status", "diagnostic", "cause", "permanent", "rule"), TRAPS,
                         ids=[f"{t[0] or '-'}:{t[4]}:{n}" for n, t in enumerate(TRAPS)])
def test_trap(status, diagnostic, cause, permanent, rule):
    assert classify(status, diagnostic) == Classification(cause, permanent, rule)


def test_authentication_causes():
    assert AUTHENTICATION == {Cause.DMARC, Cause.DKIM, Cause.SPF, Cause.AUTH}
    assert Cause("dmarc") is Cause.DMARC and Cause.DMARC.value == "dmarc"


def test_curly_apostrophes_and_odd_input():
    assert classify("5.7.1", "550 5.7.1 Unauthenticated email from yahoo.com is not accepted due to "
                    "domain\u2019s DMARC policy.").rule == "gmail-dmarc"
    assert classify(None, None) == Classification(Cause.OTHER, True, "unclassified")  # type: ignore[arg-type]
    assert classify("5.7.1", "x" * 10_000_000 + " dmarc").cause is Cause.OTHER  # only the start is read


def test_enhanced_codes_are_not_ip_addresses_or_versions():
    assert enhanced_codes("1.2.3.4 said 550 5.7.26 x (4.7.1) 10.5.1.1 Postfix 3.7.10 5.7.26") == ("5.7.26",
                                                                                                 "4.7.1")
