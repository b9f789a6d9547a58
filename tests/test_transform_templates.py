"""templates and mime helpers used by the transformation steps."""

from __future__ import annotations

import email
from email.header import decode_header, make_header

import pytest

from relist.core import mime
from relist.core.message import HeaderField
from relist.core.policy import ListPolicy
from relist.core.templates import expand

LP = ListPolicy(address="ant@example.org", display_name="Ant Colony",
                unsubscribe_url="https://l.example.org/u", archive_url="https://l.example.org/a",
                help_url="https://l.example.org/h", subscribe_url="https://l.example.org/s")

# The Mailman 3.3 default footer (templates/en/list:member:generic:footer.txt).
MAILMAN_FOOTER = ("_______________________________________________\n"
                  "$display_name mailing list -- $listname\n"
                  "To unsubscribe send an email to ${short_listname}-leave@${domain}\n")


@pytest.mark.parametrize("template,want", [
    ("[{list_name}] ", "[Ant Colony] "),
    ("{list_address} {listname} {list_id} {domain}",
     "ant@example.org ant@example.org ant.example.org example.org"),
    ("{unsubscribe_url} {archive_url} {help_url} {subscribe_url}",
     "https://l.example.org/u https://l.example.org/a https://l.example.org/h https://l.example.org/s"),
    (MAILMAN_FOOTER, "_______________________________________________\n"
                     "Ant Colony mailing list -- ant@example.org\n"
                     "To unsubscribe send an email to ant-leave@example.org\n"),
    ("$list_name / {list_name}", "ant / Ant Colony"),          # Mailman's short name vs relist's
    ("$request_email $owner_email $list_id", "ant-request@example.org ant-owner@example.org ant.example.org"),
    ("{unknown} $unknown ${also_unknown} {list_name", "{unknown} $unknown ${also_unknown} {list_name"),
    ("price: $$5, {0}, {}, $", "price: $5, {0}, {}, $"),
    ("", ""),
], ids=["brace-name", "addresses", "urls", "mailman-default", "list_name-both-styles", "mailman-names",
        "unknown-kept", "odd-syntax"  , "empty"])
def test_expand(template, want):
    assert expand(template, LP) == want


def test_values_are_not_expanded_twice():
    lp = ListPolicy(address="ant@example.org", display_name="$listname {domain}")
    assert expand("{list_name}", lp) == "$listname {domain}"


def test_display_name_defaults_to_local_part():
    assert expand("{list_name}|$display_name", ListPolicy(address="bees@example.org")) == "bees|bees"


@pytest.mark.parametrize("text", ["café", "x" * 200, "Grüße " * 30, "日本語のテキスト" * 5,
                                  "a_b=c?d"])
def test_encode_words_round_trip(text):
    encoded = mime.encode_words(text)
    assert encoded.isascii()
    assert all(len(w) <= 75 for w in encoded.split(" "))
    assert str(make_header(decode_header(encoded))) == text


def test_fold_keeps_text_and_width():
    value = ", ".join(f"<mailto:list-{i}@example.org>" for i in range(6))
    folded = mime.fold("List-Help", value)
    assert folded.replace("\r\n", "") == value
    assert all(len(line) <= 78 for line in ("List-Help: " + folded).split("\r\n"))


@pytest.mark.parametrize("raw,old,want", [
    (b"Content-Type: text/plain; charset=us-ascii\r\n", "us-ascii",
     b'Content-Type: text/plain; charset="utf-8"\r\n'),
    (b'Content-Type: text/plain;\r\n charset="ISO-8859-1"; format=flowed\r\n', "iso-8859-1",
     b'Content-Type: text/plain;\r\n charset="utf-8"; format=flowed\r\n'),
    (b"Content-Type: text/plain\r\n", "us-ascii", b'Content-Type: text/plain; charset="utf-8"\r\n'),
    # Too irregular to edit: the caller writes a new field.
    (b"Content-Type: text/plain; charset=us=ascii\r\n", "us=ascii", None),
    (b"Content-Type: text/plain; charset=utf-8\xff format=flowed\r\n", "us-ascii", None),
    (b"Content-Type: text/plain; charset=us-ascii\ro\r\n", "us-ascii", None),
    (b"Content-Type: text/plain; charset=a; charset=b\r\n", "a", None),
])
def test_set_charset_touches_only_the_parameter(raw, old, want):
    assert mime.set_charset(HeaderField(raw, "content-type"), "utf-8", old) == want


@pytest.mark.parametrize("body,boundary,want", [
    (b"pre\r\n--b\r\n\r\none\r\n--b\r\n\r\ntwo\r\n--b--\r\nepi", "b", 2),
    (b"--b  \n\nspaces after delimiter\n--b--", "b", 1),
    (b"--bb\r\n\r\nnot ours\r\n--b\r\n\r\nours\r\n--b--\r\n", "b", 1),
    (b"--b\r\n\r\nx --b in a line\r\n--b--\r\n", "b", 1),
    (b"--b\r\n\r\nno close\r\n", "b", "no close delimiter (truncated multipart)"),
    (b"nothing\r\n", "b", "boundary not found in body"),
])
def test_scan_multipart_agrees_with_email(body, boundary, want):
    got = mime.scan_multipart(body, boundary)
    if isinstance(want, str):
        assert got == want
        return
    assert len(got.parts) == want
    m = email.message_from_bytes(
        b'Content-Type: multipart/mixed; boundary="' + boundary.encode() + b'"\r\n\r\n' + body)
    assert [p.get_payload(decode=True) for p in m.get_payload()] == \
        [email.message_from_bytes(body[s:e]).get_payload(decode=True) for s, e in got.parts]


def test_new_boundary_avoids_collisions():
    first = mime.new_boundary(b"body")
    body = b"--" + first.encode() + b"\r\n"
    second = mime.new_boundary(body)
    assert second != first and ("--" + second).encode() not in body
    assert mime.new_boundary(b"body") == first       # deterministic


@pytest.mark.parametrize("data", [b"", b"abc", "Grüße\r\n".encode() * 40, bytes(range(256))])
def test_transfer_encodings_round_trip(data):
    assert mime.b64_decode(mime.b64_encode(data, b"\r\n")) == data
    text = data.replace(b"\r", b"")
    assert mime.qp_decode(mime.qp_encode(text, b"\n")) == text


def test_broken_base64_is_none():
    assert mime.b64_decode(b"SGVsbG8=x!!") is None
