"""Configuration: the shipped file is valid and documents every key; errors name keys."""

from __future__ import annotations

import re
import tomllib

import pytest

from relist.cli import main
from relist.config import INGRESS_SCHEMA, LIST_SCHEMA, SCHEMA, ConfigError, load, parse
from tests.helpers import ROOT

CONF = ROOT / "conf" / "relist.toml"


def test_shipped_config_is_valid():
    cfg = load(CONF)
    assert cfg.server["listen"] == ("127.0.0.1", 10026)
    assert cfg.upstream["port"] == 10025
    assert cfg.relay.defaults.mode == "resign"


def test_shipped_config_lists_every_key_with_its_default():
    data = tomllib.loads(CONF.read_text())
    for section, keys in SCHEMA.items():
        for name, key in keys.items():
            assert name in data[section], f"[{section}] {name} missing from conf/relist.toml"
            assert data[section][name] == key.default, f"[{section}] {name}: shown value is not the default"
    for name, key in LIST_SCHEMA.items():
        assert data["list_defaults"].get(name) == key.default, f"[list_defaults] {name}"


def test_shipped_config_shows_the_ingress_section_commented_out_with_its_defaults():
    # Present = enabled, so the shipped file shows [ingress] commented out: uncommented,
    # it must list every key with its default and be valid.
    text = CONF.read_text()
    assert "ingress" not in tomllib.loads(text)
    block = re.search(r"^# \[ingress\]\n((?:#.*\n)+)", text, re.M)
    assert block, "conf/relist.toml has no commented-out [ingress] section"
    keys = "\n".join(line[2:] for line in block.group(1).splitlines()
                     if re.match(r"^# [a-z_0-9]+ = ", line))
    data = tomllib.loads(keys)
    for name, key in INGRESS_SCHEMA.items():
        assert name in data, f"[ingress] {name} missing from conf/relist.toml"
        assert data[name] == key.default, f"[ingress] {name}: shown value is not the default"
    assert set(data) == set(INGRESS_SCHEMA)
    assert parse({"ingress": data}).ingress == parse({"ingress": {}}).ingress


def test_configuration_reference_lists_every_ingress_key():
    row = next(line for line in (ROOT / "docs" / "configuration.md").read_text().splitlines()
               if line.startswith("| `[ingress]`"))
    for name in INGRESS_SCHEMA:
        assert f"`{name}`" in row


def test_every_key_has_a_comment():
    lines = CONF.read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^([a-z_0-9]+) = ", line)
        if m:
            # Either commented directly, or grouped under the comment of the key above
            # (host/port).
            above = lines[i - 1]
            assert above.startswith("#") or re.match(r"^[a-z_0-9]+ = ", above), f"{m.group(1)} has no comment"


BAD = [
    ({"server": {"listen": "localhost"}}, "[server] listen = 'localhost'"),
    ({"server": {"listen": "127.0.0.1:99999"}}, "[server] listen"),
    ({"server": {"allowed_clients": ["10.0.0.0/8", "nonsense"]}}, "'nonsense' is not an IP network"),
    ({"server": {"max_message_size": -1}}, "[server] max_message_size = -1"),
    ({"server": {"workers": "2"}}, "[server] workers = '2': expected int"),
    ({"upstream": {"port": True}}, "[upstream] port = True"),
    ({"upstream": {"hots": "x"}}, "[upstream] hots: unknown key"),
    ({"dns": {"nameservers": ["127.0.0.1"]}}, "[dns] nameservers = '127.0.0.1'"),
    ({"storage": {}}, "[storage]: unknown section"),
    ({"lists": {"nolist": {}}}, "must be a list address"),
    ({"lists": {"a@b.org": {"mode": "keep"}}}, "[lists.'a@b.org'] mode = 'keep': must be one of"),
    ({"list_defaults": {"canonicalization": "relaxed/loose"}}, "canonicalization = 'relaxed/loose'"),
    ({"list_defaults": {"reply_to": "somewhere"}}, "[list_defaults] reply_to = 'somewhere'"),
]


@pytest.mark.parametrize("data,message", BAD, ids=[m[:40] for _, m in BAD])
def test_errors_name_the_key_and_value(data, message):
    with pytest.raises(ConfigError) as err:
        parse(data)
    assert message in str(err.value)


def test_list_section_overrides_defaults_only_where_set():
    cfg = parse({"list_defaults": {"footer": "F", "mode": "auto"},
                 "lists": {"A@B.org": {"mode": "preserve"}}})
    lp = cfg.relay.list_for_address("a@b.org")
    assert (lp.footer, lp.mode, lp.configured) == ("F", "preserve", True)
    other = cfg.relay.list_for_address("other@b.org")
    assert (other.footer, other.mode, other.configured) == ("F", "auto", False)


def test_relist_config_environment_variable(tmp_path, monkeypatch):
    path = tmp_path / "r.toml"
    path.write_text('[upstream]\nport = 2525\n')
    monkeypatch.setenv("RELIST_CONFIG", str(path))
    assert load().upstream["port"] == 2525


def test_cli_reports_config_errors_with_exit_2(tmp_path, capsys):
    path = tmp_path / "r.toml"
    path.write_text('[server]\nlisten = "nowhere"\n')
    assert main(["serve", "-c", str(path)]) == 2
    assert "[server] listen = 'nowhere'" in capsys.readouterr().err
    assert main(["serve", "-c", str(tmp_path / "missing.toml")]) == 2


@pytest.mark.parametrize("name, why", [
    ("Received", "trace field"),
    ("return-path:", "trace field"),
    ("FROM", "required"),
    ("DKIM-Signature", "`strip`"),
    ("ARC-Seal", "breaks the chain"),
    ("Sender", "add_sender"),
    ("List-Unsubscribe", 'list_headers = "replace"'),
    ("X-Original-From", "DMARC mitigation"),
])
def test_remove_headers_refuses_fields_relist_must_keep_or_writes(name, why):
    with pytest.raises(ConfigError) as err:
        parse({"lists": {"dev@lists.example.org": {"remove_headers": ["X-Originating-IP", name]}}})
    assert "remove_headers = " in str(err.value) and repr(name) in str(err.value) and why in str(err.value)


def test_remove_headers_accepts_other_fields():
    cfg = parse({"list_defaults": {"remove_headers": ["X-Originating-IP", "Authentication-Results"]}})
    assert cfg.relay.defaults.remove_headers == ("X-Originating-IP", "Authentication-Results")


# -- what relist adds, and the MTA's message_size_limit (docs/deployment.md) -------------

def _added_by_default_config(raw: bytes, mail_from: str, hostname: str, zone_extra=None):
    """Bytes relist adds to ``raw`` in the default list settings, signing with both keys
    (RSA-2048 and Ed25519) and sealing ARC, as ``relist serve`` would."""
    import json as _json
    from relist.core import pipeline
    from relist.core.model import Context, Envelope
    from relist.core.policy import ListPolicy, RelayPolicy
    from tests import test_golden as golden
    from tests.modes_support import facts_for
    keys = dict(selector=golden.RSA_SELECTOR, private_key=f"golden-keys/{golden.RSA_FILE}",
                ed25519_selector=golden.ED_SELECTOR, ed25519_private_key=f"golden-keys/{golden.ED_FILE}")
    lists = tuple(ListPolicy(address=a, configured=True, **keys)
                  for a in sorted(_json.loads((golden.CORPUS / "lists.json").read_text())))
    pol = RelayPolicy(hostname=hostname, authserv_id=hostname, lists=lists)
    zone = {**golden.zone(), **(zone_extra or {})}
    ctx = Context(Envelope(mail_from, ("m01@members.example",), (), "127.0.0.1", "mailman.example.org"),
                  pol, golden.NOW, "7QH2K9D3MXBC", facts_for(raw, pol, zone), keys=golden.list_keys())
    out = pipeline.process(raw, ctx)
    assert out.message is not None and any(n.step == "arc-seal" and n.action == "applied"
                                           for n in out.record.steps)
    return len(out.message) - len(raw)


HOST = "mail.lists.example.org"
LONG_HOST = ".".join(["h" * 63] * 3) + ".example"          # 199 characters


def test_relist_adds_a_few_kilobytes_to_mailmans_messages():
    from tests.test_golden import corpus
    txs = corpus()
    if not txs:
        pytest.skip("fixtures/mailman not present")
    added = [_added_by_default_config(tx.data, tx.mail_from, HOST) for tx in txs.values()]
    assert 3300 <= min(added) and max(added) <= 4300          # "3.4-4.3 KB" (relist.config)


def test_mta_size_margin_covers_the_worst_post():
    """The most relist adds in the default configuration: a post with 10 poster
    signatures (max_signatures: relist verifies and reports each) whose d= and s= are as
    long as DNS allows, none of Mailman's List-* fields, and a long hostname."""
    import re as _re
    from relist.config import MTA_SIZE_MARGIN
    from relist.core.message import RawMessage
    from tests.test_golden import corpus
    txs = corpus()
    if not txs:
        pytest.skip("fixtures/mailman not present")
    tx = txs["plain-19-dual-signature/out-02"]
    msg = RawMessage.parse(tx.data)
    sig = [f.raw for f in msg.fields if f.name == "dkim-signature"][1]
    domain = ".".join(["d" * 60] * 3) + ".example"
    extra = b"".join(
        _re.sub(rb"d=[a-z.]+;", b"d=" + domain.encode() + b";",
                _re.sub(rb"s=[a-z0-9]+;", b"s=s%02d" % i + b"x" * 47 + b";", sig, count=1), count=1)
        for i in range(8))
    fields = [f.raw for f in msg.fields if not f.name.startswith("list-") or f.name == "list-id"]
    raw = extra + b"".join(fields) + msg.separator + msg.body
    worst = _added_by_default_config(raw, tx.mail_from, LONG_HOST)
    assert 10_000 < worst <= 13_000                          # "about 12 KB" (relist.config)
    assert MTA_SIZE_MARGIN >= 4 * worst


def test_size_margin_is_documented():
    from relist.config import MTA_SIZE_MARGIN
    deployment = (ROOT / "docs" / "deployment.md").read_text()
    default = SCHEMA["server"]["max_message_size"].default
    assert MTA_SIZE_MARGIN == 64 * 1024 and "max_message_size` + 64 KiB" in deployment
    assert f"message_size_limit = {default + MTA_SIZE_MARGIN}" in deployment
    assert "64 KiB above this: 26279936" in CONF.read_text()
