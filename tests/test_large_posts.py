"""A large post through the relay without whole-message copies (issue 17): the edge
parses the DATA and lets the bytes go, the core hands its output on as a message, and
the next hop gets it written as header and body (relist.edge.smtp_out.dot_stuffed),
never joined.  What goes out must be what the joined bytes would have been."""

from __future__ import annotations

import re

import dkim
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relist.core.message import RawMessage
from relist.core.policy import ListPolicy
from relist.core.sign.signing_keys import dns_record
from relist.core.steps import footer
from relist.edge.key_files import generate, write_private_key
from relist.edge.smtp_out import WRITE_CHUNK, dot_stuff, dot_stuffed
from relist.sandbox.dnsserver import split_txt
from tests.helpers import client, split_added

LIST = "big@lists.example.org"
_BARE_LF = re.compile(rb"(?<!\r)\n")


def _stuffed_whole(data: bytes) -> bytes:
    """RFC 5321 §4.5.2 over the joined message: the reference."""
    data = _BARE_LF.sub(b"\r\n", data)
    if data.startswith(b"."):
        data = b"." + data
    data = data.replace(b"\r\n.", b"\r\n..")
    return data + (b".\r\n" if not data or data.endswith(b"\r\n") else b"\r\n.\r\n")


_PIECES = [b"a", b".", b"..", b"\r\n", b"\n", b"\r", b":", b" ", b"X-A: 1\r\n", b"From: x\r\n", b"\r\n."]
texts = st.lists(st.sampled_from(_PIECES), max_size=30).map(b"".join)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts, st.lists(texts, max_size=4))
def test_a_message_written_as_header_and_body_is_the_joined_message_stuffed(message, parts):
    msg = RawMessage.parse(message)
    assert b"".join(dot_stuffed([msg.header_bytes(), msg.body])) == _stuffed_whole(msg.to_bytes())
    assert b"".join(dot_stuffed(parts)) == _stuffed_whole(b"".join(parts))
    assert dot_stuff(message) == _stuffed_whole(message)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts, st.sampled_from(["-- \nlist\n", "footer", "a\r\nb", ".dot\n"]),
       st.sampled_from([b"7bit", b"8bit", b"quoted-printable", None]), st.booleans())
def test_a_body_known_crlf_has_no_bare_lf(body, text, cte, memo_first):
    """``crlf_known`` (which lets the DKIM hashes and the SMTP writer skip looking for a
    bare LF) is never claimed of a body that has one: after the footer too."""
    head = b"From: a@example.org\r\nContent-Type: text/plain\r\n"
    head += b"Content-Transfer-Encoding: " + cte + b"\r\n" if cte else b""
    msg = RawMessage.parse(head + b"\r\n" + body)
    if memo_first:
        msg.body_memo()
    out, _ = footer.transform(msg, ListPolicy(address=LIST, footer=text))
    for m in (msg, out) if out is not None else (msg,):
        if m.crlf_known():
            assert m.body.count(b"\n") == m.body.count(b"\r\n")
        m.body_memo()
        assert m.crlf_known() == (m.body.count(b"\n") == m.body.count(b"\r\n"))
    if out is not None:
        stuffed = dot_stuffed([out.header_bytes(), out.body], (False, out.crlf_known()))
        assert b"".join(stuffed) == _stuffed_whole(out.to_bytes())


def test_the_body_goes_out_as_itself_when_nothing_needs_stuffing():
    msg = RawMessage.parse(b"From: a@example.org\r\n\r\n" + b"line\r\n" * 1000)
    pieces = dot_stuffed([msg.header_bytes(), msg.body])
    assert pieces[1] is msg.body and pieces[-1] == b".\r\n"


def _big_post(lines: int) -> bytes:
    """A post of ``lines`` lines, some beginning with dots, and a body that begins with one."""
    body = b"".join(b".dot line %d\r\n" % i if i % 7 == 0 else b"line %d of a large post\r\n" % i
                    for i in range(lines))
    return (b"From: Poster <poster@poster.example>\r\nTo: big@lists.example.org\r\n"
            b"Subject: large\r\nMessage-ID: <large-1@poster.example>\r\n"
            b"List-Id: <big.lists.example.org>\r\n\r\n." + body)


def test_a_large_post_passes_through_unchanged(relist_server, sink):
    post = _big_post(150_000)
    assert len(post) > 3 * WRITE_CHUNK
    with client(relist_server.port) as c:
        c.sendmail("big-bounces@lists.example.org", ["a@example.com"], post)
    _, rest = split_added(sink.messages[0].data)
    got, sent = RawMessage.parse(rest), RawMessage.parse(post)
    assert got.body == sent.body                          # every byte of the body, dots undone
    assert got.fields[:len(sent.fields)] == sent.fields   # (the list's own fields follow)


def test_a_large_post_is_re_signed_and_verifies(tmp_path, relist_factory, sink, dns_server):
    """The footer makes a new body, the signature covers it, and the bytes written in
    slices are the bytes signed (dkimpy verifies what the sink received)."""
    key = generate("rsa")
    path = write_private_key(tmp_path / "s1.key", key)
    dns_server.set("s1._domainkey.lists.example.org", [split_txt(dns_record(key))])
    srv = relist_factory({"lists": {LIST: {"mode": "resign", "selector": "s1", "private_key": str(path),
                                           "footer": "-- \n{list_name} list\n", "arc_seal": True}}})
    post = _big_post(150_000)
    with client(srv.port) as c:
        for batch in range(2):      # the second transaction: the sign-once replay
            c.sendmail("big-bounces@lists.example.org", [f"m{batch}@example.com"], post)
    assert len(sink.messages) == 2
    for got in sink.messages:
        out = got.data
        assert out.endswith(b"\r\n-- \r\nbig list\r\n") and b"\r\n.dot line 7\r\n" in out
        txt = dns_record(key)
        assert dkim.verify(out, dnsfunc=lambda name, timeout=5: txt.encode())
