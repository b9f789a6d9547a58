"""Every mode delivers, judged by an independent receiver over the real Mailman corpus.

``relist.sandbox.deliverability.run_matrix``: every transaction Mailman 3 really sent
(``fixtures/mailman``), its post first through relist's ingress leg, replayed through
relist (both legs over SMTP/LMTP on loopback) in each mode, judged by rspamd's dkim,
spf, dmarc and arc modules under p=none, p=quarantine and p=reject of the posters'
domain, directly and after a forwarding hop (a client IP outside the list's SPF).  One
run for the module (about 20 s); the same tables are in docs/modes.md
(``scripts/deliverability.py``).
"""

from __future__ import annotations

import pytest

from relist.sandbox.deliverability import goals, run_matrix, table
from relist.sandbox.rspamd import Rspamd
from tests.helpers import FIXTURES

pytestmark = [
    pytest.mark.skipif(not Rspamd.available(), reason="rspamd is not installed (scripts/setup.sh --test)"),
    pytest.mark.skipif(not (FIXTURES / "mailman" / "cases").is_dir(), reason="Mailman corpus absent"),
]

LIST_DOMAIN = "lists.example.org"


@pytest.fixture(scope="module")
def runs():
    return run_matrix()


def by(runs, mode, policy):
    (run,) = [r for r in runs if (r.mode, r.policy) == (mode, policy)]
    return run


def test_the_goals_of_every_mode_delivers_are_met(runs):
    # 0 rejected or quarantined under p=quarantine/p=reject in every mode, direct and
    # forwarded; under p=none nothing that passed from Mailman alone fails through relist,
    # and every undecorated-list post signed at ingress passes; evidence: no DMARC fail.
    assert goals(runs) == [], table(runs)


def test_the_receiver_can_say_no(runs):
    # Negative control: what Mailman sent alone is rejected for most posts, so a 0 above
    # is relist's doing, not a receiver that passes everything.
    base = by(runs, "mailman", "reject")
    assert (base.count("direct", "reject") >= 50
            and base.count("forwarded", "reject") >= base.count("direct", "reject"))
    assert by(runs, "mailman", "none").count("direct", "softfail") >= 50


@pytest.mark.parametrize("mode", ["resign", "preserve", "auto", "auto, evidence", "resign, wrap"])
def test_every_message_carries_the_lists_valid_signature_and_arc_seal(runs, mode):
    for policy in ("none", "reject"):
        run = by(runs, mode, policy)
        assert len(run.outcomes) == 93 and run.refused == 0
        for o in run.outcomes:
            assert LIST_DOMAIN in o.forwarded.dkim_pass_domains, (o.name, o.forwarded.dkim)
            assert o.forwarded.arc == "pass", (o.name, o.forwarded.symbols)


def test_preserve_keeps_the_poster_signature_on_the_undecorated_list(runs):
    run = by(runs, "preserve", "none")
    signed = [o for o in run.outcomes if o.list_name == "plain" and o.signed_at_ingress]
    assert len(signed) == 38
    assert all("poster.example" in o.forwarded.dkim_pass_domains for o in signed)


def test_wrap_really_wraps(runs):
    # The "resign, wrap" row is not munging under another name: under p=reject the posts
    # whose signature did not survive left as multipart/mixed around the post, where the
    # munging configuration sent them with their own body.
    def mixed(mode, policy):
        return {o.name for o in by(runs, mode, policy).outcomes if o.content_type == "multipart/mixed"}
    wrapped = mixed("resign, wrap", "reject") - mixed("resign", "reject")
    assert {"decorated-01-plain-text/out-01", "verp-01-plain-text/out-01"} <= wrapped
    assert "plain-01-plain-text/out-01" not in wrapped          # its signature survives: no mitigation
    assert mixed("resign, wrap", "none") == mixed("resign", "none")   # p=none: nothing to mitigate
