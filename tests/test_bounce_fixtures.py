"""Bounces (issue 13): every fixture in fixtures/bounces/<source>/ against its JSON.

The fixtures are real report formats (Postfix, Exim, Exchange, qmail, Gmail, Yahoo)
about posts of the Mailman corpus, with the traps of the issue; fixtures/bounces/make.py
writes them and says where each format comes from.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relist.core.bounce import classify, parse

BOUNCES = Path(__file__).resolve().parent.parent / "fixtures" / "bounces"
CASES = sorted(p for p in BOUNCES.glob("*/*.json") if p.parent.name != "flufl")


def test_there_are_fixtures_of_every_kind():
    assert {p.parent.name for p in CASES} >= {"postfix", "exim", "exchange", "qmail", "gmail", "yahoo"}


@pytest.mark.parametrize("case", CASES, ids=[f"{p.parent.name}/{p.stem}" for p in CASES])
def test_fixture(case):
    expected = json.loads(case.read_text())
    report = parse(case.with_suffix(".eml").read_bytes())

    got = []
    for r in report.recipients:
        why = classify(r.status, r.diagnostic)
        got.append({"recipient": r.recipient, "status": r.status, "action": r.action,
                    "permanent": r.permanent, "cause": why.cause.value, "rule": why.rule})
    assert got == expected["recipients"]
    assert report.format == expected["format"]
    returned = report.returned
    assert (returned.message_id, returned.relist_id, list(returned.relist_ids), returned.from_domain,
            returned.list_id) == (expected["message_id"], expected["relist_id"], expected["relist_ids"],
                                  expected["from_domain"], expected["list_id"])
    for needle in expected["problems"]:
        assert any(needle in p for p in report.problems), (needle, report.problems)
    if not expected["problems"]:
        assert report.problems == ()
    for r in report.recipients:
        assert r.diagnostic and r.diagnostic.isprintable()


def test_the_json_of_every_fixture_has_its_eml():
    assert CASES and all(p.with_suffix(".eml").is_file() for p in CASES)
