"""relist.core.ingress.first_difference: why an egress post matched no ingress copy."""

from __future__ import annotations

import pytest

from relist.core.ingress import IngressCopy, first_difference, match
from relist.core.message import RawMessage

HEAD = (b"DKIM-Signature: v=1; d=poster.example; s=s1; b=AAAA\r\n BBBB;\r\n"
        b"From: P <p@poster.example>\r\nDate: Sat, 21 Nov 2026 10:00:00 +0000\r\n"
        b"Message-ID: <m@poster.example>\r\nSubject: s\r\n\r\n")
BODY = b"Hello.\r\nFrom here.\r\nBye.\r\n"


@pytest.mark.parametrize("head,body,expected", [
    (HEAD, BODY.replace(b"Bye", b"Pay up"), "body line 3: ingress 'Bye.', egress 'Pay up.'"),
    (HEAD, b"Hello.\r\n", "body line 2: the egress body ends here (3 lines at ingress)"),
    (HEAD.replace(b"P <p@", b"Q <p@"), BODY, "header field From differs"),
    (HEAD.replace(b"10:00:00", b"10:00:01"), BODY, "header field Date differs"),
    (HEAD.replace(b"BBBB", b"CCCC"), BODY, "DKIM-Signature b= values differ"),
    (HEAD, BODY.replace(b"Hello.", b"Hello.\x1b[2J"), "body line 1: ingress 'Hello.', egress 'Hello.?[2J'"),
])
def test_first_difference_names_the_part(head, body, expected):
    egress = RawMessage.parse(head + body)
    assert expected in first_difference(RawMessage.parse(HEAD + BODY), egress)
    found, why = match(egress, (IngressCopy("R1", HEAD + BODY),))
    assert found is None and f"first difference from R1: {expected}" in why and "\x1b" not in why


def test_mailman_changes_are_no_difference():
    egress = RawMessage.parse(HEAD + BODY.replace(b"\r\nFrom", b"\r\n>From") + b"-- \r\nfooter\r\n")
    assert first_difference(RawMessage.parse(HEAD + BODY), egress) == ""
