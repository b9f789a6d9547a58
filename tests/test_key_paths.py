"""Key files in the configuration (issue 11, item 9).

* A relative key file path is relative to the configuration file's directory, not to
  the working directory relist happens to be started in.
* A key of the other algorithm in a key setting (an Ed25519 key in ``private_key``,
  the RSA slot that signs rsa-sha256 and the ARC seal; an RSA key in
  ``ed25519_private_key``) stops relist at start-up, naming the section, the setting
  and the file.
"""

from __future__ import annotations

import logging

import pytest

import relist.cli as cli
from relist.config import load, parse
from relist.edge.key_files import KeyFileError, generate, load_configured_keys, write_private_key

LIST = "dev@lists.example.org"


@pytest.fixture
def keydir(tmp_path):
    d = tmp_path / "etc" / "keys"
    d.mkdir(parents=True)
    write_private_key(d / "rsa.key", generate("rsa", 1024))
    write_private_key(d / "rsa-old.key", generate("rsa", 1024))
    write_private_key(d / "ed.key", generate("ed25519"))
    return d


def write_conf(path, list_keys: dict, defaults: dict | None = None):
    lines = []
    if defaults:
        lines += ["[list_defaults]"] + [f'{k} = "{v}"' for k, v in defaults.items()]
    lines += [f'[lists."{LIST}"]'] + [f'{k} = "{v}"' for k, v in list_keys.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


SIGNING = {"selector": "r1", "private_key": "keys/rsa.key",
           "ed25519_selector": "e1", "ed25519_private_key": "keys/ed.key"}
ROTATION = {"previous_selector": "r0", "previous_private_key": "keys/rsa-old.key",
            "rotation_overlap_until": "2030-01-01"}


# -- relative paths ---------------------------------------------------------------

def test_relative_key_paths_are_relative_to_the_config_file(keydir, tmp_path, monkeypatch):
    conf = write_conf(tmp_path / "etc" / "relist.toml", {**SIGNING, **ROTATION})
    elsewhere = tmp_path / "run"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load(conf)
    lp = cfg.relay.list_for_address(LIST)
    assert lp.private_key == str(keydir / "rsa.key")
    assert lp.ed25519_private_key == str(keydir / "ed.key")
    assert lp.previous_private_key == str(keydir / "rsa-old.key")
    keys = load_configured_keys(cfg.relay)
    assert sorted(keys) == sorted(str(keydir / n) for n in ("rsa.key", "ed.key", "rsa-old.key"))


def test_a_relative_config_path_and_list_defaults(keydir, tmp_path, monkeypatch):
    write_conf(tmp_path / "etc" / "relist.toml", {"selector": "r1"}, defaults={"private_key": "keys/rsa.key"})
    monkeypatch.chdir(tmp_path)
    cfg = load("etc/relist.toml")
    assert cfg.relay.defaults.private_key == str(keydir / "rsa.key")
    assert cfg.relay.list_for_address(LIST).private_key == str(keydir / "rsa.key")
    monkeypatch.chdir(keydir)            # a later chdir changes nothing
    assert load_configured_keys(cfg.relay)


def test_absolute_paths_and_parse_without_a_file(keydir, tmp_path):
    absolute = str(keydir / "rsa.key")
    conf = write_conf(tmp_path / "elsewhere.toml", {"selector": "r1", "private_key": absolute})
    assert load(conf).relay.list_for_address(LIST).private_key == absolute
    # parse() of a document with no file behind it: paths as written
    cfg = parse({"lists": {LIST: {"selector": "r1", "private_key": "keys/rsa.key"}}})
    assert cfg.relay.list_for_address(LIST).private_key == "keys/rsa.key"


def test_keys_show_finds_relative_keys_from_another_directory(keydir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("keys",))
    conf = write_conf(tmp_path / "etc" / "relist.toml", SIGNING)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["keys", "show", "-c", str(conf)]) == 0
    out = capsys.readouterr().out
    assert f"rsa 1024-bit key {keydir / 'rsa.key'}" in out
    assert f"ed25519 256-bit key {keydir / 'ed.key'}" in out


# -- a key in the other algorithm's setting ---------------------------------------------

@pytest.mark.parametrize("settings, section, setting, file, holds", [
    ({"selector": "r1", "private_key": "keys/ed.key"}, f"lists.{LIST!r}",
     "private_key", "ed.key", "an Ed25519 key"),
    ({"ed25519_selector": "e1", "ed25519_private_key": "keys/rsa.key"}, f"lists.{LIST!r}",
     "ed25519_private_key", "rsa.key", "an RSA key"),
    ({**SIGNING, **ROTATION, "previous_private_key": "keys/ed.key"}, f"lists.{LIST!r}",
     "previous_private_key", "ed.key", "an Ed25519 key"),
], ids=["ed25519-as-rsa", "rsa-as-ed25519", "ed25519-as-previous"])
def test_a_key_in_the_wrong_setting_stops_start_up(keydir, tmp_path, settings, section, setting, file, holds):
    cfg = load(write_conf(tmp_path / "etc" / "relist.toml", settings))
    with pytest.raises(KeyFileError) as err:
        load_configured_keys(cfg.relay)
    text = str(err.value)
    assert text.startswith(f"[{section}] {setting} = '{keydir / file}': this file holds {holds}, "
                           f"but {setting} takes an"), text


def test_the_wrong_setting_in_list_defaults_is_named_there(keydir, tmp_path):
    cfg = load(write_conf(tmp_path / "etc" / "relist.toml", {"selector": "r1"},
                          defaults={"private_key": "keys/ed.key"}))
    with pytest.raises(KeyFileError, match=r"^\[list_defaults\] private_key = "):
        load_configured_keys(cfg.relay)


@pytest.fixture
def restore_logging():
    """``relist serve`` sets up the "relist" logger for itself: put it back."""
    logger = logging.getLogger("relist")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


def test_serve_refuses_an_ed25519_key_as_the_rsa_key(keydir, tmp_path, capsys, restore_logging):
    conf = write_conf(tmp_path / "etc" / "relist.toml", {"selector": "r1", "private_key": "keys/ed.key"})
    assert cli.main(["serve", "-c", str(conf)]) == 2
    err = capsys.readouterr().err
    assert (f"relist: [lists.{LIST!r}] private_key = '{keydir / 'ed.key'}': this file holds an Ed25519 key"
            in err)
    assert "ed25519_private_key" in err            # says where it belongs


def test_keys_show_and_test_name_the_wrong_setting(keydir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("keys",))
    conf = str(write_conf(tmp_path / "etc" / "relist.toml",
                          {"ed25519_selector": "e1", "ed25519_private_key": "keys/rsa.key"}))
    assert cli.main(["keys", "show", "-c", conf]) == 2
    assert "ed25519_private_key = " in capsys.readouterr().err
    assert cli.main(["keys", "test", "-c", conf, "--nameserver", "127.0.0.1:9"]) == 2
    out = capsys.readouterr().out
    assert "\twrong setting\t" in out and "this file holds an RSA key" in out
