"""``relist check-config``: check a configuration before (re)starting relist, in the
manner of ``postfix check`` and ``opendkim-testkey``.

Offline (what ``relist serve`` itself checks at start, with the same code:
``relist.config.load``, ``check_signing`` and ``relist.edge.key_files.read_configured_keys``):
the file parses and validates, every list can sign as configured, every key file is
readable, private to relist and of the right algorithm.  Then, unless ``--offline``:
each selector's DNS record is fetched and compared with its private key (``relist keys
test``'s check), the upstream MTA answers EHLO and its SIZE (if advertised) leaves room
for what relist adds (at least ``max_message_size`` + ``MTA_SIZE_MARGIN``), and with
``[ingress]`` the next hop (Mailman's LMTP port) answers LHLO.

One line per finding: ``ok``, ``warning`` or ``error``, what was checked, the detail.
Exit codes: 0 all ok; 1 warnings or a failed network check (DNS, MTA, Mailman);
2 configuration errors (the file, signing settings, key files).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from relist import BUILD
from relist.config import MTA_SIZE_MARGIN, Config, ConfigError, check_signing, load
from relist.edge.key_files import configured_keys, read_configured_keys
from relist.core_build import Build
from relist.edge.smtp_out import Connection, UpstreamError

__all__ = ["Finding", "add_parser", "check", "core_finding", "size_finding"]


@dataclass(frozen=True)
class Finding:
    verdict: str      # "ok" | "warning" | "error"
    subject: str      # what was checked
    detail: str
    status: int = 0   # its exit status: 0 ok, 1 warning or network failure, 2 configuration error

    def line(self) -> str:
        return f"{self.verdict:<7} {self.subject}: {self.detail}"


def _ok(subject: str, detail: str) -> Finding:
    return Finding("ok", subject, detail, 0)


def _hostport(text: str) -> tuple[str, int]:
    from relist.cli.keys import _hostport as parse
    return parse(text)


def add_parser(sub) -> None:
    p = sub.add_parser("check-config",
                       help="check the configuration, key files, DNS records, MTA and Mailman")
    p.add_argument("-c", "--config", help="configuration file (default: $RELIST_CONFIG)")
    p.add_argument("--nameserver", type=_hostport, action="append", metavar="HOST:PORT",
                   help="ask this server for the keys' records (repeatable; default: [dns] nameservers)")
    p.add_argument("--offline", action="store_true",
                   help="check the file and the key files only (what relist serve checks at start)")
    p.set_defaults(func=_run)


def size_finding(subject: str, advertised: int | None, max_message_size: int) -> Finding:
    """The MTA's SIZE (RFC 1870) against what relist may hand it: a message of
    ``max_message_size`` plus what relist adds (``MTA_SIZE_MARGIN``)."""
    needed = max_message_size + MTA_SIZE_MARGIN
    if advertised is None:
        return _ok(subject, "no SIZE advertised (no limit announced)")
    if advertised == 0:
        return _ok(subject, "SIZE 0 (no limit)")
    if advertised < needed:
        return Finding("warning", subject,
                       f"SIZE {advertised} is less than [server] max_message_size {max_message_size} + "
                       f"{MTA_SIZE_MARGIN} that relist may add = {needed}: posts near the limit will be "
                       f"refused by the MTA after relist accepted them; raise the MTA's limit (Postfix: "
                       f"message_size_limit = {needed}) or lower max_message_size", 1)
    return _ok(subject, f"SIZE {advertised} >= {needed} (max_message_size + {MTA_SIZE_MARGIN})")


async def _hello(host: str, port: int, *, lmtp: bool, helo: str, timeout: float):
    """Connect, EHLO (LHLO), QUIT: the capabilities, or an ``UpstreamError``."""
    conn = Connection(host, port, timeout=timeout, connect_timeout=timeout, helo=helo, lmtp=lmtp)
    try:
        return await conn.connect()
    finally:
        await conn.quit()


def _network_hop(subject: str, host: str, port: int, *, lmtp: bool, helo: str, timeout: float):
    verb = "LHLO" if lmtp else "EHLO"
    try:
        caps = asyncio.run(_hello(host, port, lmtp=lmtp, helo=helo, timeout=timeout))
    except UpstreamError as exc:
        return None, Finding("error", subject, f"{host}:{port}: {exc.reply.text}", 1)
    return caps, _ok(subject, f"{host}:{port} answers {verb}" + ("" if caps.esmtp else " (HELO only)"))


def offline(cfg: Config) -> tuple[list[Finding], set[str]]:
    """The checks ``relist serve`` makes at start, as findings; and the key files that
    failed (not tested again against DNS)."""
    out = []
    try:
        warnings = check_signing(cfg.relay)
    except ConfigError as exc:
        out.append(Finding("error", "signing", str(exc), 2))
    else:
        out += [Finding("warning", "signing", w, 1) for w in warnings]
        if not warnings:
            out.append(_ok("signing", f"{len(cfg.relay.lists)} list section(s) can sign as configured"))
    keys, problems = read_configured_keys(cfg.relay)
    failed = {exc.key_path for exc in problems}
    out += [Finding("error", "key file", str(exc), 2) for exc in problems]
    out += [_ok("key file", f"{path}: {key.kind} {key.bits}-bit, private to relist")
            for path, key in keys.items() if path not in failed]
    return out, failed


def check(cfg: Config, *, nameservers=(), network: bool = True) -> list[Finding]:
    """Every finding for ``cfg`` (already loaded: loading is the first check)."""
    where = str(cfg.path) if cfg.path else "built-in defaults"
    out = [_ok("configuration", f"{where}: valid ({len(cfg.relay.lists)} list section(s))"), core_finding()]
    found, failed = offline(cfg)
    out += found
    if not network:
        return out
    from relist.cli.keys import test_key
    servers = tuple(nameservers or cfg.dns["nameservers"])
    for ck in configured_keys(cfg.relay):
        if ck.path in failed:
            continue
        name, kind, status, detail, code = test_key(ck, servers, cfg.dns["timeout"],
                                                    cfg.verify["min_key_bits"])
        text = f"{name} ({kind}): {status}" + (f"; {detail}" if detail else "")
        out.append(_ok("dns", text) if code == 0 else Finding("error", "dns", text, max(code, 1)))
    up = cfg.upstream
    helo = up["helo"] or cfg.hostname
    timeout = min(up["connect_timeout"], up["timeout"])
    caps, finding = _network_hop("upstream", up["host"], up["port"], lmtp=False, helo=helo, timeout=timeout)
    out.append(finding)
    if caps is not None:
        out.append(size_finding("upstream size", caps.size, cfg.server["max_message_size"]))
    if cfg.ingress is not None:
        proto, host, port = cfg.ingress["deliver_to"]
        out.append(_network_hop(f"ingress deliver_to ({proto})", host, port, lmtp=proto == "lmtp",
                                helo=helo, timeout=timeout)[1])
    return out


def core_finding(build: Build = BUILD) -> Finding:
    """Which build of the core runs (relist.core_build): a warning when a compiled
    build is there but cannot run (stale after an upgrade, or incomplete)."""
    if build.unused:
        return Finding("warning", "core", build.describe(), 1)
    return _ok("core", build.describe())


def _run(args) -> int:
    try:
        cfg = load(args.config)
    except ConfigError as exc:
        print(Finding("error", "configuration", str(exc), 2).line())
        return 2
    findings = check(cfg, nameservers=tuple(args.nameserver or ()), network=not args.offline)
    for f in findings:
        print(f.line())
    return max((f.status for f in findings), default=0)
