"""``relist check FILE``: verify a message file as relist would on arrival.

Prints, per signature, the RFC 8601 result and the precise reason, then ARC and
DMARC.  Exit 0 when every signature passes (or there is none), 1 when any does
not, 2 on a usage, configuration or IO error, or when the input is no message (an
empty file, binary data, no header field).
"""

from __future__ import annotations

import json
import sys

from relist.config import load, parse_hostport
from relist.edge.dns import Resolver
from relist.edge.verifier import check_bytes, unusable

__all__ = ["add_parser"]


def _explain(verdict, out) -> None:
    if not verdict.signatures:
        print("no DKIM or DomainKey signatures", file=out)
    for s in verdict.signatures:
        bits = f", {s.key_bits}-bit key" if s.key_bits else ""
        head = f"{s.kind} d={s.domain or '?'} s={s.selector or '?'} a={s.algorithm or '?'}"
        if s.canonicalization:
            head += f" c={s.canonicalization}"
        print(f"{head}{bits}: {s.result}", file=out)
        print(f"    {s.reason}", file=out)
        if s.body_length is not None:
            print(f"    l={s.body_length}: the signature covers only part of the body", file=out)
    arc = verdict.arc
    print(f"arc: cv={arc.cv}" + (f", oldest pass i={arc.oldest_pass}" if arc.oldest_pass else "")
          + (f" ({arc.reason})" if arc.reason else ""), file=out)
    d = verdict.dmarc
    policy = f" p={d.policy}" if d.policy else ""
    testing = " (t=y: testing)" if d.testing else ""
    print(f"dmarc: {d.result} for {d.domain or '?'}{policy}{testing}" + (f": {d.reason}" if d.reason else ""),
          file=out)


def run(args) -> int:
    cfg = load(args.config)
    nameservers = ([parse_hostport(n, "--nameserver") for n in args.nameserver] if args.nameserver
                   else list(cfg.dns["nameservers"]))
    try:
        raw = sys.stdin.buffer.read() if args.file == "-" else open(args.file, "rb").read()
    except OSError as exc:
        print(f"relist check: {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    problem = unusable(raw)
    if problem:
        name = "standard input" if args.file == "-" else args.file
        print(f"relist check: {name}: {problem}", file=sys.stderr)
        return 2
    verdict = check_bytes(raw, Resolver(nameservers, cfg.dns["timeout"]),
                          max_signatures=cfg.verify["max_signatures"],
                          min_key_bits=cfg.verify["min_key_bits"])
    if args.json:
        json.dump(verdict.check_dict(), sys.stdout, indent=2)
        print()
    else:
        _explain(verdict, sys.stdout)
    return 0 if all(str(s.result) == "pass" for s in verdict.signatures) else 1


def add_parser(sub) -> None:
    p = sub.add_parser("check", help="verify the signatures of a message file and explain each result")
    p.add_argument("file", metavar="FILE", help="message file (RFC 5322), or - for standard input")
    p.add_argument("-c", "--config", help="configuration file ([dns] nameservers, [verify] limits)")
    p.add_argument("--nameserver", action="append", metavar="HOST:PORT",
                   help="DNS server to ask (repeatable; default: the configuration's, else resolv.conf)")
    p.add_argument("--json", action="store_true", help="print JSON: signatures, dmarc, arc")
    p.set_defaults(func=run)
