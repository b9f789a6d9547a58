"""DKIM signing: byte-identical to dkimpy's own signer at the same t=, verifies with dkimpy,
deterministic, and the header list / tag rules."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from unittest import mock

import dkim
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from relist.core.sign import (
    DEFAULT_SIGN_HEADERS, SignError, SigningKey, dns_record, oversigned, private_pem, sign_dkim,
)
from relist.core.sign.signature import parse

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
RSA_KEY = SigningKey("rsa-sha256", rsa.generate_private_key(public_exponent=65537, key_size=2048))
ED_KEY = SigningKey("ed25519-sha256", ed25519.Ed25519PrivateKey.generate())

LIST_POST = (
    b"Received: from mail.example.net by lists.example.org; Sun, 1 Mar 2026 11:59:00 +0000\r\n"
    b"From: Alice Example <alice@example.net>\r\n"
    b"To: dev@lists.example.org\r\n"
    b"Subject: [dev] Re:   folded\r\n\tsubject  line \r\n"
    b"Date: Sun, 1 Mar 2026 11:58:00 +0000\r\n"
    b"Message-ID: <abc@example.net>\r\n"
    b"List-Id: Dev <dev.lists.example.org>\r\n"
    b"List-Unsubscribe: <https://lists.example.org/u/dev>, <mailto:dev-leave@lists.example.org>\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    b"Cc: bob@example.com\r\nCc: carol@example.com\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hello  world \t\r\n\r\n-- \r\nfooter\r\n\r\n\r\n"
)
MESSAGES = {
    "list-post": LIST_POST,
    "lf-endings": LIST_POST.replace(b"\r\n", b"\n"),
    "no-body": b"From: a@example.org\r\nSubject: x\r\n\r\n",
    "8bit": "From: Zoë <z@example.org>\r\nSubject: héllo\r\n\r\nçà\r\n".encode(),
}


def dkimpy_key(key: SigningKey) -> bytes:
    if key.kind == "rsa":
        return private_pem(key)
    return base64.b64encode(key.private.private_bytes_raw())


def dnsfunc_for(key: SigningKey, record: str | None = None):
    def dnsfunc(name, timeout=5):
        return (record or dns_record(key)).encode()
    return dnsfunc


@pytest.mark.parametrize("canon", ["relaxed/relaxed", "relaxed/simple", "simple/simple", "simple/relaxed"])
@pytest.mark.parametrize("key", [RSA_KEY, ED_KEY], ids=["rsa", "ed25519"])
@pytest.mark.parametrize("name", list(MESSAGES))
def test_identical_to_dkimpy_and_verifies(name, key, canon):
    message = MESSAGES[name]
    mine = sign_dkim(message, domain="lists.example.org", selector="s1", key=key, now=NOW,
                     canonicalization=canon)
    h = [x.decode() for x in oversigned(DEFAULT_SIGN_HEADERS, parse(message)[0])]
    with mock.patch("dkim.time.time", return_value=NOW.timestamp()):
        theirs = dkim.sign(message, b"s1", b"lists.example.org", dkimpy_key(key),
                           signature_algorithm=key.algorithm.encode(),
                           canonicalize=tuple(canon.encode().split(b"/")), include_headers=h)
    assert mine == theirs
    assert mine.endswith(b"\r\n") and b" t=%d;" % NOW.timestamp() in mine
    assert dkim.verify(mine + message, dnsfunc=dnsfunc_for(key))
    assert not dkim.verify(mine + message + b"appended\r\n", dnsfunc=dnsfunc_for(key))


def test_deterministic_for_a_given_now():
    one = sign_dkim(LIST_POST, domain="lists.example.org", selector="s1", key=RSA_KEY, now=NOW)
    two = sign_dkim(LIST_POST, domain="lists.example.org", selector="s1", key=RSA_KEY, now=NOW)
    later = sign_dkim(LIST_POST, domain="lists.example.org", selector="s1", key=RSA_KEY,
                      now=NOW + timedelta(seconds=1))
    assert one == two != later


def tags_of(field: bytes) -> dict[str, str]:
    value = field.split(b":", 1)[1].decode()
    flat = "".join(value.split())
    return dict(t.split("=", 1) for t in flat.split(";") if t)


def test_default_h_oversigns_every_name_once_more_than_present():
    field = sign_dkim(LIST_POST, domain="lists.example.org", selector="s1", key=RSA_KEY, now=NOW)
    h = tags_of(field)["h"].split(":")
    present = {n.decode().lower(): 0 for n, _ in parse(LIST_POST)[0]}
    for n, _ in parse(LIST_POST)[0]:
        present[n.decode().lower()] += 1
    for name in DEFAULT_SIGN_HEADERS:
        assert h.count(name) == present.get(name, 0) + 1, name
    assert set(h) == set(DEFAULT_SIGN_HEADERS)
    assert {"list-unsubscribe", "list-unsubscribe-post"} <= set(h)   # RFC 8058 §4
    assert "received" not in h and "l" not in tags_of(field)
    # oversigning works: adding a second Subject or a List-Post breaks the signature
    signed = field + LIST_POST
    assert dkim.verify(signed, dnsfunc=dnsfunc_for(RSA_KEY))
    for extra in (b"Subject: spoof\r\n", b"List-Post: <mailto:x@evil.example>\r\n"):
        head, _, body = signed.partition(b"\r\n\r\n")
        assert not dkim.verify(head + b"\r\n" + extra + b"\r\n" + body, dnsfunc=dnsfunc_for(RSA_KEY))


def test_ttl_identity_and_z():
    now = datetime.now(timezone.utc)   # dkimpy checks x= against its own clock
    field = sign_dkim(LIST_POST, domain="lists.example.org", selector="s1", key=ED_KEY, now=now,
                      ttl=86400, identity="dev-bounces@lists.example.org", copy_headers=True,
                      headers=["from", "subject", "to"])
    tags = tags_of(field)
    assert int(tags["x"]) == int(tags["t"]) + 86400 == int(now.timestamp()) + 86400
    assert tags["i"] == "dev-bounces@lists.example.org" and tags["h"] == "from:subject:to"
    assert tags["z"].startswith("From:=20Alice=20Example=20<alice@example.net>|Subject:")
    assert all(len(line) <= 78 for line in field.split(b"\r\n"))
    assert dkim.verify(field + LIST_POST, dnsfunc=dnsfunc_for(ED_KEY))


@pytest.mark.parametrize("kwargs,error", [
    ({"headers": ["subject", "to"]}, "From"),
    ({"headers": ["from", "received"]}, "received"),
    ({"headers": ["from", "authentication-results"]}, "authentication-results"),
    ({"identity": "x@other.example"}, "signing domain"),
    ({"canonicalization": "loose/simple"}, "canonicalization"),
    ({"now": datetime(2026, 3, 1)}, "timezone-aware"),
    ({"ttl": -1}, "negative"),
    ({"selector": "a;b"}, "';'"),
])
def test_refuses_bad_parameters(kwargs, error):
    args = {"domain": "lists.example.org", "selector": "s1", "key": RSA_KEY, "now": NOW, **kwargs}
    with pytest.raises(SignError, match=error):
        sign_dkim(LIST_POST, **args)


def test_malformed_header_line_is_an_error():
    with pytest.raises(SignError):
        sign_dkim(b"From: a@example.org\r\nnot a header\r\n\r\nbody\r\n", domain="example.org",
                  selector="s", key=RSA_KEY, now=NOW)


def test_custom_list_oversigned_from_message_bytes():
    h = oversigned(["From", "List-Id", "X-Custom"], LIST_POST)
    assert h == (b"from", b"from", b"list-id", b"list-id", b"x-custom")
    field = sign_dkim(LIST_POST, domain="lists.example.org", selector="s1", key=RSA_KEY, now=NOW, headers=h)
    assert tags_of(field)["h"] == "from:from:list-id:list-id:x-custom"
    assert dkim.verify(field + LIST_POST, dnsfunc=dnsfunc_for(RSA_KEY))
