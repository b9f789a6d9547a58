"""Key rotation with overlap (docs/keys.md "Rotate"): the previous_selector /
previous_private_key / rotation_overlap_until settings, the sign step during and after
the overlap, ``relist keys rotate`` end to end, ``keys show``/``keys test`` with the
previous key, and a post through the relay signed with both keys.

DNS is a real server on 127.0.0.1 (relist.sandbox.dnsserver) wherever relist resolves;
signatures are checked with relist's own verifier and with dkimpy.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dkim
import dns.zone
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

import relist.cli as cli
from relist.config import ConfigError, load, parse
from relist.core.verify import verify_message
from relist.core.message import RawMessage
from relist.core.model import Action
from relist.core.sign import KeyStatus, SigningKey, check_record, dns_record
from relist.core.steps import verify
from relist.edge.key_files import (
    KeyFileError, generate, load_configured_keys, read_private_key, write_private_key,
)
from relist.sandbox.dnsserver import DNSServer
from tests.helpers import client
from tests.test_step_sign import (
    KEYS, NOW, TXT, context, facts_for, note, policy, run, signed_post,
)

OLD_RSA = SigningKey("rsa-sha256", rsa.generate_private_key(public_exponent=65537, key_size=2048))
UNTIL = NOW + timedelta(days=7)
ROTATING = {"selector": "r1", "private_key": "/k/rsa.key", "previous_selector": "r0",
            "previous_private_key": "/k/old.key", "rotation_overlap_until": UNTIL}
ROT_KEYS = {**KEYS, "/k/old.key": OLD_RSA}
OLD_TXT = {"r0._domainkey.lists.example.org": dns_record(OLD_RSA)}
FULL_TXT = {**TXT, **OLD_TXT}


# -- configuration --------------------------------------------------------------------

def _list(values: dict, defaults: dict | None = None):
    data = {"lists": {"dev@lists.example.org": values}}
    if defaults is not None:
        data["list_defaults"] = defaults
    return parse(data).relay.lists[0]


KEYPAIR = {"selector": "r1", "private_key": "/k/new.key", "previous_selector": "r0",
           "previous_private_key": "/k/old.key"}


@pytest.mark.parametrize("value, expect", [
    ("2026-12-01T00:00:00Z", datetime(2026, 12, 1, tzinfo=timezone.utc)),
    ("2026-12-01t10:30:00z", datetime(2026, 12, 1, 10, 30, tzinfo=timezone.utc)),
    ("2026-12-01T02:00:00+02:00", datetime(2026, 12, 1, tzinfo=timezone.utc)),
    ("2026-12-01T00:00:00.5-01:30", datetime(2026, 12, 1, 1, 30, 0, 500000, tzinfo=timezone.utc)),
    ("2026-12-01", datetime(2026, 12, 1, tzinfo=timezone.utc)),
], ids=["Z", "lowercase", "offset", "fraction", "date"])
def test_overlap_until_is_parsed_as_utc(value, expect):
    lp = _list({**KEYPAIR, "rotation_overlap_until": value})
    assert lp.rotation_overlap_until == expect
    assert lp.rotation_overlap_until.utcoffset() == timedelta(0)
    assert (lp.previous_selector, lp.previous_private_key) == ("r0", "/k/old.key")


def test_overlap_until_as_toml_date_time_and_date_and_from_defaults():
    data = tomllib.loads(
        '[list_defaults]\nprevious_selector = "r0"\nprevious_private_key = "/k/old.key"\n'
        'rotation_overlap_until = 2026-12-01T03:00:00+03:00\nselector = "r1"\nprivate_key = "/k/new.key"\n'
        '[lists."dev@lists.example.org"]\nmode = "auto"\n'
        '[lists."ann@lists.example.org"]\nrotation_overlap_until = 2026-12-24\n')
    cfg = parse(data)
    assert cfg.relay.defaults.rotation_overlap_until == datetime(2026, 12, 1, tzinfo=timezone.utc)
    dev, ann = cfg.relay.lists
    assert dev.rotation_overlap_until == datetime(2026, 12, 1, tzinfo=timezone.utc)
    assert dev.previous_selector == "r0" and dev.mode == "auto"
    assert ann.rotation_overlap_until == datetime(2026, 12, 24, tzinfo=timezone.utc)


def test_no_rotation_by_default():
    lp = parse({}).relay.defaults
    assert (lp.previous_selector, lp.previous_private_key, lp.rotation_overlap_until) == ("", "", None)
    assert not lp.in_rotation_overlap(NOW)


BAD_UNTIL = [
    ("next week", "rotation_overlap_until = 'next week': expected an RFC 3339 date-time"),
    ("2026-12-01T00:00:00", "rotation_overlap_until = '2026-12-01T00:00:00': expected"),   # no offset
    ("2026-13-01T00:00:00Z", "rotation_overlap_until = '2026-13-01T00:00:00Z': expected"),
    ("2026-02-30", "rotation_overlap_until = '2026-02-30': expected"),
    (20261201, "rotation_overlap_until = 20261201: expected str/date"),
    (datetime(2026, 12, 1), "a local time without an offset is ambiguous"),             # TOML local date-time
]


@pytest.mark.parametrize("value, message", BAD_UNTIL, ids=[str(v) for v, _ in BAD_UNTIL])
def test_bad_overlap_until_names_list_and_key(value, message):
    with pytest.raises(ConfigError) as info:
        _list({**KEYPAIR, "rotation_overlap_until": value})
    assert "[lists.'dev@lists.example.org']" in str(info.value) and message in str(info.value)


BAD_SETS = [
    ({"selector": "r1", "private_key": "/k/new.key", "previous_selector": "r0"},
     "previous_selector is set but previous_private_key is not"),
    ({**KEYPAIR}, "previous_selector is set but rotation_overlap_until is not"),
    ({"selector": "r1", "private_key": "/k/new.key", "rotation_overlap_until": "2026-12-01"},
     "rotation_overlap_until is set but previous_selector is not"),
    ({**KEYPAIR, "selector": "", "private_key": "", "rotation_overlap_until": "2026-12-01"},
     "needs the new key in selector and private_key"),
    ({**KEYPAIR, "selector": "r0", "rotation_overlap_until": "2026-12-01"},
     "previous_selector = 'r0': must differ from selector"),
    ({**KEYPAIR, "private_key": "/k/old.key", "rotation_overlap_until": "2026-12-01"},
     "previous_private_key = '/k/old.key': must differ from private_key"),
]


@pytest.mark.parametrize("values, message", BAD_SETS,
                         ids=["no-key", "no-until", "no-previous", "no-current", "same-selector",
                              "same-file"])
def test_incoherent_rotation_settings_are_refused(values, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        _list(values)


def test_defaults_are_checked_and_a_list_cannot_half_clear_them():
    with pytest.raises(ConfigError, match=re.escape("[list_defaults] previous_selector is set")):
        parse({"list_defaults": KEYPAIR})
    defaults = {**KEYPAIR, "rotation_overlap_until": "2026-12-01"}
    with pytest.raises(ConfigError, match=re.escape("[lists.'dev@lists.example.org'] previous_private_key")):
        _list({"previous_selector": ""}, defaults)
    cleared = _list({"previous_selector": "", "previous_private_key": "", "rotation_overlap_until": ""},
                    defaults)
    assert (cleared.previous_selector, cleared.rotation_overlap_until) == ("", None)


# -- start-up loading --------------------------------------------------------------------

def test_previous_key_is_loaded_and_checked_at_start_up(tmp_path):
    new = write_private_key(tmp_path / "new.key", generate("rsa", 1024))
    old = write_private_key(tmp_path / "old.key", generate("rsa", 1024))
    cfg = parse({"lists": {"dev@example.org": {
        "selector": "r1", "private_key": str(new), "previous_selector": "r0",
        "previous_private_key": str(old), "rotation_overlap_until": "2026-12-01"}}})
    assert set(load_configured_keys(cfg.relay)) == {str(new), str(old)}
    os.chmod(old, 0o640)
    with pytest.raises(KeyFileError) as info:
        load_configured_keys(cfg.relay)
    assert str(old) in str(info.value) and "group or others" in str(info.value)
    os.remove(old)
    with pytest.raises(KeyFileError, match=re.escape(f"{old}: private key file not found")):
        load_configured_keys(cfg.relay)


# -- the sign step ------------------------------------------------------------------------------

def _list_sigs(out: bytes, relay, txt: dict, now: datetime):
    """relist's verdict on the list's signatures, DNS from TXT (test_step_sign) + ``txt``."""
    facts = facts_for(out, relay, txt, steps=(verify,))
    verdict = verify_message(RawMessage.parse(out), facts, now + timedelta(minutes=1))
    return [(s.selector, s.algorithm, str(s.result)) for s in verdict.dkim if s.domain == "lists.example.org"]


def _dkimpy(out: bytes, idx: int, txt: dict) -> bool:
    def dnsfunc(name, timeout=5):
        value = txt.get((name.decode() if isinstance(name, bytes) else name).rstrip("."))
        return value.encode() if value else None
    try:
        return bool(dkim.DKIM(out).verify(idx=idx, dnsfunc=dnsfunc))
    except dkim.DKIMException:
        return False


def test_during_overlap_both_rsa_keys_sign_and_verify():
    relay = policy(**ROTATING)
    raw = signed_post()
    now = UNTIL - timedelta(seconds=1)
    outcome = run(raw, context(raw, relay, txt=OLD_TXT, keys=ROT_KEYS, now=now))
    n = note(outcome, "sign")
    assert n.action == Action.APPLIED
    assert "rsa-sha256 d=lists.example.org s=r1, rsa-sha256 d=lists.example.org s=r0, ed25519" in n.detail
    out = outcome.message
    # the new key on top, the previous one right below it, then Ed25519
    assert _list_sigs(out, relay, OLD_TXT, now) == [
        ("r1", "rsa-sha256", "pass"), ("r0", "rsa-sha256", "pass"), ("e1", "ed25519-sha256", "pass")]
    assert _dkimpy(out, 0, FULL_TXT) and _dkimpy(out, 1, FULL_TXT) and _dkimpy(out, 2, FULL_TXT)
    assert not _dkimpy(out.replace(b"Hello list", b"Hello lisp"), 1, FULL_TXT)
    # a verifier that does not see the new record yet still has a passing RSA signature
    unseen = {**OLD_TXT, "r1._domainkey.lists.example.org": None}
    assert [r for _, _, r in _list_sigs(out, relay, unseen, now)] == ["permerror", "pass", "pass"]
    # the ARC seal uses the current selector only
    assert note(outcome, "arc-seal").detail.endswith("s=r1")
    assert b"s=r0" not in b"".join(f.raw for f in RawMessage.parse(out).get_all("arc-seal"))


@pytest.mark.parametrize("after", [timedelta(0), timedelta(days=30)], ids=["at-until", "later"])
def test_after_overlap_only_the_new_key_signs(after):
    relay = policy(**ROTATING)
    raw = signed_post()
    outcome = run(raw, context(raw, relay, txt=OLD_TXT, keys=ROT_KEYS, now=UNTIL + after))
    out = outcome.message
    assert "s=r0" not in note(outcome, "sign").detail
    assert _list_sigs(out, relay, OLD_TXT, UNTIL + after) == [
        ("r1", "rsa-sha256", "pass"), ("e1", "ed25519-sha256", "pass")]
    assert b"s=r0;" not in out and b"s=r0\r\n" not in out


def test_previous_key_is_needed_only_during_overlap():
    relay = policy(**ROTATING)
    raw = signed_post()
    during = run(raw, context(raw, relay, txt=OLD_TXT, keys=KEYS, now=NOW))
    assert during.message is None and during.reply.code == 451
    assert "signing key not loaded" in during.reply.text and "/k/" not in during.reply.text
    after = run(raw, context(raw, relay, txt=OLD_TXT, keys=KEYS, now=UNTIL))
    assert note(after, "sign").action == Action.APPLIED


# -- relist keys rotate / show / test -----------------------------------------------------------

@pytest.fixture
def relist(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("keys",))
    return cli.main


def _conf(tmp_path: Path, section: dict, extra: str = "") -> Path:
    body = "".join(f"{k} = {_toml(v)}\n" for k, v in section.items())
    path = tmp_path / "relist.toml"
    path.write_text(f'[lists."dev@lists.example.org"]\n{body}{extra}')
    return path


def _toml(v) -> str:
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _printed_settings(out: str) -> dict:
    """The configuration lines ``rotate`` prints (``;      key = "value"``), as TOML."""
    lines = [ln[1:].strip() for ln in out.splitlines() if re.match(r'^;\s+[a-z_0-9]+ = "', ln)]
    return tomllib.loads("\n".join(lines))


def _records(out: str) -> dict[str, str]:
    """Every non-comment line parsed as zone-file text by dnspython: name -> joined TXT
    strings, after checking each string's length."""
    zone = dns.zone.from_text("$TTL 3600\n"
                              + "\n".join(ln for ln in out.splitlines() if not ln.startswith(";")),
                              origin=".", relativize=False, check_origin=False)
    found = {}
    for name, rdataset in zone.iterate_rdatasets("TXT"):
        (rdata,) = list(rdataset)
        assert all(len(s) <= 255 for s in rdata.strings)
        found[name.to_text(omit_final_dot=True)] = b"".join(rdata.strings).decode()
    return found


def test_rotate_end_to_end(relist, tmp_path, capsys):
    old_key = generate("rsa", 2048)
    old = write_private_key(tmp_path / "s1.key", old_key)
    conf = _conf(tmp_path, {"selector": "s1", "private_key": old})
    before = datetime.now(timezone.utc)
    umask = os.umask(0)   # the key must be 0600 even with an empty umask
    try:
        rc = relist(["keys", "rotate", "-c", str(conf), "--list", "Dev@lists.example.org", "--overlap", "10"])
    finally:
        os.umask(umask)
    after = datetime.now(timezone.utc)
    assert rc == 0
    out = capsys.readouterr().out
    settings = _printed_settings(out)
    new_sel = settings["selector"]
    assert re.fullmatch(r"r\d{6}", new_sel) and new_sel in (f"r{before:%Y%m}", f"r{after:%Y%m}")
    new_path = Path(settings["private_key"])
    assert new_path == (tmp_path / f"{new_sel}.lists.example.org.key").resolve()
    assert stat.S_IMODE(new_path.stat().st_mode) == 0o600
    new_key = read_private_key(new_path)
    assert new_key.kind == "rsa" and new_key.bits == 2048
    # the record: real zone-file syntax, strings <= 255 bytes, the new key's record
    records = _records(out)
    assert list(records) == [f"{new_sel}._domainkey.lists.example.org"]
    assert records[f"{new_sel}._domainkey.lists.example.org"] == dns_record(new_key)
    assert check_record(new_key, [records[f"{new_sel}._domainkey.lists.example.org"].encode()]).status \
        is KeyStatus.OK
    assert "PRIVATE" not in out
    # the printed lines make a valid configuration: new key signs, old one during the overlap
    assert settings["previous_selector"] == "s1" and settings["previous_private_key"] == str(old)
    _conf(tmp_path, settings)
    lp = load(conf).relay.lists[0]
    assert (lp.selector, lp.previous_selector) == (new_sel, "s1")
    until = lp.rotation_overlap_until
    assert before + timedelta(days=10, minutes=-1) <= until <= after + timedelta(days=10)
    assert lp.in_rotation_overlap(after) and not lp.in_rotation_overlap(until)
    assert set(load_configured_keys(load(conf).relay)) == {str(new_path), str(old)}

    # rotating again: the derived selector skips the current and the previous one and any
    # existing key file; the printed lines replace the previous key
    assert relist(["keys", "rotate", "-c", str(conf), "--list", "dev@lists.example.org"]) == 0
    out2 = capsys.readouterr().out
    again = _printed_settings(out2)
    assert again["selector"] not in (new_sel, "s1") and again["previous_selector"] == new_sel
    assert "this replaces previous_selector" in out2
    assert relist(["keys", "rotate", "-c", str(conf), "--list", "dev@lists.example.org",
                   "--selector", "s1"]) == 2
    assert "already configured" in capsys.readouterr().err


def test_rotate_without_overlap_and_for_ed25519(relist, tmp_path, capsys):
    old = write_private_key(tmp_path / "s1.key", generate("rsa", 1024))
    ed = write_private_key(tmp_path / "e1.key", generate("ed25519"))
    conf = _conf(tmp_path, {"selector": "s1", "private_key": old,
                            "ed25519_selector": "e1", "ed25519_private_key": ed})
    assert relist(["keys", "rotate", "-c", str(conf), "--list", "dev@lists.example.org",
                   "--selector", "s2", "--overlap", "0"]) == 0
    assert _printed_settings(capsys.readouterr().out) == {
        "selector": "s2", "private_key": str((tmp_path / "s2.lists.example.org.key").resolve())}
    assert relist(["keys", "rotate", "-c", str(conf), "--list", "dev@lists.example.org",
                   "--algorithm", "ed25519", "--overlap", "3"]) == 2
    assert "--overlap applies to the RSA key" in capsys.readouterr().err
    assert relist(["keys", "rotate", "-c", str(conf), "--list", "dev@lists.example.org",
                   "--algorithm", "ed25519"]) == 0
    settings = _printed_settings(capsys.readouterr().out)
    assert set(settings) == {"ed25519_selector", "ed25519_private_key"}
    assert read_private_key(settings["ed25519_private_key"]).kind == "ed25519"


def _rotated_conf(tmp_path):
    """A list in its overlap: new key r2 (current), previous key r1."""
    new_key, old_key = generate("rsa", 1024), generate("rsa", 1024)
    new = write_private_key(tmp_path / "r2.key", new_key)
    old = write_private_key(tmp_path / "r1.key", old_key)
    conf = _conf(tmp_path, {"selector": "r2", "private_key": new, "previous_selector": "r1",
                            "previous_private_key": old, "rotation_overlap_until": "2030-01-01T00:00:00Z"})
    return conf, new_key, old_key


def test_show_lists_the_previous_key(relist, tmp_path, capsys):
    conf, new_key, old_key = _rotated_conf(tmp_path)
    assert relist(["keys", "show", "-c", str(conf)]) == 0
    out = capsys.readouterr().out
    assert _records(out) == {"r2._domainkey.lists.example.org": dns_record(new_key),
                             "r1._domainkey.lists.example.org": dns_record(old_key)}
    assert "(previous key, signs until 2030-01-01T00:00:00Z)" in out


def test_keys_test_reports_unpublished_new_key_and_the_previous_one(relist, tmp_path, capsys):
    conf, new_key, old_key = _rotated_conf(tmp_path)
    with DNSServer({"r1._domainkey.lists.example.org": dns_record(old_key)}) as server:
        ns = f"127.0.0.1:{server.port}"
        rc = relist(["keys", "test", "-c", str(conf), "--nameserver", ns])
        lines = [ln.split("\t") for ln in capsys.readouterr().out.splitlines()]
        assert rc == 1
        assert {ln[0]: ln[2] for ln in lines} == {"r2._domainkey.lists.example.org": "not published",
                                                 "r1._domainkey.lists.example.org": "ok"}
        detail = {ln[0]: ln[3] for ln in lines}
        assert (detail["r1._domainkey.lists.example.org"]
                .endswith("previous key, signs until 2030-01-01T00:00:00Z"))
        assert "previous" not in detail["r2._domainkey.lists.example.org"]
        assert {"r1._domainkey.lists.example.org", "r2._domainkey.lists.example.org"} <= set(server.queries)
        # once the new record is published, both are ok
        server.set("r2._domainkey.lists.example.org", dns_record(new_key))
        assert relist(["keys", "test", "-c", str(conf), "--nameserver", ns]) == 0
        assert [ln.split("\t")[2] for ln in capsys.readouterr().out.splitlines()] == ["ok", "ok"]


# -- through the relay ---------------------------------------------------------------------------

@pytest.mark.parametrize("overlap", [True, False], ids=["during", "after"])
def test_relay_signs_with_both_keys_during_overlap(relist_factory, sink, dns_server, tmp_path, overlap):
    new_key, old_key = generate("rsa", 1024), generate("rsa", 1024)
    new = write_private_key(tmp_path / "r2.key", new_key)
    old = write_private_key(tmp_path / "r1.key", old_key)
    until = datetime.now(timezone.utc) + (timedelta(days=7) if overlap else -timedelta(days=1))
    srv = relist_factory({"lists": {"dev@lists.example.org": {
        "selector": "r2", "private_key": str(new), "previous_selector": "r1",
        "previous_private_key": str(old), "rotation_overlap_until": until}}})
    txt = {"r2._domainkey.lists.example.org": dns_record(new_key),
           "r1._domainkey.lists.example.org": dns_record(old_key)}
    with client(srv.port) as c:
        c.sendmail("dev-bounces@lists.example.org", ["m@example.com"], signed_post())
    out = sink.messages[0].data
    mine = [f for f in RawMessage.parse(out).get_all("dkim-signature") if b"d=lists.example.org" in f.raw]
    selectors = [re.search(rb"\bs=([a-z0-9]+)", f.raw).group(1).decode() for f in mine]
    assert selectors == (["r2", "r1"] if overlap else ["r2"])
    for idx in range(len(mine)):
        assert _dkimpy(out, idx, txt)
    # without the old record, the r1 signature fails: it really is signed by the old key
    if overlap:
        assert not _dkimpy(out, 1, {**txt, "r1._domainkey.lists.example.org": dns_record(new_key)})
