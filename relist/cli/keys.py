"""``relist keys``: generate, show, test and rotate DKIM signing keys (see docs/keys.md).

Output is zone-file text: records as ``S._domainkey.D. IN TXT ( "..." "..." )`` lines,
everything else as ``;`` comments, so it can be pasted into a zone.  Exit codes as for
every command: 0 ok, 1 a negative answer (a key that is not ok), 2 usage/config/IO.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

from relist.config import load, parse_hostport
from relist.core.sign import dns_record, zone_line
from relist.edge.keys import (
    KeyFileError, check_published, configured_keys, generate, lookup_txt, read_private_key,
    write_private_key,
)

__all__ = ["add_parser"]

_SETTINGS = {"rsa": ("selector", "private_key"), "ed25519": ("ed25519_selector", "ed25519_private_key")}


def _hostport(text: str) -> tuple[str, int]:
    from relist.config import ConfigError
    try:
        return parse_hostport(text, "--nameserver")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(sub) -> None:
    p = sub.add_parser("keys", help="generate, show, test and rotate DKIM signing keys")
    ks = p.add_subparsers(dest="keys_command", metavar="ACTION")
    ks.required = True

    g = ks.add_parser("generate", help="write a new private key (mode 0600) and print its DNS record")
    g.add_argument("--domain", required=True, help="signing domain (d=)")
    g.add_argument("--selector", required=True, help="selector (s=)")
    g.add_argument("--algorithm", choices=("rsa", "ed25519"), default="rsa")
    g.add_argument("--bits", type=int, default=2048, help="RSA key size (default 2048, at least 1024)")
    g.add_argument("--out", default=".", help="directory for the key file (default: current)")
    g.add_argument("--testing", action="store_true", help="add t=y to the record (RFC 6376 §3.6.1)")
    g.set_defaults(func=_generate)

    s = ks.add_parser("show", help="print the DNS record of every configured key")
    s.add_argument("-c", "--config", help="configuration file (default: $RELIST_CONFIG)")
    s.set_defaults(func=_show)

    t = ks.add_parser("test", help="check every configured key against DNS and a test signature")
    t.add_argument("-c", "--config", help="configuration file (default: $RELIST_CONFIG)")
    t.add_argument("--nameserver", type=_hostport, action="append", metavar="HOST:PORT",
                   help="ask this server (repeatable; default: [dns] nameservers, else the system's)")
    t.set_defaults(func=_test)

    r = ks.add_parser("rotate", help="make a new key and selector for a list and print the steps")
    r.add_argument("-c", "--config", help="configuration file (default: $RELIST_CONFIG)")
    r.add_argument("--list", required=True, dest="list_address", metavar="ADDRESS")
    r.add_argument("--selector", help="new selector (default: derived from the date)")
    r.add_argument("--algorithm", choices=("rsa", "ed25519"), default="rsa",
                   help="which of the list's keys to rotate (default rsa)")
    r.add_argument("--bits", type=int, default=2048)
    r.add_argument("--out", help="directory for the new key file (default: the current key's)")
    r.set_defaults(func=_rotate)


def _key_filename(selector: str, domain: str) -> str:
    for part in (selector, domain):
        if not part or "/" in part or part.startswith(".") or "\x00" in part:
            raise ValueError(f"{part!r} cannot be used in a file name")
    return f"{selector}.{domain}.key"


def _new_key(args, domain: str, selector: str, out: Path):
    try:
        key = generate(args.algorithm, args.bits)
        path = write_private_key(out / _key_filename(selector, domain), key)
    except ValueError as exc:
        print(f"relist: {exc}", file=sys.stderr)
        return None, None
    return key, path


def _generate(args) -> int:
    domain = args.domain.lower().rstrip(".")
    key, path = _new_key(args, domain, args.selector, Path(args.out))
    if key is None:
        return 2
    sel_key, path_key = _SETTINGS[args.algorithm]
    print(f"; relist: wrote {key.kind} {key.bits}-bit private key {path} (mode 0600)")
    print(f"; relist.toml: signing_domain = \"{domain}\"  {sel_key} = \"{args.selector}\"  "
          f"{path_key} = \"{path}\"")
    print(zone_line(args.selector, domain, dns_record(key, testing=args.testing)))
    return 0


def _show(args) -> int:
    cfg = load(args.config)
    keys = configured_keys(cfg.relay)
    if not keys:
        print("; relist: no signing keys configured")
        return 0
    status = 0
    for ck in keys:
        try:
            key = read_private_key(ck.path)
        except KeyFileError as exc:
            print(f"relist: [{ck.where}] {exc}", file=sys.stderr)
            status = 2
            continue
        domain = ck.domain or "<each list's domain>"
        print(f"; [{ck.where}] {key.kind} {key.bits}-bit key {ck.path}")
        print(zone_line(ck.selector, domain, dns_record(key)))
    return status


def _test(args) -> int:
    cfg = load(args.config)
    keys = configured_keys(cfg.relay)
    if not keys:
        print("relist: no signing keys configured", file=sys.stderr)
        return 1
    servers = tuple(args.nameserver or cfg.dns["nameservers"])
    min_bits = cfg.verify["min_key_bits"]
    status = 0
    for ck in keys:
        name = f"{ck.selector}._domainkey.{ck.domain}"
        if not ck.selector or not ck.domain:
            print(f"{name}\t{ck.algorithm}\tnot testable\t[{ck.where}] needs a selector and a domain")
            status = max(status, 1)
            continue
        try:
            key = read_private_key(ck.path)
        except KeyFileError as exc:
            print(f"{name}\t{ck.algorithm}\tunreadable key\t{exc}")
            status = 2
            continue
        answer = lookup_txt(name, servers, cfg.dns["timeout"])
        result = check_published(key, ck.domain, ck.selector, answer, min_bits,
                                 datetime.now(timezone.utc))
        print(f"{name}\t{key.kind}\t{result.status}\t{result.detail}")
        if not result.ok:
            status = max(status, 1)
    return status


def _rotate(args) -> int:
    cfg = load(args.config)
    address = args.list_address.lower()
    lp = next((x for x in cfg.relay.lists if x.address == address), None)
    if lp is None:
        print(f"relist: {address}: no [lists.\"{address}\"] section in the configuration", file=sys.stderr)
        return 2
    sel_key, path_key = _SETTINGS[args.algorithm]
    old_sel, old_path = getattr(lp, sel_key), getattr(lp, path_key)
    domain = lp.signing_domain or lp.domain
    now = datetime.now(timezone.utc)
    selector = args.selector or _next_selector(old_sel, args.algorithm, now)
    if selector == old_sel:
        print(f"relist: the new selector must differ from the current one ({old_sel})", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else (Path(old_path).parent if old_path else Path("."))
    key, path = _new_key(args, domain, selector, out)
    if key is None:
        return 2
    print(f"; relist: wrote {key.kind} {key.bits}-bit private key {path} (mode 0600)")
    print("; 1. publish the new record now:")
    print(zone_line(selector, domain, dns_record(key)))
    print("; 2. when it resolves (after the zone's TTL), check it:  relist keys test")
    print(f"; 3. switch [lists.\"{address}\"] to  {sel_key} = \"{selector}\"  {path_key} = \"{path}\""
          "  and restart relist")
    if old_sel:
        print(f"; 4. keep {old_sel}._domainkey.{domain} published for at least 7 days after the switch"
              " (mail in queues is still verified with it), then revoke it with"
              f" {old_sel}._domainkey.{domain}. IN TXT \"v=DKIM1; p=\" and delete {old_path}")
    return 0


def _next_selector(current: str, algorithm: str, now: datetime) -> str:
    base = ("r" if algorithm == "rsa" else "e") + now.strftime("%Y%m")
    candidate, n = base, 0
    while candidate == current:
        n += 1
        candidate = f"{base}{chr(ord('a') + n)}"
    return candidate
