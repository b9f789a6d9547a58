"""``relist keys``: generate, show, test and rotate DKIM signing keys (see docs/keys.md).

Output is zone-file text: records as ``S._domainkey.D. IN TXT ( "..." "..." )`` lines,
everything else as ``;`` comments, so it can be pasted into a zone.  Exit codes as for
every command: 0 ok, 1 a negative answer (a key that is not ok), 2 usage/config/IO.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from relist.config import load, parse_hostport
from relist.core.sign import dns_record, zone_line
from relist.edge.key_files import (
    KeyFileError, check_published, configured_keys, generate, lookup_txt, read_private_key,
    write_private_key, wrong_slot,
)

__all__ = ["add_parser", "test_key"]

_SETTINGS = {"rsa": ("selector", "private_key"), "ed25519": ("ed25519_selector", "ed25519_private_key")}
DEFAULT_OVERLAP_DAYS = 7   # keys rotate --overlap: days relist signs with both RSA keys


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

    r = ks.add_parser("rotate",
                      help="make a new key and selector for a list; print the record and the settings")
    r.add_argument("-c", "--config", help="configuration file (default: $RELIST_CONFIG)")
    r.add_argument("--list", required=True, dest="list_address", metavar="ADDRESS")
    r.add_argument("--selector", help="new selector (default: derived from the date)")
    r.add_argument("--algorithm", choices=("rsa", "ed25519"), default="rsa",
                   help="which of the list's keys to rotate (default rsa)")
    r.add_argument("--bits", type=int, default=2048)
    r.add_argument("--out", help="directory for the new key file (default: the current key's)")
    r.add_argument("--overlap", type=int, metavar="DAYS",
                   help=f"sign with the old and the new RSA key for DAYS days after the switch"
                        f" (default {DEFAULT_OVERLAP_DAYS}; 0: switch directly; RSA only)")
    r.set_defaults(func=_rotate)


def _key_filename(selector: str, domain: str) -> str:
    for part in (selector, domain):
        if not part or "/" in part or part.startswith(".") or "\x00" in part:
            raise ValueError(f"{part!r} cannot be used in a file name")
    return f"{selector}.{domain}.key"


def _new_key(args, domain: str, selector: str, out: Path):
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)   # a new key directory: owner only
        key = generate(args.algorithm, args.bits)
        path = write_private_key(out / _key_filename(selector, domain), key)
    except (ValueError, OSError) as exc:
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
          f"{path_key} = {_toml_str(str(path.resolve()))}")
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
        problem = wrong_slot(key, ck.setting, ck.path)
        if problem:
            print(f"relist: [{ck.where}] {problem}", file=sys.stderr)
            status = 2
            continue
        domain = ck.domain or "<each list's domain>"
        role = f" ({ck.role})" if ck.role else ""
        print(f"; [{ck.where}] {key.kind} {key.bits}-bit key {ck.path}{role}")
        print(zone_line(ck.selector, domain, dns_record(key)))
    return status


def test_key(ck, servers, timeout: float, min_bits: int) -> tuple[str, str, str, str, int]:
    """Test one configured key: read its file, fetch its selector's DNS record, compare
    them (and sign and verify a test message).  Returns (record name, algorithm,
    status, detail, exit status: 0 ok, 1 not ok in DNS, 2 key file or setting error).
    Used by ``relist keys test`` and ``relist check-config``."""
    name = f"{ck.selector}._domainkey.{ck.domain}"
    if not ck.selector or not ck.domain:
        return name, ck.algorithm, "not testable", f"[{ck.where}] needs a selector and a domain", 1
    try:
        key = read_private_key(ck.path)
    except KeyFileError as exc:
        return name, ck.algorithm, "unreadable key", str(exc), 2
    problem = wrong_slot(key, ck.setting, ck.path)
    if problem:
        return name, ck.algorithm, "wrong setting", f"[{ck.where}] {problem}", 2
    answer = lookup_txt(name, servers, timeout)
    result = check_published(key, ck.domain, ck.selector, answer, min_bits, datetime.now(timezone.utc))
    detail = "; ".join(x for x in (result.detail, ck.role) if x)
    return name, key.kind, str(result.status), detail, 0 if result.ok else 1


def _test(args) -> int:
    cfg = load(args.config)
    keys = configured_keys(cfg.relay)
    if not keys:
        print("relist: no signing keys configured", file=sys.stderr)
        return 1
    servers = tuple(args.nameserver or cfg.dns["nameservers"])
    status = 0
    for ck in keys:
        name, kind, result, detail, code = test_key(ck, servers, cfg.dns["timeout"],
                                                    cfg.verify["min_key_bits"])
        print(f"{name}\t{kind}\t{result}\t{detail}")
        status = max(status, code)
    return status


def _rotate(args) -> int:
    cfg = load(args.config)
    address = args.list_address.lower()
    lp = next((x for x in cfg.relay.lists if x.address == address), None)
    if lp is None:
        print(f"relist: {address}: no [lists.\"{address}\"] section in the configuration", file=sys.stderr)
        return 2
    rsa_rotation = args.algorithm == "rsa"
    if args.overlap is not None and args.overlap < 0:
        print(f"relist: --overlap {args.overlap}: must not be negative", file=sys.stderr)
        return 2
    if not rsa_rotation and args.overlap:
        print("relist: --overlap applies to the RSA key (previous_selector is RSA only); an Ed25519"
              " key is switched directly, the RSA signature covers the change", file=sys.stderr)
        return 2
    overlap = (DEFAULT_OVERLAP_DAYS if args.overlap is None else args.overlap) if rsa_rotation else 0
    sel_key, path_key = _SETTINGS[args.algorithm]
    old_sel, old_path = getattr(lp, sel_key), getattr(lp, path_key)
    # selectors that must not be reused: the current one and one still configured as previous
    taken = {s for s in (old_sel, lp.previous_selector if rsa_rotation else "") if s}
    domain = lp.dkim_domain
    now = datetime.now(timezone.utc)
    out = Path(args.out) if args.out else (Path(old_path).parent if old_path else Path("."))
    if args.selector:
        selector = args.selector
        if selector in taken:
            print(f"relist: --selector {selector}: already configured for {address}"
                  f" ({', '.join(sorted(taken))}); a rotation needs a new selector", file=sys.stderr)
            return 2
    else:
        selector = _next_selector(taken, args.algorithm, now,
                                  lambda s: (out / _key_filename(s, domain)).exists())
    key, path = _new_key(args, domain, selector, out)
    if key is None:
        return 2
    conf = f" -c {shlex.quote(str(cfg.path))}" if cfg.path else ""
    print(f"; relist: wrote {key.kind} {key.bits}-bit private key {path} (mode 0600)")
    print("; 1. publish the new record now; relist keeps signing with the current key:")
    print(zone_line(selector, domain, dns_record(key)))
    settings = [(sel_key, selector), (path_key, str(path.resolve()))]
    until = None
    if old_sel and overlap:
        until = (now + timedelta(days=overlap)).replace(second=0, microsecond=0)
        settings += [("previous_selector", old_sel), ("previous_private_key", old_path),
                     ("rotation_overlap_until", f"{until:%Y-%m-%dT%H:%M:%SZ}")]
        if lp.previous_selector and lp.previous_selector != old_sel:
            print(f"; note: this replaces previous_selector = {_toml_str(lp.previous_selector)}:"
                  f" {lp.previous_selector} stops signing when you switch")
    elif rsa_rotation and lp.previous_selector:
        settings += [("previous_selector", ""), ("previous_private_key", ""), ("rotation_overlap_until", "")]
    print(f"; 2. set these lines in [lists.{_toml_str(address)}] (this command does not edit the file);"
          " do not restart relist yet:")
    for name, value in settings:
        print(f";      {name} = {_toml_str(value)}")
    print(f"; 3. wait for the zone's TTL, until every key is \"ok\" (exit 0), {selector} included;"
          " then restart relist:")
    print(f";      relist keys test{conf}")
    step = 4
    if until is not None:
        step = 5
        print(f"; 4. until {until:%Y-%m-%dT%H:%M:%SZ} relist signs with both {selector} and {old_sel}"
              f" ({overlap} days from now: move the date if you switch later);"
              f" after it, with {selector} only."
              " Then remove the previous_selector, previous_private_key and rotation_overlap_until lines")
    if old_sel:
        print(f"; {step}. keep {old_sel}._domainkey.{domain} published for at least 7 days after {old_sel}"
              " last signed (mail in queues is still verified with it), then revoke it with"
              f" {old_sel}._domainkey.{domain}. IN TXT \"v=DKIM1; p=\" and delete {old_path}")
    return 0


def _toml_str(value: str) -> str:
    """``value`` as a TOML basic string."""
    out = []
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _next_selector(taken, algorithm: str, now: datetime, exists=lambda s: False) -> str:
    """``rYYYYMM`` (``eYYYYMM`` for Ed25519), then ``rYYYYMMb``, ``c``, ...: the first one not
    in ``taken`` (the current and previous selectors) whose key file does not exist."""
    base = ("r" if algorithm == "rsa" else "e") + now.strftime("%Y%m")
    for suffix in ("", *"bcdefghijklmnopqrstuvwxyz"):
        candidate = base + suffix
        if candidate not in taken and not exists(candidate):
            return candidate
    raise ValueError(f"no free selector left for {base}; use --selector")
