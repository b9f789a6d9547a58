"""ValiMail ARC signing suite (arc-draft-sign-tests.yml) against ``relist.core.sign.seal_arc``.

How the harness feeds the suite (its README, "Signing Suite Assumptions"):
* ``results`` (the AAR payload): every Authentication-Results field whose authserv-id is
  the test's ``srv-id``, in message order, split into its results (";" outside
  comments), one result per line, comments kept.  Other authserv-ids are ignored.
* ``cv``: relist's own way - dkimpy's ``arc_verify`` of the incoming chain with the
  suite's DNS, ``None`` read as fail (RFC 8617 §5.2).  The suite says its AR carries
  the right ``arc=`` result; where it has one, the test checks the two agree, but the
  seal never takes cv from the message.
* ``standardize=True`` (tags sorted, lower-cased, unfolded), ``headers`` = sig-headers,
  ``now`` = t.
Comparison as the suite's README says: whitespace removed, then tag by tag (AMS, AS) or
result by result (AAR).  Every produced set is also checked with dkimpy's arc_verify.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
dkim = pytest.importorskip("dkim")

from relist.core.sign import load_private_key, seal_arc  # noqa: E402

SUITE = (Path(__file__).resolve().parent.parent.parent / "shared" / "conformance" / "arc_test_suite"
         / "arc-draft-sign-tests.yml")


def _load():
    if not SUITE.exists():
        return []
    out = []
    for scenario in yaml.safe_load_all(SUITE.read_text()):
        for name, test in scenario["tests"].items():
            out.append(pytest.param(scenario, test, id=name))
    return out


CASES = _load()
pytestmark = pytest.mark.skipif(not CASES,
                                reason=f"ARC signing suite not found at {SUITE} (../shared absent)")


def split_results(text: str) -> list[str]:
    """Split on ';' outside (comments) and "quoted strings"."""
    out, depth, quoted, cur = [], 0, False, ""
    for ch in text:
        if ch == '"' and depth == 0:
            quoted = not quoted
        elif ch == "(" and not quoted:
            depth += 1
        elif ch == ")" and not quoted and depth:
            depth -= 1
        if ch == ";" and depth == 0 and not quoted:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [" ".join(r.split()) for r in out if r.strip()]


def suite_results(message: bytes, srv_id: str) -> list[str]:
    headers, _ = dkim.rfc822_parse(message)
    results = []
    for name, value in headers:
        if name.lower() != b"authentication-results":
            continue
        parts = split_results(value.decode())
        if parts and parts[0] == srv_id:
            results += parts[1:]
    return results


def dnsfunc_for(scenario):
    records = {k.lower().rstrip("."): v for k, v in scenario["txt-records"].items()}

    def dnsfunc(name, timeout=5):
        value = records.get(name.decode().lower().rstrip("."))
        return None if value is None else "".join(value.split("\n")).encode()
    return dnsfunc


def relist_cv(message: bytes, dnsfunc) -> str:
    cv, _, _ = dkim.arc_verify(message, dnsfunc=dnsfunc)
    return "fail" if cv is None else cv.decode().lower()   # RFC 8617 §5.2: None is fail


def tags(value: str) -> dict[str, str]:
    flat = "".join(value.split())
    return dict(item.split("=", 1) for item in flat.split(";") if item)


def field_value(field: bytes) -> str:
    return field.decode().split(":", 1)[1]


@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
@pytest.mark.parametrize("scenario,test", CASES)
def test_sign_suite(scenario, test, crlf):
    message = test["message"].encode()
    if crlf:
        message = message.replace(b"\n", b"\r\n")
    srv_id = test["srv-id"]
    dnsfunc = dnsfunc_for(scenario)
    results = suite_results(message, srv_id)
    cv = relist_cv(message, dnsfunc)
    stamped = [r.split("=", 1)[1].split()[0].lower() for r in results if r.startswith("arc=")]
    if stamped:
        assert stamped == [cv], "the suite's stamped arc= and relist's own validation disagree"

    seal = seal_arc(message, domain=scenario["domain"], selector=scenario["sel"],
                    key=load_private_key(scenario["privatekey"].encode()), authserv_id=srv_id,
                    cv=cv, results="\n".join(r + ";" for r in results).rstrip(";"),
                    now=datetime.fromtimestamp(test["t"], timezone.utc),
                    headers=test["sig-headers"].split(":"), standardize=True)

    if not test["AS"]:
        assert seal.fields == () and seal.reason
        return
    as_, ams, aar = seal.fields
    assert as_.startswith(b"ARC-Seal: ") and ams.startswith(b"ARC-Message-Signature: ")
    assert aar.startswith(b"ARC-Authentication-Results: ")
    assert tags(field_value(ams)) == tags(test["AMS"])
    assert tags(field_value(as_)) == tags(test["AS"])
    assert "".join(field_value(aar).split()).split(";") == "".join(test["AAR"].split()).split(";")

    sealed = b"".join(seal.fields) + message
    got, _, reason = dkim.arc_verify(sealed, dnsfunc=dnsfunc)
    if cv == "fail":
        assert got is None   # dkimpy ends a chain whose newest seal says cv=fail
    else:
        assert got == b"pass", reason


def test_results_split_keeps_comments():
    assert split_results("a.example; dkim=pass (1024-bit; key) header.i=@x; spf=pass") == [
        "a.example", "dkim=pass (1024-bit; key) header.i=@x", "spf=pass"]
