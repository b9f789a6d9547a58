"""footer step: table-driven over real message bytes (issue: list transformations).

Every row is checked the same way: the output parses with the ``email`` package, the
footer text is in a decoded text/plain part, untouched header fields keep their bytes
and order, untouched parts keep their bytes, and a second run changes nothing.
"""

from __future__ import annotations

import base64
import email
import shutil
import subprocess
from datetime import datetime, timezone
from email import policy as email_policy
from pathlib import Path

import pytest

from relist.core import mime
from relist.core.message import RawMessage
from relist.core.model import Action, Context, Envelope, Known, Work
from relist.core.policy import ListPolicy, RelayPolicy
from relist.core.steps import footer

DATA = Path(__file__).resolve().parent / "data" / "transform"
CRLF = b"\r\n"

ASCII_FOOTER = ("_______________________________________________\n"
                "$display_name mailing list -- $listname\n"
                "To unsubscribe send an email to ${short_listname}-leave@${domain}\n")
UTF8_FOOTER = "-- \n{list_name} – Liste für Ameisen\nAbmelden: {unsubscribe_url}\n"
EURO_FOOTER = "Spende: 5 €\n"

LP = ListPolicy(address="ant@example.org", footer=ASCII_FOOTER,
                unsubscribe_url="https://lists.example.org/ant/unsubscribe")


def lp(text: str) -> ListPolicy:
    return ListPolicy(address="ant@example.org", footer=text,
                      unsubscribe_url="https://lists.example.org/ant/unsubscribe")


def build(headers: list[bytes], body: bytes, eol: bytes = CRLF) -> bytes:
    return b"".join(h + eol for h in headers) + eol + body.replace(b"\n", eol)


BASE = [b"From: Ann <ann@example.net>", b"To: ant@example.org", b"Subject: hello",
        b"Message-ID: <m1@example.net>", b"Date: Wed, 6 Mar 2024 09:00:00 +0000"]


def plain(ct: bytes | None, cte: bytes | None, body: bytes, eol: bytes = CRLF,
          extra: tuple[bytes, ...] = ()) -> bytes:
    hs = list(BASE) + list(extra)
    if ct is not None:
        hs += [b"MIME-Version: 1.0", b"Content-Type: " + ct]
    if cte is not None:
        hs.append(b"Content-Transfer-Encoding: " + cte)
    return build(hs, body, eol)


# -- helpers for the checks -------------------------------------------------------------

def expanded(policy: ListPolicy) -> str:
    from relist.core.templates import expand
    return expand(policy.footer, policy)


def text_parts(raw: bytes) -> list[str]:
    m = email.message_from_bytes(raw, policy=email_policy.compat32)
    out = []
    for part in m.walk():
        if part.get_content_type() == "text/plain" and not part.is_multipart():
            payload = part.get_payload(decode=True) or b""
            try:
                text = payload.decode(part.get_content_charset() or "us-ascii", "replace")
            except LookupError:     # unknown charset: still look for the footer
                text = payload.decode("latin-1")
            if (part.get_param("format") or "").lower() == "flowed":   # RFC 3676 §4.4 un-stuff
                text = "\n".join(ln[1:] if ln.startswith(" ") else ln for ln in text.split("\n"))
            out.append(text)
    return out


def squash(text: str) -> str:
    return "\n".join(ln.rstrip() for ln in text.replace("\r\n", "\n").strip().split("\n"))


def assert_footer_present(raw: bytes, policy: ListPolicy):
    want = squash(expanded(policy))
    found = [squash(t) for t in text_parts(raw)]
    assert any(want in t for t in found), f"footer not in any text/plain part: {found!r}"


def assert_fields_kept(before: RawMessage, after: RawMessage, allowed: set[str]):
    """Every field not in ``allowed`` keeps its exact bytes and relative order."""
    kept_before = [f.raw for f in before.fields if f.name not in allowed]
    kept_after = [f.raw for f in after.fields if f.name not in allowed]
    assert kept_before == kept_after


CONTENT = {"content-type", "content-transfer-encoding", "content-disposition",
           "content-language", "mime-version"}


# -- the table --------------------------------------------------------------------------

def _read(name):
    return (DATA / name).read_bytes()


QP_BODY = b"Gr=C3=BC=C3=9Fe,\nline two with a long soft break =\nstill line two\n"
B64_TEXT = "Grüße aus Köln\nzweite Zeile\n".encode("utf-8")

CASES = [
    # id, raw, policy, detail fragment, fields allowed to change
    ("7bit-ascii", plain(b"text/plain; charset=us-ascii", b"7bit", b"Hello all\n"), LP,
     "footer appended to text/plain (7bit, us-ascii)", set()),
    ("7bit-nonascii-footer", plain(b"text/plain; charset=us-ascii", b"7bit", b"Hello all\n"),
     lp(UTF8_FOOTER), "charset us-ascii -> utf-8, 7bit -> quoted-printable", CONTENT),
    ("no-mime-fields", plain(None, None, b"Plain RFC 822 body\n"), lp(UTF8_FOOTER),
     "quoted-printable, utf-8", CONTENT),
    ("no-mime-ascii", plain(None, None, b"Plain RFC 822 body\n"), LP, "(7bit, us-ascii)", set()),
    ("8bit-utf8", plain(b"text/plain; charset=utf-8", b"8bit", "Grüße\n".encode()), lp(UTF8_FOOTER),
     "(8bit, utf-8)", set()),
    ("8bit-latin1-fits", plain(b"text/plain; charset=iso-8859-1", b"8bit", "Grüße\n".encode("latin-1")),
     lp("Liste für Ameisen\n"), "(8bit, iso-8859-1)", set()),
    ("8bit-latin1-euro", plain(b'text/plain; charset="iso-8859-1"; format=flowed', b"8bit",
                               "Grüße\n".encode("latin-1")),
     lp(EURO_FOOTER), "charset iso-8859-1 -> utf-8", CONTENT),
    ("qp-utf8", plain(b"text/plain; charset=utf-8", b"quoted-printable", QP_BODY), lp(UTF8_FOOTER),
     "(quoted-printable, utf-8)", set()),
    ("qp-no-final-newline", plain(b"text/plain; charset=utf-8", b"quoted-printable", b"last line"),
     lp(UTF8_FOOTER), "(quoted-printable, utf-8)", set()),
    ("qp-soft-break-at-end", plain(b"text/plain; charset=utf-8", b"quoted-printable", b"abc=\n"),
     LP, "(quoted-printable, utf-8)", set()),
    ("qp-trailing-space", plain(b"text/plain; charset=utf-8", b"quoted-printable", b"ends in space "),
     LP, "(quoted-printable, utf-8)", set()),
    ("qp-latin1-euro", plain(b"text/plain; charset=iso-8859-1", b"quoted-printable", b"Gr=FC=DFe\n"),
     lp(EURO_FOOTER), "charset iso-8859-1 -> utf-8", CONTENT),
    ("base64-utf8", plain(b"text/plain; charset=utf-8", b"base64",
                          base64.encodebytes(B64_TEXT)), lp(UTF8_FOOTER), "(base64, utf-8)", set()),
    ("flowed", plain(b"text/plain; charset=utf-8; format=flowed", b"8bit", b"flowed text \nend\n"),
     lp("From the list \n> not a quote\n-- \n"), "(8bit, utf-8)", set()),
    ("lf-line-endings", plain(b"text/plain; charset=utf-8", b"8bit", b"unix mail\n", eol=b"\n"),
     lp(UTF8_FOOTER), "(8bit, utf-8)", set()),
    ("no-body", build(BASE + [b"Content-Type: text/plain"], b"")[:-2], LP, "(7bit, us-ascii)", set()),
    ("8bit-in-headers", plain(b"text/plain; charset=utf-8", b"8bit", b"body\n",
                              extra=("Subject2: Grüße roh".encode(), "X-Name: J\xf6rg".encode("latin-1"))),
     lp(UTF8_FOOTER), "(8bit, utf-8)", set()),
    ("mixed-attachment", _read("mixed-pdf.eml"), lp(UTF8_FOOTER),
     "footer added as a text/plain part of multipart/mixed", set()),
    ("alternative", _read("thunderbird-alternative.eml"), LP,
     "wrapped multipart/alternative in multipart/mixed", CONTENT),
    ("html-only", plain(b"text/html; charset=utf-8", b"8bit", b"<p>Hi</p>\n"), LP,
     "wrapped text/html", CONTENT),
    ("text-attachment", plain(b"text/plain; name=notes.txt", b"7bit", b"file\n",
                              extra=(b"Content-Disposition: attachment; filename=notes.txt",)),
     LP, "wrapped text/plain in multipart/mixed (attachment)", CONTENT),
    ("pkcs7-mime", plain(b'application/pkcs7-mime; smime-type=signed-data; name="smime.p7m"', b"base64",
                         b"MIAGCSqGSIb3DQEHAqCAMIACAQExDzANBglghkgBZQMEAgEFADCABgkqhkiG9w0BBwGggCSABGt\n"),
     LP, "wrapped application/pkcs7-mime", CONTENT),
    ("unknown-charset", plain(b"text/plain; charset=x-klingon", b"8bit", b"nuqneH\n"), LP,
     "wrapped text/plain in multipart/mixed (unknown charset x-klingon)", CONTENT),
    ("utf16-charset", plain(b"text/plain; charset=utf-16", b"base64",
                            base64.encodebytes("hi\n".encode("utf-16"))), LP,
     "charset utf-16 is not ASCII-compatible", CONTENT),
    ("broken-base64", plain(b"text/plain; charset=utf-8", b"base64", b"SGVsbG8gd29ybGQ=x!!\n"), LP,
     "(broken base64 in text/plain part)", CONTENT),
    ("unknown-cte", plain(b"text/plain", b"x-uuencode", b"begin 644 f\n"), LP,
     "unknown transfer encoding x-uuencode", CONTENT),
    ("bad-content-type", plain(b"garbage", b"7bit", b"body\n"), LP, "unreadable Content-Type", CONTENT),
]


@pytest.mark.parametrize("case_id,raw,policy,detail,allowed", CASES, ids=[c[0] for c in CASES])
def test_footer_table(case_id, raw, policy, detail, allowed):
    before = RawMessage.parse(raw)
    after, got = footer.transform(before, policy)
    assert after is not None, got
    assert detail in got
    out = after.to_bytes()
    assert_footer_present(out, policy)
    assert_fields_kept(before, after, allowed)
    # The body of the original is still there, decoded the same way.
    for text in text_parts(raw):
        if text.strip():
            assert any(text.replace("\r\n", "\n").rstrip() in t.replace("\r\n", "\n")
                       for t in text_parts(out))
    # Idempotent: a retry does not add the footer twice.
    again, why = footer.transform(after, policy)
    assert again is None and "already present" in why


# Rows where the original body bytes must survive as a prefix of the new body.
PREFIX_KEPT = ["7bit-ascii", "no-mime-ascii", "8bit-utf8", "8bit-latin1-fits", "qp-utf8",
               "qp-soft-break-at-end", "lf-line-endings", "8bit-in-headers", "flowed"]


@pytest.mark.parametrize("case_id", PREFIX_KEPT)
def test_text_body_bytes_kept(case_id):
    raw, policy = next((c[1], c[2]) for c in CASES if c[0] == case_id)
    before = RawMessage.parse(raw)
    after, _ = footer.transform(before, policy)
    assert after.body.startswith(before.body)


def test_seven_bit_gains_quoted_printable_and_charset():
    raw = plain(b"text/plain; charset=us-ascii; format=flowed", b"7bit", b"Hello\n")
    after, _ = footer.transform(RawMessage.parse(raw), lp(UTF8_FOOTER))
    assert after.get("content-type").raw == b'Content-Type: text/plain; charset="utf-8"; format=flowed\r\n'
    assert after.get("content-transfer-encoding").raw == b"Content-Transfer-Encoding: quoted-printable\r\n"
    assert after.body.isascii()


def test_latin1_switch_transcodes_body():
    raw = plain(b"text/plain; charset=iso-8859-1", b"8bit", "Grüße\n".encode("latin-1"))
    after, _ = footer.transform(RawMessage.parse(raw), lp(EURO_FOOTER))
    assert after.body == "Grüße\r\nSpende: 5 €\r\n".encode("utf-8")


def test_flowed_footer_is_stuffed():
    raw = next(c[1] for c in CASES if c[0] == "flowed")
    after, _ = footer.transform(RawMessage.parse(raw), lp("From the list \n> not a quote\n-- \n"))
    assert after.body.endswith(b"end\r\n From the list\r\n > not a quote\r\n-- \r\n")


def test_mixed_parts_byte_identical():
    raw = _read("mixed-pdf.eml")
    before = RawMessage.parse(raw)
    after, _ = footer.transform(before, lp(UTF8_FOOTER))
    layout = mime.scan_multipart(before.body, "b1_mixed")
    new_layout = mime.scan_multipart(after.body, "b1_mixed")
    old_parts = [before.body[s:e] for s, e in layout.parts]
    new_parts = [after.body[s:e] for s, e in new_layout.parts]
    assert new_parts[:-1] == old_parts and len(new_parts) == len(old_parts) + 1
    # Preamble, close delimiter and epilogue unchanged: only an insertion happened.
    assert after.body[:layout.close] == before.body[:layout.close]
    assert after.body.endswith(before.body[layout.close:])
    assert after.fields == before.fields


def test_wrap_moves_content_fields_and_keeps_inner_bytes():
    raw = _read("thunderbird-alternative.eml")
    before = RawMessage.parse(raw)
    after, _ = footer.transform(before, LP)
    m = email.message_from_bytes(after.to_bytes())
    assert m.get_content_type() == "multipart/mixed"
    inner, foot = m.get_payload()
    assert inner.get_content_type() == "multipart/alternative"
    assert foot.get_content_type() == "text/plain"
    # The wrapped entity is exactly the original Content-* fields + the original body.
    boundary = m.get_boundary()
    layout = mime.scan_multipart(after.body, boundary)
    s, e = layout.parts[0]
    content = b"".join(f.raw for f in before.fields if f.name.startswith("content-"))
    assert after.body[s:e] == content + CRLF + before.body
    assert after.get("mime-version").raw == before.get("mime-version").raw
    # RFC 2045 §6.4: the 8bit inner parts make the new multipart 8bit.
    outer = [f.raw for f in after.fields if f.name.startswith("content-")]
    assert outer[1:] == [b"Content-Transfer-Encoding: 8bit\r\n"]
    # Content-Language described the body: it moved inside with Content-Type.
    assert b"Content-Language: de-DE\r\n" in after.body[s:e]


# -- S/MIME: the signed part's bytes and signature survive ------------------------------

def smime_message() -> bytes:
    crypto = pytest.importorskip("cryptography")
    del crypto
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import pkcs7
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "poster@example.net")])
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(start)
            .not_valid_after(start.replace(year=2034)).sign(key, hashes.SHA256()))
    data = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nSigned hello\r\n"
    signed = (pkcs7.PKCS7SignatureBuilder().set_data(data).add_signer(cert, key, hashes.SHA256())
              .sign(serialization.Encoding.SMIME, [pkcs7.PKCS7Options.DetachedSignature]))
    return b"From: poster@example.net\r\nTo: ant@example.org\r\nSubject: signed\r\n" + signed


def openssl_verifies(entity: bytes, tmp_path) -> bool:
    path = tmp_path / "entity.eml"
    path.write_bytes(entity)
    r = subprocess.run(["openssl", "smime", "-verify", "-noverify", "-in", str(path),
                        "-out", "/dev/null"], capture_output=True)
    return r.returncode == 0


def test_smime_signed_part_unchanged_and_verifies(tmp_path):
    raw = smime_message()
    before = RawMessage.parse(raw)
    after, detail = footer.transform(before, lp(UTF8_FOOTER))
    assert "wrapped multipart/signed in multipart/mixed" in detail
    old_boundary = mime.content_info(before.fields).boundary
    old = mime.scan_multipart(before.body, old_boundary)
    signed_old = before.body[old.parts[0][0]:old.parts[0][1]]
    assert signed_old in after.body
    assert_footer_present(after.to_bytes(), lp(UTF8_FOOTER))
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed: bytes checked, signature not re-verified")
    outer = mime.scan_multipart(after.body, mime.content_info(after.fields).boundary)
    s, e = outer.parts[0]
    inner_entity = after.body[s:e]
    assert openssl_verifies(inner_entity, tmp_path)
    # The check can fail: one changed byte in the signed text breaks it.
    tampered = inner_entity.replace(b"Signed hello", b"Signed hellO")
    assert not openssl_verifies(tampered, tmp_path)


# -- bad input: never a crash, never a change, always a reason ---------------------------

MIXED = [b"MIME-Version: 1.0"]
SKIPS = [
    ("no-boundary", build(BASE + MIXED + [b"Content-Type: multipart/mixed"],
                          b"--x\nContent-Type: text/plain\n\nhi\n--x--\n"),
     "multipart/mixed without a boundary parameter"),
    ("wrong-boundary", build(BASE + MIXED + [b'Content-Type: multipart/mixed; boundary="nothere"'],
                             b"--x\nContent-Type: text/plain\n\nhi\n--x--\n"), "boundary not found in body"),
    ("truncated", build(BASE + MIXED + [b'Content-Type: multipart/mixed; boundary="x"'],
                        b"--x\nContent-Type: text/plain\n\nhi\n--x\nContent-Type: application/pdf\n\nJVBER"),
     "no close delimiter (truncated multipart)"),
    ("truncated-signed",
     build(BASE + MIXED + [b'Content-Type: multipart/signed; boundary="s";'
                           b' protocol="application/pgp-signature"'],
           b"--s\nContent-Type: text/plain\n\nsigned\n--s\n"
           b"Content-Type: application/pgp-signature\n\n-----BEGIN PGP"),
     "no close delimiter (truncated multipart) in multipart/signed"),
    ("close-first", build(BASE + MIXED + [b'Content-Type: multipart/mixed; boundary="x"'],
                          b"--x--\n--x\n\nhi\n"),
     "close delimiter before any body part"),
    ("two-content-types", plain(b"text/plain", b"7bit", b"hi\n", extra=(b"Content-Type: text/html",)),
     "2 content-type fields"),
    ("empty-footer", plain(b"text/plain", b"7bit", b"hi\n"), "no footer configured"),
]


@pytest.mark.parametrize("case_id,raw,reason", SKIPS, ids=[c[0] for c in SKIPS])
def test_bad_input_skipped_with_reason(case_id, raw, reason):
    policy = lp("") if case_id == "empty-footer" else LP
    after, why = footer.transform(RawMessage.parse(raw), policy)
    assert after is None
    assert reason in why


def test_apply_records_notes():
    ctx = Context(Envelope("ant-bounces@example.org", ("x@example.com",)), RelayPolicy(),
                  datetime(2024, 3, 6, tzinfo=timezone.utc), "r1")
    raw = plain(b"text/plain", b"7bit", b"hi\n")
    w = footer.apply(Work(RawMessage.parse(raw)), ctx)
    assert w.notes[-1].action == Action.SKIPPED and w.notes[-1].detail == "no list"
    w = footer.apply(Work(RawMessage.parse(raw), Known(list_policy=LP)), ctx)
    assert w.notes[-1].action == Action.APPLIED and w.notes[-1].step == "footer"
    assert w.message.to_bytes() != raw
    w2 = footer.apply(w, ctx)
    assert w2.notes[-1].action == Action.SKIPPED and w2.message == w.message


@pytest.mark.parametrize("case_id,raw", [(c[0], c[1]) for c in CASES] + [(c[0], c[1]) for c in SKIPS],
                         ids=[c[0] for c in CASES] + [c[0] for c in SKIPS])
def test_truncated_anywhere_never_crashes(case_id, raw):
    """Cut every fixture at many points: transform must answer, and whatever it
    returns must parse."""
    step = max(1, len(raw) // 40)
    for cut in range(0, len(raw) + 1, step):
        after, why = footer.transform(RawMessage.parse(raw[:cut]), lp(UTF8_FOOTER))
        assert isinstance(why, str) and why
        if after is not None:
            email.message_from_bytes(after.to_bytes())


# -- big attachments: a boundary scan, not a decode ---------------------------------------

def big_message(ctype: bytes) -> bytes:
    blob = base64.encodebytes(bytes(range(256)) * (19 * 1024 * 1024 // 256))
    body = (b"--big\nContent-Type: text/plain\n\nsee attachment\n"
            b"--big\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
            + blob + b"--big--\n")
    return build(BASE + [b"MIME-Version: 1.0", b'Content-Type: ' + ctype + b'; boundary="big"'], body)


@pytest.mark.parametrize("ctype", [b"multipart/mixed", b"multipart/alternative"])
def test_25_mib_attachment_is_kept_byte_identical(ctype):
    """The footer scans boundaries; the 25 MiB attachment is neither decoded nor
    re-encoded: its bytes come out as they went in (speed: bench/, not here)."""
    raw = big_message(ctype)
    assert len(raw) > 25 * 1024 * 1024
    msg = RawMessage.parse(raw)
    after, detail = footer.transform(msg, LP)
    assert after is not None, detail
    assert after.body.count(b"--big\r\n") == 2 + (ctype == b"multipart/mixed")
    blob_start = msg.body.index(b"Content-Transfer-Encoding: base64")
    blob = msg.body[blob_start:msg.body.index(b"--big--")]
    assert blob in after.body


IN_PLACE = [c for c in CASES
            if "footer appended to text/plain" in footer.transform(RawMessage.parse(c[1]), c[2])[1]]


@pytest.mark.parametrize("case_id,raw,policy", [c[:3] for c in IN_PLACE], ids=[c[0] for c in IN_PLACE])
def test_decoded_text_is_original_plus_footer(case_id, raw, policy):
    """Exactly: old text, a line break if it lacked one, then the footer."""
    after, _ = footer.transform(RawMessage.parse(raw), policy)
    old = email.message_from_bytes(raw)
    new = email.message_from_bytes(after.to_bytes())
    old_text = (old.get_payload(decode=True) or b"").decode(old.get_content_charset() or "us-ascii")
    new_text = new.get_payload(decode=True).decode(new.get_content_charset() or "us-ascii")
    old_text = old_text.replace("\r\n", "\n")
    new_text = new_text.replace("\r\n", "\n")
    assert new_text.startswith(old_text)
    added = new_text[len(old_text):]
    if old_text and not old_text.endswith("\n"):
        assert added.startswith("\n")
        added = added[1:]
    want = expanded(policy)
    if (new.get_param("format") or "") == "flowed":
        assert squash(added) == squash("\n".join(" " + ln if ln.startswith(("From ", ">")) else ln
                                                 for ln in want.split("\n")))
    else:
        assert added == want
