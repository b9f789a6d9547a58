"""``relist explain ID``: the whole story of one post, in the order it happened.

ID is a relist id (from the log line or relist's Received field), a Message-ID (with
or without the angle brackets), or a message file.  For a stored post: arrival (each
signature, DMARC, ARC), whether the egress copy matched the ingress copy and if not
the first difference, the steps that did something (``--all``: the skipped ones
too), which step broke which signature, the DMARC mitigation, the signatures made,
the MTA's reply per recipient in every transaction of the post, and its bounces.
For a file: a dry run through the pipeline under a list's configuration (``--list``,
else the list its List-Id names): what relist would do to it, with DNS as
configured; nothing is delivered and nothing is stored.  Exit 0; 1 when the ID is
not in the store; 2 on a usage, configuration, file or store error.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime

from relist import core
from relist.edge.verifier import unusable
from relist.cli.report import open_store
from relist.config import load, parse_hostport
from relist.core.message import RawMessage
from relist.core.model import Context, Envelope
from relist.core.report import story
from relist.core.report.story_text import render
from relist.core.steps.identify import list_id_value
from relist.edge import history

__all__ = ["add_parser", "dry_run", "run"]


def _print(doc: dict, as_json: bool) -> None:
    if as_json:
        json.dump(doc, sys.stdout, indent=2, default=str)
        print()
    else:
        sys.stdout.write(render(doc))


def _from_store(args, cfg) -> int:
    reader, problem = open_store(cfg, "explain")
    if reader is None:
        print(problem, file=sys.stderr)
        return 2
    try:
        found_by, txs = history.find_post(reader, args.id, args.list)
        if not txs:
            print(f"relist explain: no transaction with relist id or Message-ID {args.id!r} in the store "
                  f"({cfg.store.get('path') or 'configured'})", file=sys.stderr)
            return 1
        main = story.chosen(txs, args.id.strip().upper())
        arrival = story.arrival_id(txs, main)
        egress = [tx["relist_id"] for tx in txs if not story.is_ingress(tx)]
        doc = story.build(txs, main, signatures=history.signatures_of(reader, arrival),
                          verdict=history.verdict_of(reader, arrival), arrival_from=arrival,
                          bounces=history.bounces_for(reader, egress, main["message_id"],
                                                      main["list_address"]),
                          show_all=args.all, found_by=found_by)
        if main["message_id"]:
            doc["other_lists"] = history.other_lists(reader, main["message_id"], main["list_address"])
    finally:
        close = getattr(reader, "close", None)
        if close:
            close()
    _print(doc, args.json)
    return 0


def _stand_in_keys(relay, lp) -> tuple[dict, list[str]]:
    """The configured signing keys; a generated stand-in for each of list ``lp``'s that
    cannot be read here (an admin's account may not read the relay's keys), so the dry
    run still shows what signing does.  Returns the keys and the paths stood in for."""
    from relist.edge.key_files import generate, read_configured_keys
    keys, _problems = read_configured_keys(relay)
    missing = []
    for setting, algorithm in (("private_key", "rsa"), ("previous_private_key", "rsa"),
                               ("ed25519_private_key", "ed25519")):
        path = getattr(lp, setting, "")
        if path and path not in keys:
            keys[path] = generate(algorithm)
            missing.append(path)
    return keys, missing


def dry_run(raw: bytes, cfg, list_address: str, nameservers, *, name: str = "",
            show_all: bool = False) -> dict:
    """What relist would do to ``raw`` as ``list_address``'s Mailman hands it over."""
    from relist.edge.dns import Resolver
    lp = next(lp for lp in cfg.relay.lists if lp.address == list_address)
    local, _, domain = lp.address.partition("@")
    envelope = Envelope(mail_from=f"{local}-bounces@{domain}", rcpt_tos=("dry-run@relist.invalid",),
                        client_ip="127.0.0.1", client_helo="relist-explain")
    msg = RawMessage.parse(raw)
    resolver = Resolver(nameservers, cfg.dns["timeout"])
    facts = asyncio.run(resolver.settle(lambda f: core.plan(msg, cfg.relay, f)))
    keys, stand_ins = _stand_in_keys(cfg.relay, lp)
    ctx = Context(envelope=envelope, policy=cfg.relay, now=datetime.now(UTC), relist_id="(dry run)",
                  facts=facts, keys=keys)
    outcome = core.process(msg, ctx)
    record = outcome.record
    verdict = record.verdict
    facts_doc = {k: list(v) if isinstance(v, tuple) else v for k, v in record.extra}
    main = {"relist_id": "", "time": "", "message_id": record.message_id, "list_address": record.list_address,
            "steps": [n.as_dict() for n in record.steps], "facts": facts_doc}
    sigs, vdoc = [], None
    if verdict is not None and hasattr(verdict, "signatures"):
        sigs = [{"kind": s.kind, "domain": s.domain, "selector": s.selector, "algorithm": s.algorithm,
                 "key_bits": s.key_bits, "result": str(s.result), "reason": s.reason, "instance": s.instance}
                for s in verdict.signatures]
        for arc_set in verdict.arc.sets:
            sigs += [{"kind": s.kind, "domain": s.domain, "selector": s.selector, "algorithm": s.algorithm,
                      "key_bits": s.key_bits, "result": str(s.result), "reason": s.reason,
                      "instance": s.instance}
                     for s in (arc_set.ams, arc_set.seal) if s is not None]
        d = verdict.dmarc
        vdoc = {"from_domain": verdict.from_domain, "dmarc_result": d.result, "dmarc_policy": d.policy,
                "dmarc_reason": d.reason, "arc_cv": verdict.arc.cv, "arc_reason": verdict.arc.reason}
    doc = story.build([], main, signatures=sigs, verdict=vdoc, arrival_from="", bounces=[], show_all=show_all,
                      found_by="file")
    doc.update(dry_run=True, file=name, would_reply=str(outcome.reply) if outcome.reply else
               "relayed (size " + str(record.size_in) + " -> " + str(record.size_out) + " bytes)",
               stand_in_keys=stand_ins)
    return doc


def _list_for(raw: bytes, cfg, wanted: str | None) -> tuple[str | None, str]:
    configured = [lp.address for lp in cfg.relay.lists]
    if wanted:
        wanted = wanted.lower()
        if wanted in configured:
            return wanted, ""
        return None, f"--list {wanted}: not a configured list ({', '.join(configured) or 'none configured'})"
    text = RawMessage.parse(raw).header_text("list-id")
    lp = cfg.relay.list_for_id(list_id_value(text)) if text and list_id_value(text) else None
    if lp is not None and lp.address in configured:
        return lp.address, ""
    if len(configured) == 1:
        return configured[0], ""
    return None, "name the list to simulate with --list ADDR (the message's List-Id names no configured list)"


def _from_file(args, cfg) -> int:
    try:
        with open(args.id, "rb") as f:
            raw = f.read()
    except OSError as exc:
        print(f"relist explain: {args.id}: {exc.strerror}", file=sys.stderr)
        return 2
    problem = unusable(raw)
    if problem:
        print(f"relist explain: {args.id}: {problem}", file=sys.stderr)
        return 2
    address, problem = _list_for(raw, cfg, args.list)
    if address is None:
        print(f"relist explain: {problem}", file=sys.stderr)
        return 2
    nameservers = ([parse_hostport(n, "--nameserver") for n in args.nameserver] if args.nameserver
                   else list(cfg.dns["nameservers"]))
    doc = dry_run(raw, cfg, address, nameservers, name=args.id, show_all=args.all)
    if doc["stand_in_keys"] and not args.json:
        print(f"relist explain: {len(doc['stand_in_keys'])} signing key(s) not readable here: signed with a "
              "stand-in key (the steps are the same; the signature bytes are not)", file=sys.stderr)
    _print(doc, args.json)
    return 0


def run(args) -> int:
    cfg = load(args.config)
    if os.path.isfile(args.id):
        return _from_file(args, cfg)
    return _from_store(args, cfg)


def add_parser(sub) -> None:
    p = sub.add_parser("explain", help="the story of one post: arrival, steps, breakage, mitigation, "
                                       "replies, bounces (or a dry run of a message file)")
    p.add_argument("id", metavar="ID", help="a relist id, a Message-ID, or a message file (dry run)")
    p.add_argument("-c", "--config", help="configuration file ([store], [lists], [dns])")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--all", action="store_true", help="show the skipped steps too")
    p.add_argument("--list", metavar="ADDR", help="the list: for a file, the one to simulate; for a "
                                                  "Message-ID sent to several lists, which one")
    p.add_argument("--nameserver", action="append", metavar="HOST:PORT",
                   help="for a file: DNS server to ask (default: the configuration's)")
    p.set_defaults(func=run)
