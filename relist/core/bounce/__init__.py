"""Bounces: which deliveries of a list's posts failed, and whether for authentication.

Issue 13.  A strict poster domain (DMARC p=reject) gets list mail rejected at big
receivers; Mailman counts those rejections against the members and disables them.
relist sees every bounce on its ingress leg (mail to ``LIST-bounces@``, VERP
``LIST-bounces+member=domain@`` and Mailman's ``LIST-bounces+token@``) and has the
record of the post each one is about.  This package is the pure part: no IO, frozen
values, one module per concern:

* ``address``: is an envelope recipient a list's bounce address (``recognise``);
* ``parse``: the failed recipients of a bounce and the returned header (``parse``);
* ``returned``: the returned header's Message-ID, relist id, From domain, List-Id;
* ``rules`` and ``classify``: why a delivery failed (``classify``), from a table of
  published rejection texts.

Typical use, on the ingress leg::

    where = recognise(envelope_rcpt, list_addresses)
    if where is not None:
        report = parse(raw)
        for r in report.recipients:
            why = classify(r.status, r.diagnostic)
            if why.cause in AUTHENTICATION: ...
"""

from __future__ import annotations

from relist.core.bounce.address import BounceAddress, recognise
from relist.core.bounce.classify import Classification, classify
from relist.core.bounce.dsn import MAX_INPUT, FailedRecipient, Report, parse
from relist.core.bounce.returned import ReturnedHeaders
from relist.core.bounce.rules import AUTHENTICATION, RULES, Cause, Rule

__all__ = [
    "AUTHENTICATION",
    "MAX_INPUT",
    "RULES",
    "BounceAddress",
    "Cause",
    "Classification",
    "FailedRecipient",
    "Report",
    "ReturnedHeaders",
    "Rule",
    "classify",
    "parse",
    "recognise",
]
