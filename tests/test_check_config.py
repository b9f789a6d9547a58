"""``relist check-config``: the configuration, the key files, each selector's DNS record
against its key, the MTA's EHLO and SIZE, the ingress target's LHLO; one verdict per
line and exit 0 (all ok) / 1 (warnings, failed network check) / 2 (configuration)."""

from __future__ import annotations

import os
import socket

import pytest

import relist.cli as cli
from relist.cli.check_config import size_finding
from relist.config import MTA_SIZE_MARGIN
from relist.core.sign import dns_record
from relist.edge.key_files import generate, load_configured_keys, read_configured_keys, write_private_key
from relist.config import load
from relist.edge.key_files import KeyFileError
from relist.sandbox.sink import Sink

LIST = "dev@lists.example.org"
MAX = 25 * 1024 * 1024


@pytest.fixture
def relist(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("check_config",))
    return cli.main


@pytest.fixture
def mta():
    s = Sink(size=MAX + MTA_SIZE_MARGIN).start()
    yield s
    s.stop()


@pytest.fixture
def mailman():
    s = Sink(lmtp=True).start()
    yield s
    s.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup(tmp_path, dns_server, mta_port, *, ingress_port=None, publish=True, extra=""):
    key = generate("rsa", 2048)
    path = write_private_key(tmp_path / "s1.lists.example.org.key", key)
    if publish:
        dns_server.set("s1._domainkey.lists.example.org", [dns_record(key)])
    text = (f'[upstream]\nport = {mta_port}\nconnect_timeout = 2\ntimeout = 2\n'
            f'[dns]\nnameservers = ["{dns_server.nameserver}"]\ntimeout = 1\n'
            f'[store]\npath = "{tmp_path / "relist.db"}"\n'
            f'[list_defaults]\nmode = "preserve"\n'      # no key-less defaults warning
            f'[lists."{LIST}"]\nselector = "s1"\nprivate_key = "{path}"\n' + extra)
    if ingress_port is not None:
        text += f'[ingress]\ndeliver_to = "lmtp:127.0.0.1:{ingress_port}"\n'
    conf = tmp_path / "relist.toml"
    conf.write_text(text)
    return str(conf), path


def lines(out: str) -> dict[str, list[str]]:
    by = {}
    for line in out.splitlines():
        verdict, _, rest = line.partition(" ")
        assert verdict in ("ok", "warning", "error"), line
        by.setdefault(verdict, []).append(rest.strip())
    return by


def test_all_ok_exits_0(relist, tmp_path, dns_server, mta, mailman, capsys):
    conf, path = setup(tmp_path, dns_server, mta.port, ingress_port=mailman.port)
    assert relist(["check-config", "-c", conf]) == 0
    found = lines(capsys.readouterr().out)
    assert set(found) == {"ok"}
    text = "\n".join(found["ok"])
    assert f"configuration: {conf}: valid" in text
    assert f"key file: {path}: rsa 2048-bit" in text
    assert "dns: s1._domainkey.lists.example.org (rsa): ok" in text
    assert f"upstream: 127.0.0.1:{mta.port} answers EHLO" in text
    assert f"upstream size: SIZE {MAX + MTA_SIZE_MARGIN} >= {MAX + MTA_SIZE_MARGIN}" in text
    assert f"ingress deliver_to (lmtp): 127.0.0.1:{mailman.port} answers LHLO" in text
    assert any(c.startswith("LHLO") for c in mailman.commands) or mailman.connections == 1


def test_unpublished_key_and_unreachable_ingress_exit_1(relist, tmp_path, dns_server, mta, capsys):
    conf, _ = setup(tmp_path, dns_server, mta.port, ingress_port=free_port(), publish=False)
    assert relist(["check-config", "-c", conf]) == 1
    found = lines(capsys.readouterr().out)
    errors = "\n".join(found["error"])
    assert "dns: s1._domainkey.lists.example.org (rsa): not published" in errors
    assert "ingress deliver_to (lmtp): 127.0.0.1:" in errors and "cannot connect" in errors


def test_mismatched_record_is_found(relist, tmp_path, dns_server, mta, capsys):
    conf, _ = setup(tmp_path, dns_server, mta.port)
    dns_server.set("s1._domainkey.lists.example.org", [dns_record(generate("rsa", 1024))])
    assert relist(["check-config", "-c", conf]) == 1
    assert "(rsa): mismatch" in "\n".join(lines(capsys.readouterr().out)["error"])


def test_small_mta_size_is_a_warning(relist, tmp_path, dns_server, capsys):
    small = Sink(size=MAX).start()
    try:
        conf, _ = setup(tmp_path, dns_server, small.port)
        assert relist(["check-config", "-c", conf]) == 1
    finally:
        small.stop()
    warnings = "\n".join(lines(capsys.readouterr().out)["warning"])
    assert f"upstream size: SIZE {MAX} is less than" in warnings
    assert f"message_size_limit = {MAX + MTA_SIZE_MARGIN}" in warnings


def test_size_comparison():
    assert size_finding("s", None, MAX).verdict == "ok"
    assert size_finding("s", 0, MAX).verdict == "ok"
    assert size_finding("s", MAX + MTA_SIZE_MARGIN, MAX).verdict == "ok"
    low = size_finding("s", MAX + MTA_SIZE_MARGIN - 1, MAX)
    assert (low.verdict, low.status) == ("warning", 1)


def test_configuration_errors_exit_2(relist, tmp_path, dns_server, mta, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nlisten = "localhost"\n')
    assert relist(["check-config", "-c", str(bad)]) == 2
    out = capsys.readouterr().out
    assert out.startswith("error   configuration: [server] listen = 'localhost'")
    # A key file others can read, a list that cannot sign: both reported, exit 2.
    conf, path = setup(tmp_path, dns_server, mta.port,
                       extra='[lists."other@lists.example.org"]\nmode = "resign"\n')
    os.chmod(path, 0o644)
    assert relist(["check-config", "-c", conf]) == 2
    errors = "\n".join(lines(capsys.readouterr().out)["error"])
    assert "key file: " in errors and "accessible by group or others" in errors
    assert ("signing: [lists.'other@lists.example.org'] mode = 'resign' but the list has no signing key"
            in errors)
    assert "dns:" not in errors      # a key file that failed is not tested against DNS


def test_offline_checks_only_what_serve_checks(relist, tmp_path, dns_server, capsys):
    conf, _ = setup(tmp_path, dns_server, free_port(), publish=False)
    assert relist(["check-config", "-c", conf, "--offline"]) == 0
    out = capsys.readouterr().out
    assert "dns:" not in out and "upstream" not in out


def test_serve_and_check_config_share_the_key_check(tmp_path, dns_server):
    conf, path = setup(tmp_path, dns_server, 25)
    cfg = load(conf)
    keys, problems = read_configured_keys(cfg.relay)
    assert problems == [] and load_configured_keys(cfg.relay).keys() == keys.keys()
    os.chmod(path, 0o640)
    keys, problems = read_configured_keys(cfg.relay)
    assert keys == {} and [p.key_path for p in problems] == [str(path)]
    with pytest.raises(KeyFileError) as err:
        load_configured_keys(cfg.relay)
    assert str(err.value) == str(problems[0])
