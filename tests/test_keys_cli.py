"""``relist keys`` end to end: generate, show, test (against a real DNS server on
127.0.0.1 over UDP), rotate.  DNS comes from relist.sandbox.dnsserver."""

from __future__ import annotations

import os
import stat

import pytest

import relist.cli as cli
from relist.core.sign import dns_record
from relist.edge.key_files import generate, read_private_key, write_private_key
from relist.sandbox.dnsserver import DNSServer


@pytest.fixture
def relist(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("keys",))
    return cli.main


def make_conf(tmp_path, lists: dict, defaults: dict | None = None) -> str:
    lines = []
    if defaults:
        lines.append("[list_defaults]")
        lines += [f'{k} = "{v}"' for k, v in defaults.items()]
    for address, keys in lists.items():
        lines.append(f'[lists."{address}"]')
        lines += [f'{k} = "{v}"' for k, v in keys.items()]
    path = tmp_path / "relist.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def zone_strings(line: str) -> list[str]:
    inner = line.split("(", 1)[1].rsplit(")", 1)[0]
    return [s for s in inner.strip().split('"') if s.strip()]


@pytest.mark.parametrize("algorithm,bits,k",
                         [("rsa", 2048, "rsa"), ("rsa", 1024, "rsa"), ("ed25519", 2048, "ed25519")])
def test_generate_writes_0600_key_and_prints_record(relist, tmp_path, capsys, algorithm, bits, k):
    old = os.umask(0)   # even with an empty umask the file must be created 0600
    try:
        rc = relist(["keys", "generate", "--domain", "Lists.Example.org.", "--selector", "sel1",
                     "--algorithm", algorithm, "--bits", str(bits), "--out", str(tmp_path)])
    finally:
        os.umask(old)
    assert rc == 0
    path = tmp_path / "sel1.lists.example.org.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = read_private_key(path)
    assert key.kind == k and (k != "rsa" or key.bits == bits)
    out = capsys.readouterr().out
    record_line = [ln for ln in out.splitlines() if not ln.startswith(";")]
    assert len(record_line) == 1
    line = record_line[0]
    assert line.startswith("sel1._domainkey.lists.example.org. IN TXT ( ")
    strings = zone_strings(line)
    assert all(len(s.encode()) <= 255 for s in strings)
    assert "".join(strings) == dns_record(key)
    assert "PRIVATE" not in out and key.public_b64()[:20] in out


def test_generate_refuses_to_overwrite_and_small_keys(relist, tmp_path, capsys):
    args = ["keys", "generate", "--domain", "example.org", "--selector", "s", "--out", str(tmp_path)]
    assert relist(args) == 0
    before = (tmp_path / "s.example.org.key").read_bytes()
    assert relist(args) == 2
    assert (tmp_path / "s.example.org.key").read_bytes() == before
    assert relist(["keys", "generate", "--domain", "example.org", "--selector", "t", "--bits", "512",
                   "--out", str(tmp_path)]) == 2
    assert not (tmp_path / "t.example.org.key").exists()
    assert "already exists" in capsys.readouterr().err


def _keyfile(tmp_path, name, algorithm="rsa", bits=2048):
    key = generate(algorithm, bits)
    return key, str(write_private_key(tmp_path / name, key))


def test_show_prints_every_configured_key(relist, tmp_path, capsys):
    rsa_key, rsa_path = _keyfile(tmp_path, "a.key")
    ed_key, ed_path = _keyfile(tmp_path, "b.key", "ed25519")
    conf = make_conf(tmp_path, {
        "dev@example.org": {"selector": "s1", "private_key": rsa_path,
                            "ed25519_selector": "e1", "ed25519_private_key": ed_path},
        "ann@example.com": {"signing_domain": "mail.example.com", "selector": "s1", "private_key": rsa_path},
    })
    assert relist(["keys", "show", "-c", conf]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if not ln.startswith(";")]
    assert len(lines) == 3
    by_name = {ln.split()[0]: "".join(zone_strings(ln)) for ln in lines}
    assert by_name == {
        "s1._domainkey.example.org.": dns_record(rsa_key),
        "e1._domainkey.example.org.": dns_record(ed_key),
        "s1._domainkey.mail.example.com.": dns_record(rsa_key),
    }


def test_show_refuses_group_readable_key(relist, tmp_path, capsys):
    _, path = _keyfile(tmp_path, "a.key")
    os.chmod(path, 0o640)
    conf = make_conf(tmp_path, {"dev@example.org": {"selector": "s1", "private_key": path}})
    assert relist(["keys", "show", "-c", conf]) == 2
    err = capsys.readouterr().err
    assert path in err and "group or others" in err


def test_keys_test_against_loopback_dns(relist, tmp_path, capsys):
    good, good_path = _keyfile(tmp_path, "good.key")
    ed, ed_path = _keyfile(tmp_path, "ed.key", "ed25519")
    other, _ = _keyfile(tmp_path, "other.key")
    unpub, unpub_path = _keyfile(tmp_path, "unpub.key")
    testing, testing_path = _keyfile(tmp_path, "testing.key")
    small, small_path = _keyfile(tmp_path, "small.key", bits=1024)
    conf = make_conf(tmp_path, {
        "a@good.example": {"selector": "s", "private_key": good_path,
                           "ed25519_selector": "e", "ed25519_private_key": ed_path},
        "b@mismatch.example": {"selector": "s", "private_key": good_path},
        "c@unpub.example": {"selector": "s", "private_key": unpub_path},
        "d@testing.example": {"selector": "s", "private_key": testing_path},
        "e@small.example": {"selector": "s", "private_key": small_path},
        "f@servfail.example": {"selector": "s", "private_key": good_path},
    })
    records = {
        "s._domainkey.good.example": dns_record(good),
        "e._domainkey.good.example": dns_record(ed),
        "s._domainkey.mismatch.example": dns_record(other),
        "s._domainkey.testing.example": dns_record(testing, testing=True),
        "s._domainkey.small.example": dns_record(small),
    }
    with DNSServer({**records, "s._domainkey.servfail.example": "SERVFAIL"}) as server:
        # [verify] min_key_bits = 2048 makes the 1024-bit key "too small"
        with open(conf, "a") as fh:
            fh.write("[verify]\nmin_key_bits = 2048\n[dns]\ntimeout = 2\n")
        rc = relist(["keys", "test", "-c", conf, "--nameserver", f"127.0.0.1:{server.port}"])
    out = capsys.readouterr().out
    status = {ln.split("\t")[0]: ln.split("\t")[2] for ln in out.splitlines()}
    assert status == {
        "s._domainkey.good.example": "ok",
        "e._domainkey.good.example": "ok",
        "s._domainkey.mismatch.example": "mismatch",
        "s._domainkey.unpub.example": "not published",
        "s._domainkey.testing.example": "testing flag (t=y)",
        "s._domainkey.small.example": "too small",
        "s._domainkey.servfail.example": "dns error",
    }
    assert rc == 1
    assert "s._domainkey.good.example" in server.queries


def test_keys_test_all_ok_exits_0_using_config_nameservers(relist, tmp_path, capsys):
    good, good_path = _keyfile(tmp_path, "good.key")
    conf = make_conf(tmp_path, {"a@good.example": {"selector": "s", "private_key": good_path}})
    with DNSServer({"s._domainkey.good.example": dns_record(good)}) as server:
        with open(conf, "a") as fh:
            fh.write(f'[dns]\nnameservers = ["127.0.0.1:{server.port}"]\n')
        assert relist(["keys", "test", "-c", conf]) == 0
    assert "\tok\t" in capsys.readouterr().out


def test_rotate_makes_new_key_and_prints_steps(relist, tmp_path, capsys):
    _, path = _keyfile(tmp_path, "s1.key")
    conf = make_conf(tmp_path, {"dev@example.org": {"selector": "s1", "private_key": path}})
    assert relist(["keys", "rotate", "-c", conf, "--list", "dev@example.org", "--selector", "s2"]) == 0
    out = capsys.readouterr().out
    new = read_private_key(tmp_path / "s2.example.org.key")
    record = [ln for ln in out.splitlines() if not ln.startswith(";")]
    assert record[0].startswith("s2._domainkey.example.org. IN TXT")
    assert "".join(zone_strings(record[0])) == dns_record(new)
    assert 'selector = "s2"' in out and "s1._domainkey.example.org" in out
    assert relist(["keys", "rotate", "-c", conf, "--list", "dev@example.org", "--selector", "s1"]) == 2
    assert relist(["keys", "rotate", "-c", conf, "--list", "nobody@example.org"]) == 2


def test_generate_creates_a_missing_out_directory_owner_only(relist, tmp_path):
    out = tmp_path / "etc" / "relist" / "keys"
    assert relist(["keys", "generate", "--domain", "example.org", "--selector", "s", "--out", str(out)]) == 0
    assert (out / "s.example.org.key").exists()
    assert stat.S_IMODE(out.stat().st_mode) == 0o700


def test_generate_into_an_unusable_directory_is_a_clear_error(relist, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert relist(["keys", "generate", "--domain", "example.org", "--selector", "s",
                   "--out", str(blocker / "keys")]) == 2
    assert "a-file" in capsys.readouterr().err
