"""The sign step's i= and z= options (signing_identity, copy_headers), from config to a
signature that relist's verifier and dkimpy accept."""

from __future__ import annotations

import dkim
import pytest

from relist.config import ConfigError, parse
from relist.core.dkim.tags import parse_tags
from relist.core.message import RawMessage
from tests.test_step_sign import context, dnsfunc, list_sigs, policy, run, signed_post, verify_out


def list_signature_tags(out: bytes) -> list[dict]:
    fields = RawMessage.parse(out).get_all("dkim-signature")
    tags = [parse_tags(f.text()) for f in fields]
    return [t for t in tags if t["d"] == "lists.example.org"]


@pytest.mark.parametrize("identity", ["@lists.example.org", "bounces@news.lists.example.org"])
def test_identity_and_copies_verify(identity):
    relay = policy(signing_identity=identity, copy_headers=True)
    raw = signed_post()
    out = run(raw, context(raw, relay)).message
    tags = list_signature_tags(out)
    assert [t["i"] for t in tags] == [identity, identity]
    assert all("z" in t and "From:" in t["z"] for t in tags)
    assert [str(s.result) for s in list_sigs(verify_out(out, relay))] == ["pass", "pass"]
    assert dkim.verify(out, dnsfunc=dnsfunc)


def test_default_identity_is_the_signing_domain_and_no_copies():
    tags = list_signature_tags(run(signed_post()).message)
    assert [t["i"] for t in tags] == ["@lists.example.org"] * 2
    assert not any("z" in t for t in tags)


@pytest.mark.parametrize("identity", ["list@elsewhere.example", "no-at-sign", "a b@lists.example.org",
                                      "x@example.org"])
def test_identity_outside_the_signing_domain_is_refused(identity):
    with pytest.raises(ConfigError) as err:
        parse({"lists": {"dev@lists.example.org": {"signing_identity": identity}}})
    assert "signing_identity" in str(err.value) and "RFC 6376 §3.5" in str(err.value)


def test_identity_follows_signing_domain():
    cfg = parse({"lists": {"dev@lists.example.org": {"signing_domain": "example.org",
                                                    "signing_identity": "dev@example.org"}}})
    assert cfg.relay.lists[0].signing_identity == "dev@example.org"
