"""ValiMail ARC validation suite (171 tests) through relist's ARC validator.

Data: ../shared/conformance/arc_test_suite (MIT).  DNS comes from each scenario's
txt-records.  Expected cv is the suite's, except that the three ``cv_fail_*`` cases
expect an empty cv where RFC 8617 §5.2 (steps 2 and 3) says "fail": relist reads
them as fail (docs/verification.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from relist.core.verify.arc_verify import verify_arc
from relist.core.facts import Answer, Facts, Question, Status
from relist.core.message import RawMessage

SUITE = Path(__file__).resolve().parent.parent.parent / "shared" / "conformance" / "arc_test_suite"
VALIDATION = SUITE / "arc-draft-validation-tests.yml"
RFC_8617_FAIL = {"cv_fail_i1_as_cv_fail", "cv_fail_i2_as2_fail", "cv_fail_i2_as1_fail"}


def _cases():
    if not VALIDATION.exists():
        return []
    import yaml
    cases = []
    for scenario in yaml.safe_load_all(VALIDATION.read_text()):
        records = scenario.get("txt-records") or {}
        for name, test in scenario["tests"].items():
            cases.append(pytest.param(name, test, records, id=name))
    return cases


CASES = _cases()


def _facts(records: dict) -> Facts:
    answers = {}
    for name, value in records.items():
        answers[Question.txt(name)] = Answer(Status.FOUND, ("".join(value.split("\n")).encode(),))
    # Names the scenario does not list do not exist (the suite's DNS).
    return Facts(answers, otherwise=Answer(Status.ABSENT, (), "NXDOMAIN"))


@pytest.mark.skipif(not CASES, reason="../shared/conformance/arc_test_suite is absent")
def test_suite_has_171_tests():
    assert len(CASES) == 171


@pytest.mark.skipif(not CASES, reason="../shared/conformance/arc_test_suite is absent")
@pytest.mark.parametrize("name,test,records", CASES)
def test_arc_validation(name, test, records):
    raw = test["message"].encode("utf-8")
    expected = (test.get("cv") or "").lower() or "none-or-empty"
    if name in RFC_8617_FAIL:
        expected = "fail"
    got = verify_arc(RawMessage.parse(raw), raw, _facts(records))
    if expected == "none-or-empty":
        assert got.cv == "none", got.reason
    else:
        assert got.cv == expected, got.reason
    if got.cv == "pass":
        assert got.oldest_pass is not None
