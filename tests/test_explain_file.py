"""``relist explain FILE``: a dry run through the pipeline under a list's configuration,
the policy simulator: DNS from the loopback server, nothing delivered, nothing stored."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from relist.demo import demo_zone, make_list_keys
from relist.sandbox.dnsserver import DNSServer
from tests.explain_store import CORPUS, ROOT

POST = CORPUS / "cases" / "plain-01-plain-text" / "post.eml"   # as the poster's server signed it


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dryrun")
    with DNSServer(demo_zone(CORPUS)) as dns:
        keys = make_list_keys(tmp, dns)
        conf = tmp / "relist.toml"
        signing = (f'selector = "demo-rsa"\nprivate_key = "{keys["rsa"]}"\n'
                   f'ed25519_selector = "demo-ed"\ned25519_private_key = "{keys["ed25519"]}"\n')
        conf.write_text(f'[store]\npath = "{tmp / "never.db"}"\n'
                        f'[dns]\nnameservers = ["{dns.nameserver}"]\ntimeout = 2\n'
                        f'[lists."plain@lists.example.org"]\nmode = "preserve"\n{signing}'
                        f'[lists."decorated@lists.example.org"]\nmode = "resign"\n'
                        f'subject_prefix = "[{{list_name}}] "\n'
                        f'footer = "-- \\n{{list_name}} list\\n"\n{signing}'
                        f'[lists."lost@lists.example.org"]\nmode = "resign"\nselector = "demo-rsa"\n'
                        f'private_key = "{tmp / "not-here.key"}"\n')
        yield {"conf": conf, "tmp": tmp}


def explain(conf, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "relist", "explain", "-c", str(conf), *args],
                          capture_output=True, text=True, cwd=ROOT, check=check, timeout=120)


def steps(doc: dict) -> dict[str, tuple[str, str]]:
    return {s["step"]: (s["action"], s["detail"]) for s in doc["steps"]}


def test_preserve_list_keeps_the_signature(setup):
    doc = json.loads(explain(setup["conf"], str(POST), "--list", "plain@lists.example.org", "--json").stdout)
    assert doc["dry_run"] and doc["transactions"] == [] and doc["bounces"] == [] and doc["relist_ids"] == []
    assert doc["list"] == "plain@lists.example.org" and doc["message_id"] == "<plain-01@poster.example>"
    assert [(a["domain"], a["result"]) for a in doc["arrival"]] == [("poster.example", "pass")]
    assert doc["breakage"] == [{"signature": "poster.example/s1", "broken_by": "survived"}]
    assert steps(doc)["sign"][0] == "applied" and "d=lists.example.org" in steps(doc)["sign"][1]
    assert doc["would_reply"].startswith("relayed") and doc["stand_in_keys"] == []
    assert not (setup["tmp"] / "never.db").exists()   # nothing stored


def test_decorated_list_shows_which_change_breaks_it_and_the_mitigation(setup):
    doc = json.loads(explain(setup["conf"], str(POST), "--list", "decorated@lists.example.org",
                             "--json").stdout)
    assert doc["mode"].startswith("resign")
    assert steps(doc)["subject-prefix"][0] == "applied" and steps(doc)["footer"][0] == "applied"
    assert doc["breakage"] == [{"signature": "poster.example/s1", "broken_by": "subject-prefix"}]
    assert doc["mitigation"]["applied"] and "p=reject" in doc["mitigation"]["detail"]
    text = explain(setup["conf"], str(POST), "--list", "decorated@lists.example.org").stdout
    assert text.startswith("dry run of ") and "broken by relist's step subject-prefix" in text
    assert "relist would answer: relayed" in text and "what relist would do;" in text
    assert not (setup["tmp"] / "never.db").exists()


def test_unreadable_key_is_stood_in_for(setup):
    r = explain(setup["conf"], str(POST), "--list", "lost@lists.example.org")
    assert "signing key(s) not readable here: signed with a stand-in key" in r.stderr
    assert "sign             applied" in r.stdout


def test_file_errors(setup, tmp_path):
    empty = tmp_path / "empty.eml"
    empty.write_bytes(b"")
    r = explain(setup["conf"], str(empty), check=False)
    assert r.returncode == 2 and "empty: nothing to verify" in r.stderr
    r = explain(setup["conf"], str(POST), "--list", "other@lists.example.org", check=False)
    assert r.returncode == 2 and "not a configured list" in r.stderr
    # No --list, and the post's List-Id names no list (it has none): three lists configured.
    r = explain(setup["conf"], str(POST), check=False)
    assert r.returncode == 2 and "--list ADDR" in r.stderr
