"""``relist check`` on input that is no message: a clear error and exit 2 (issue 11,
item 9), never "no signatures" and exit 0."""

from __future__ import annotations

import io
import sys

import pytest

from relist.cli import main
from relist.edge.verifier import unusable

PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
       b"\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89")
GZIP = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xcbH\xcd\xc9\xc9\x07\x00\x86\xa6\x106\x05\x00\x00\x00"


@pytest.mark.parametrize("data, why", [
    (b"", "empty"),
    (b"\r\n\r\n  \n", "empty"),
    (PNG, "binary data"),
    (GZIP, "binary data"),
    (b"Subject: hi\r\nX-Bad: a\x00b\r\n\r\nbody\r\n", "binary data"),
    (b"hello, this is a text file\nnot a message\n", "no header field"),
])
def test_unusable_input_exits_2_with_a_reason(tmp_path, capsys, data, why):
    path = tmp_path / "input"
    path.write_bytes(data)
    assert main(["check", str(path), "--nameserver", "127.0.0.1:9"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"relist check: {path}: {why}") and err.endswith("\n")


def test_unusable_standard_input(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    assert main(["check", "-", "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("relist check: standard input: empty")


@pytest.mark.parametrize("data", [
    b"Subject: hi\r\n\r\nbody\r\n",
    b"From alice@example.org Sat Nov 21 10:00:00 2026\nFrom: alice@example.org\n\nmbox\n",
    b"Subject: only a header\r\n",
    b"Subject: hi\r\n\r\nbinary \x00 body is still a message to check\r\n",
])
def test_messages_are_usable(data):
    assert unusable(data) is None


def test_a_message_without_signatures_still_exits_0(tmp_path, dns_server, capsys):
    path = tmp_path / "m.eml"
    path.write_bytes(b"From: a@poster.example\r\nSubject: hi\r\n\r\nbody\r\n")
    assert main(["check", str(path), "--nameserver", dns_server.nameserver]) == 0
    assert "no DKIM or DomainKey signatures" in capsys.readouterr().out
