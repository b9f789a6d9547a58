"""Builders the mode, repair and attribution tests share: keys generated here, a post
really signed with dkimpy, a relay policy, the DNS facts for it, a pipeline run."""

from __future__ import annotations

import base64
import subprocess
from datetime import datetime, timezone

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from relist.core import pipeline
from relist.core.verify import verify_message
from relist.core.facts import Answer, Facts, Status
from relist.core.message import RawMessage
from relist.core.model import Context, Envelope, Work
from relist.core.policy import ListPolicy, RelayPolicy
from relist.sandbox.dnsserver import DNSServer
from tests.helpers import PERL


def now() -> datetime:
    """The clock, to the second.  dkimpy signs with the clock (t=), so the time a test
    verifies at must be read when the test runs: a time read at import would be more
    than CLOCK_SKEW (300 s) behind a signature made late in a slow session, and the
    signature would verify as "timestamp in the future"."""
    return datetime.now(timezone.utc).replace(microsecond=0)


NOW = now()   # one fixed time, for tests that sign nothing with dkimpy
LIST = "ant@lists.example.org"
H = ("from", "to", "subject", "date", "message-id")
TRANSFORMS = ("remove-headers", "subject-prefix", "footer", "list-headers", "sender", "reply-to")


def _key() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


KEYS = {"s1": _key(), "s2": _key(), "other": _key()}
DNS = {
    "s1._domainkey.poster.example": KEYS["s1"][1],
    "s2._domainkey.poster.example": KEYS["s2"][1],
    "s1._domainkey.other.example": KEYS["other"][1],
    "_dmarc.poster.example": "v=DMARC1; p=reject",
}

POST = (b"From: Alice Poster <alice@poster.example>\r\n"
        b"To: ant@lists.example.org\r\n"
        b"Subject: hello list\r\n"
        b"Date: Wed, 01 May 2024 10:00:00 +0000\r\n"
        b"Message-ID: <p1@poster.example>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n"
        b"X-Junk: remove me\r\n"
        b"\r\n"
        b"Hello list.\r\n")

DECORATE = dict(footer="-- \nant list\n", subject_prefix="[ant] ", reply_to="list",
                remove_headers=("X-Junk",))


def sign(data: bytes, selector: str = "s1", domain: str = "poster.example", headers=H,
         canon=(b"relaxed", b"relaxed"), length: bool = False, key: str | None = None) -> bytes:
    """``data`` with a DKIM-Signature by dkimpy prepended."""
    return dkim.sign(data, selector.encode(), domain.encode(), KEYS[key or selector][0],
                     canonicalize=canon, include_headers=[h.encode() for h in headers],
                     length=length) + data


def relay_policy(**settings) -> RelayPolicy:
    lp = ListPolicy(address=LIST, configured=True, **settings)
    return RelayPolicy(hostname="relist.test", authserv_id="relist.test", lists=(lp,))


def facts_for(raw: bytes, pol: RelayPolicy, dns: dict) -> Facts:
    """What the edge would resolve: ``plan`` until nothing new, from ``dns`` (absent
    names NXDOMAIN)."""
    facts = Facts()
    msg = RawMessage.parse(raw)
    for _ in range(20):
        wanted = pipeline.plan(msg, pol, facts)
        if not wanted:
            return facts
        found = {}
        for q in wanted:
            value = dns.get(q.qname)
            found[q] = (Answer(Status.FOUND, (value.encode(),)) if value is not None
                        else Answer(Status.ABSENT, (), "NXDOMAIN"))
        facts = facts.merged(Facts(found))
    raise AssertionError("plan did not settle")


def context(raw: bytes, pol: RelayPolicy, dns=DNS, ingress=(), mail_from="ant-bounces@lists.example.org",
            extra_facts: bytes | None = None) -> Context:
    facts = facts_for(raw, pol, dns)
    if extra_facts is not None:       # the ingress copy's names too (the edge asks for both)
        facts = facts.merged(facts_for(extra_facts, pol, dns))
    return Context(Envelope(mail_from, ("m@example.com",)), pol, now(), "r1", facts, ingress=ingress)


def run(raw: bytes, pol: RelayPolicy, dns=DNS, steps=pipeline.STEPS, **ctx_args) -> tuple[Work, Context]:
    ctx = context(raw, pol, dns, **ctx_args)
    work = Work(RawMessage.parse(raw))
    for step in steps:
        work = step.apply(work, ctx)
    return work, ctx


def note(work: Work, step: str):
    found = [n for n in work.notes if n.step == step]
    assert len(found) == 1, (step, work.notes)
    return found[0]


def poster_results(out: bytes, ctx: Context):
    """relist's verifier over ``out``: the results of the poster's signatures."""
    verdict = verify_message(RawMessage.parse(out), ctx.facts, ctx.now)
    return [s for s in verdict.dkim if s.domain in ("poster.example", "other.example")]


def mail_dkim(message: bytes, tmp_path, dns=DNS) -> str:
    """Perl Mail::DKIM's verdict on ``message``, DNS from a loopback server."""
    script, msg = tmp_path / "verify.pl", tmp_path / "msg.eml"
    script.write_text(PERL)
    msg.write_bytes(message)
    with DNSServer(dict(dns)) as server:
        out = subprocess.run(["perl", str(script), "dkim", str(server.port), str(msg)],
                             capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout.decode()


# -- preserve ----------------------------------------------------------------------------
