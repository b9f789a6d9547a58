"""Key values (relist.core.sign.signing_keys) and key files (relist.edge.key_files)."""

from __future__ import annotations

import base64
import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from relist.core.sign import (
    BadKey, KeyStatus, SigningKey, check_record, dns_record, load_private_key, parse_record,
    private_pem, zone_line,
)
from relist.core.sign.signing_keys import txt_strings
from relist.edge.key_files import KeyFileError, generate, read_private_key, write_private_key

RSA_PRIV = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED_PRIV = ed25519.Ed25519PrivateKey.generate()
RSA_KEY = SigningKey("rsa-sha256", RSA_PRIV)
ED_KEY = SigningKey("ed25519-sha256", ED_PRIV)

# RFC 8463 Appendix A.2: the Ed25519 test key (seed) and its published p=.
RFC8463_SEED = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="
RFC8463_P = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="


def pem(priv, fmt):
    return priv.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


@pytest.mark.parametrize("data,algorithm", [
    (pem(RSA_PRIV, serialization.PrivateFormat.TraditionalOpenSSL), "rsa-sha256"),
    (pem(RSA_PRIV, serialization.PrivateFormat.PKCS8), "rsa-sha256"),
    (pem(ED_PRIV, serialization.PrivateFormat.PKCS8), "ed25519-sha256"),
    (RFC8463_SEED.encode() + b"\n", "ed25519-sha256"),
])
def test_load_private_key_formats(data, algorithm):
    key = load_private_key(data, "k.pem")
    assert key.algorithm == algorithm
    assert load_private_key(private_pem(key)).public_bytes() == key.public_bytes()


def test_rfc8463_public_key():
    assert load_private_key(RFC8463_SEED.encode()).public_b64() == RFC8463_P


@pytest.mark.parametrize("data", [b"", b"hello",
                                  b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                                  base64.b64encode(b"x" * 31)])
def test_load_private_key_rejects_garbage(data):
    with pytest.raises(BadKey, match="k.pem"):
        load_private_key(data, "k.pem")


def test_repr_shows_no_key_material():
    text = repr(RSA_KEY) + str(ED_KEY)
    assert "rsa-sha256 2048-bit" in text and "ed25519-sha256" in text
    for key in (RSA_KEY, ED_KEY):
        assert key.public_b64()[:16] not in text
        assert b"PRIVATE" not in text.encode()


def test_dns_record_and_zone_line():
    rec = dns_record(RSA_KEY)
    assert rec.startswith("v=DKIM1; k=rsa; p=MIIB")
    assert parse_record(rec)["p"] == RSA_KEY.public_b64()
    assert dns_record(ED_KEY, testing=True) == f"v=DKIM1; k=ed25519; t=y; p={ED_KEY.public_b64()}"
    assert len(base64.b64decode(parse_record(dns_record(ED_KEY))["p"])) == 32   # RFC 8463 §4.2
    big = SigningKey("rsa-sha256", rsa.generate_private_key(public_exponent=65537, key_size=4096))
    strings = txt_strings(dns_record(big))
    assert len(strings) == 4 and all(len(s.encode()) <= 255 for s in strings)
    assert "".join(strings) == dns_record(big)
    line = zone_line("s1", "Example.org.", rec)
    assert (line.startswith('s1._domainkey.Example.org. IN TXT ( "v=DKIM1; k=rsa; " "p=')
            and line.endswith('" )'))


OTHER = SigningKey("rsa-sha256", rsa.generate_private_key(public_exponent=65537, key_size=2048))
SMALL = SigningKey("rsa-sha256", rsa.generate_private_key(public_exponent=65537, key_size=1024))
PKCS1 = RSA_PRIV.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)


@pytest.mark.parametrize("key,records,status", [
    (RSA_KEY, (dns_record(RSA_KEY).encode(),), KeyStatus.OK),
    (RSA_KEY, (b"v=DKIM1; k=rsa; p=" + base64.b64encode(PKCS1),), KeyStatus.OK),  # bare RSAPublicKey
    (RSA_KEY, (b"p=" + RSA_KEY.public_b64().encode(),), KeyStatus.OK),            # v=, k= default
    (ED_KEY, (dns_record(ED_KEY).encode(),), KeyStatus.OK),
    (RSA_KEY, (), KeyStatus.NOT_PUBLISHED),
    (RSA_KEY, (dns_record(OTHER).encode(),), KeyStatus.MISMATCH),
    (RSA_KEY, (dns_record(ED_KEY).encode(),), KeyStatus.MISMATCH),
    (RSA_KEY, (dns_record(RSA_KEY).encode(), dns_record(OTHER).encode()), KeyStatus.MISMATCH),
    (RSA_KEY, (dns_record(RSA_KEY, testing=True).encode(),), KeyStatus.TESTING),
    (RSA_KEY, (b"v=DKIM1; k=rsa; t=s:y; p=" + RSA_KEY.public_b64().encode(),), KeyStatus.TESTING),
    (SMALL, (dns_record(SMALL).encode(),), KeyStatus.TOO_SMALL),
    (RSA_KEY, (b"v=DKIM1; k=rsa; p=",), KeyStatus.REVOKED),
    (RSA_KEY, (b"v=DKIM2; k=rsa; p=" + RSA_KEY.public_b64().encode(),), KeyStatus.INVALID),
    (RSA_KEY, (b"v=DKIM1; k=rsa; p=!!!",), KeyStatus.INVALID),
    (RSA_KEY, (b"v=DKIM1; k=rsa",), KeyStatus.INVALID),
    (RSA_KEY, (b"v=DKIM1; p=a; p=b",), KeyStatus.INVALID),
])
def test_check_record(key, records, status):
    assert check_record(key, records, min_bits=2048 if key is SMALL else 1024).status is status


def test_write_is_0600_even_with_empty_umask_and_never_overwrites(tmp_path):
    old = os.umask(0)
    try:
        path = write_private_key(tmp_path / "k.key", generate("ed25519"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(KeyFileError, match="already exists"):
        write_private_key(path, generate("ed25519"))


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o400 | 0o040])
def test_read_refuses_group_or_world_readable(tmp_path, mode):
    path = write_private_key(tmp_path / "k.key", generate("rsa", 1024))
    os.chmod(path, mode)
    with pytest.raises(KeyFileError) as info:
        read_private_key(path)
    assert str(path) in str(info.value) and "chmod 600" in str(info.value)
    assert b"PRIVATE" not in str(info.value).encode()


def test_read_ok_and_missing(tmp_path):
    key = generate("rsa", 1024)
    path = write_private_key(tmp_path / "k.key", key)
    os.chmod(path, 0o400)
    assert read_private_key(path).public_bytes() == key.public_bytes()
    with pytest.raises(KeyFileError, match="not found"):
        read_private_key(tmp_path / "missing.key")
    bad = tmp_path / "bad.key"
    fd = os.open(bad, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"-----BEGIN RSA PRIVATE KEY-----\nsecretstuff\n-----END RSA PRIVATE KEY-----\n")
    os.close(fd)
    with pytest.raises(KeyFileError) as info:
        read_private_key(bad)
    assert str(bad) in str(info.value) and "secretstuff" not in str(info.value)


def test_load_configured_keys_refuses_a_world_readable_file(tmp_path):
    from relist.config import parse
    from relist.edge.key_files import load_configured_keys
    good = write_private_key(tmp_path / "good.key", generate("ed25519"))
    bad = write_private_key(tmp_path / "bad.key", generate("rsa", 1024))
    cfg = parse({"lists": {"a@example.org": {"ed25519_selector": "e", "ed25519_private_key": str(good)},
                           "b@example.org": {"selector": "s", "private_key": str(bad)}}})
    assert set(load_configured_keys(cfg.relay)) == {str(good), str(bad)}
    os.chmod(bad, 0o644)
    with pytest.raises(KeyFileError, match=str(bad)):
        load_configured_keys(cfg.relay)
