"""Bounces (issue 13): parse is total -- any bytes in, a Report out, in bounded time.

No hypothesis here: the inputs are a fixed table of hostile shapes plus seeded
pseudo-random mutations of the real fixtures, so a failure reproduces exactly.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from relist.core import bounce
from relist.core.bounce import MAX_INPUT, Report, classify, parse

BOUNCES = Path(__file__).resolve().parent.parent / "fixtures" / "bounces"
GMAIL_DMARC = (BOUNCES / "postfix" / "gmail-dmarc.eml").read_bytes()


def _check(report: Report) -> None:
    assert isinstance(report, Report)
    for r in report.recipients:
        for text in (r.recipient, r.status, r.action, r.diagnostic, r.remote_mta):
            text.encode("utf-8")  # storable: no surrogates
        classify(r.status, r.diagnostic)
    for text in (report.returned.message_id, report.returned.from_domain, report.returned.list_id,
                 *report.problems):
        text.encode("utf-8")


def _deep(n: int) -> bytes:
    head = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
                    for i in range(n))
    return b"From: x@example.org\r\nMIME-Version: 1.0\r\n" + head + b"Content-Type: text/plain\r\n\r\nx\r\n"


HOSTILE = {
    "empty": b"",
    "one byte": b"\x00",
    "only newlines": b"\r\n" * 1000,
    "no header": b"\r\n\r\nhello",
    "binary": bytes(range(256)) * 64,
    "no From (flufl.bounce's Yale detector raises)": b"Subject: x\r\n\r\nbody\r\n",
    "8-bit From (flufl.bounce's Sina detector raises)": (b"From: J\xf6rg <j@x.example>\r\nX-Mailer: \xff\r\n"
                                                         b"\r\nb\r\n"),
    "empty From": b"From:\r\nTo: <>\r\n\r\nbody\r\n",
    "bad boundary": b"MIME-Version: 1.0\r\nContent-Type: multipart/report; boundary=\"\"\r\n\r\n--\r\n--\r\n",
    "unclosed multipart": GMAIL_DMARC[:len(GMAIL_DMARC) // 2],
    "truncated in a DSN block": GMAIL_DMARC[:GMAIL_DMARC.index(b"Diagnostic-Code") + 20],
    "delivery-status not parsed": GMAIL_DMARC.replace(b"message/delivery-status",
                                                      b"message/global-delivery-status"),
    "base64 delivery-status": (b"MIME-Version: 1.0\r\nContent-Type: multipart/report; boundary=b\r\n\r\n"
                               b"--b\r\nContent-Type: message/delivery-status\r\nContent-Transfer-Encoding: "
                               b"base64\r\n\r\n!!!!not base64\r\n--b--\r\n"),
    "returned part that is not a message": (b"MIME-Version: 1.0\r\nContent-Type: multipart/report; boundary=b"
                                            b"\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n--b--\r\n"),
    "nesting 200 deep": _deep(200),
    "nesting 5000 deep": _deep(5000),
    "header line without end": b"X-" + b"a" * 200_000,
    "many header-like lines": b"From: x@y\r\n\r\n" + b"Received: by x\r\n\r\n" * 20_000,
    "many parts": (b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
                   + b"--b\r\n\r\nx\r\n" * 30_000),
    "1 MiB of empty lines (flufl.bounce's SimpleMatch: 13 s if read whole)": (b"From: x@y\n\n"
                                                                               + b"\n" * (1 << 20)),
    "100000 parts": (b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
                     + b"--b\r\n\r\nx\r\n" * 100_000),
    "a 200 kB word around an @": b"From: x@y\n\n" + b"a" * 100_000 + b"@" + b"b" * 100_000,
    "NUL and ESC in fields": GMAIL_DMARC.replace(b"Reporting-MTA: dns;", b"Reporting-MTA: \x00\x1b[2J;"),
}


@pytest.mark.parametrize("raw", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_input_never_raises(raw):
    started = time.monotonic()
    _check(parse(raw))
    assert time.monotonic() - started < 5


def test_empty_input():
    report = parse(b"")
    assert report.recipients == () and report.format == ""
    assert "no failed recipient found" in report.problems
    assert "no returned message header" in report.problems


def test_not_bytes():
    assert parse(None).problems[0].startswith("input is not bytes")  # type: ignore[arg-type]
    assert parse(bytearray(GMAIL_DMARC)).recipients == parse(GMAIL_DMARC).recipients
    assert parse(memoryview(GMAIL_DMARC)).returned == parse(GMAIL_DMARC).returned


@pytest.mark.parametrize("name", [n for n in HOSTILE if "raises" in n])
def test_flufl_bounce_gets_fields_it_can_read(name, caplog):
    """flufl.bounce 6.0.0 raises (and logs an ERROR with a traceback) on a missing or
    8-bit From; parse hands it ASCII From and X-Mailer fields, so it never does."""
    with caplog.at_level("ERROR", logger="flufl.bounce"):
        report = parse(HOSTILE[name])
    assert not any("flufl.bounce failed" in p for p in report.problems)
    assert [r for r in caplog.records if r.name.startswith("flufl")] == []


def test_a_10_mib_returned_message_is_read_in_bounded_time():
    """Generated here, not stored: a real DSN whose returned message has a 10 MiB body."""
    end = GMAIL_DMARC.rindex(b"\r\n--")
    raw = GMAIL_DMARC[:end] + b"\r\n" + (b"A" * 76 + b"\r\n") * (10 * 1024 * 1024 // 78) + GMAIL_DMARC[end:]
    assert len(raw) > 10 * 1024 * 1024
    started = time.monotonic()
    report = parse(raw)
    assert time.monotonic() - started < 5
    assert [r.recipient for r in report.recipients] == ["m01@members.example"]
    assert classify(report.recipients[0].status, report.recipients[0].diagnostic).rule == "gmail-dmarc"
    assert report.returned.message_id == "<plain-01@poster.example>"
    assert report.returned.relist_id == "7QK2M9XBRT4D"
    assert f"read the first {MAX_INPUT} of {len(raw)} bytes" in report.problems


def test_10_mib_of_junk_is_read_in_bounded_time():
    rng = random.Random(13)
    raw = rng.randbytes(10 * 1024 * 1024)
    started = time.monotonic()
    _check(parse(raw))
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("seed", range(40))
def test_mutated_fixtures_never_raise(seed):
    rng = random.Random(seed)
    sources = sorted(BOUNCES.glob("*/*.eml")) + sorted(BOUNCES.glob("flufl/*.txt"))
    raw = bytearray(rng.choice(sources).read_bytes())
    for _ in range(rng.randint(1, 50)):
        at = rng.randrange(len(raw) + 1)
        op = rng.randrange(4)
        if op == 0:
            raw[at:at] = rng.randbytes(rng.randint(1, 8))
        elif op == 1:
            del raw[at:at + rng.randint(1, 64)]
        elif op == 2:
            raw[at:at] = rng.choice([b"\r\n\r\n", b"\n--", b"Content-Type: multipart/mixed; boundary=x\r\n",
                                     b"\x00", b"\xff\xfe", b"=?utf-8?b?", b"\r\n "])
        else:
            raw = raw[:at]
    _check(parse(bytes(raw)))


def test_api():
    namespace: dict = {}
    exec("from relist.core.bounce import *", namespace)  # noqa: S102 - the star import is the test
    assert sorted(k for k in namespace if not k.startswith("__")) == sorted(bounce.__all__)
