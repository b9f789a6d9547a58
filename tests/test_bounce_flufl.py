"""Bounces (issue 13): parse finds the addresses flufl.bounce's own tests expect.

fixtures/bounces/flufl/ holds a copy of part of flufl.bounce 6.0.0's test data
(Apache-2.0, see its README.md) and, in expected.json, the addresses its
tests/test_detectors.py table expects.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relist.core.bounce import parse

FLUFL = Path(__file__).resolve().parent.parent / "fixtures" / "bounces" / "flufl"
EXPECTED = json.loads((FLUFL / "expected.json").read_text())


def test_every_sample_has_an_expectation():
    assert sorted(EXPECTED) == sorted(p.name for p in FLUFL.glob("*.txt"))


@pytest.mark.parametrize("name", sorted(EXPECTED),
                         ids=[f"{EXPECTED[n]['detector']}-{n}" for n in sorted(EXPECTED)])
def test_parse_finds_flufls_addresses(name):
    expected = EXPECTED[name]
    report = parse((FLUFL / name).read_bytes())
    found = {r.recipient: r for r in report.recipients}
    assert set(found) == set(expected["addresses"])
    for address in expected["addresses"]:
        assert found[address].permanent is not expected["temporary"]
    if not expected["addresses"]:
        assert "no failed recipient found" in report.problems
