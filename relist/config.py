"""Read and validate ``relist.toml`` once, at start-up, into immutable values.

Every key is declared in ``SCHEMA`` with its type, default and a check; an unknown
key, a wrong type or a bad value raises ``ConfigError`` naming the key and the value,
so a typo never silently falls back to a default.  The result feeds everything:
the core's ``RelayPolicy``/``ListPolicy`` and the edges' settings.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Callable

from relist.core.errors import ConfigError
from relist.core.policy import ListPolicy, RelayPolicy
from relist.core.steps import list_headers, sign

__all__ = ["MTA_SIZE_MARGIN", "Config", "ConfigError", "check_signing", "load", "parse", "parse_hostport"]

ENV_VAR = "RELIST_CONFIG"

# The MTA's message_size_limit must leave room for what relist adds to a message of
# [server] max_message_size: at least max_message_size + MTA_SIZE_MARGIN.  Measured
# (tests/test_config.py): the default configuration (RSA-2048 and Ed25519 signatures,
# an ARC set, Received, Authentication-Results, Sender, missing List-* fields) adds
# 3.4-4.3 KB to Mailman's messages and about 12 KB to a post carrying the most poster
# signatures relist verifies (10) under the longest names; the rest covers a rewritten
# From (DMARC mitigation copies it) and the list's own footer.  docs/deployment.md.
MTA_SIZE_MARGIN = 64 * 1024


def parse_hostport(text: str, key: str) -> tuple[str, int]:
    """``"127.0.0.1:10026"`` or ``"[::1]:10026"`` -> (host, port)."""
    if not isinstance(text, str) or ":" not in text:
        raise ConfigError(f"{key} = {text!r}: expected \"HOST:PORT\"")
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{key} = {text!r}: expected \"HOST:PORT\" with a port from 1 to 65535")
    return host, int(port)


# -- value checks -----------------------------------------------------------------

def _positive(v, key):
    if v <= 0:
        raise ConfigError(f"{key} = {v!r}: must be greater than 0")
    return v


def _non_negative(v, key):
    if v < 0:
        raise ConfigError(f"{key} = {v!r}: must not be negative")
    return v


def _one_of(*choices):
    def check(v, key):
        if v not in choices:
            raise ConfigError(f"{key} = {v!r}: must be one of {', '.join(map(repr, choices))}")
        return v
    return check


def _cidrs(v, key):
    out = []
    for item in v:
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"{key}: {item!r} is not an IP network (CIDR) or address") from None
    return tuple(out)


def _hostport(v, key):
    return parse_hostport(v, key)


def _hostports(v, key):
    return tuple(parse_hostport(item, key) for item in v)


def _deliver_to(v, key):
    proto, _, rest = v.partition(":")
    if proto not in ("lmtp", "smtp"):
        raise ConfigError(f"{key} = {v!r}: expected \"lmtp:HOST:PORT\" or \"smtp:HOST:PORT\"")
    return (proto,) + parse_hostport(rest, key)


@dataclass(frozen=True)
class Key:
    type: type | tuple[type, ...]
    default: Any
    check: Callable[[Any, str], Any] | None = None


# Global sections.  Keep names as written: outside checks rely on them.
SCHEMA: dict[str, dict[str, Key]] = {
    "server": {
        "listen": Key(str, "127.0.0.1:10026", _hostport),
        "hostname": Key(str, ""),
        "allowed_clients": Key(list, ["127.0.0.0/8", "::1"], _cidrs),
        "max_message_size": Key(int, 25 * 1024 * 1024, _positive),
        "authserv_id": Key(str, ""),
        "add_received": Key(bool, True),
        "workers": Key(int, 0, _non_negative),
        "unknown_list": Key(str, "pass", _one_of("pass", "defer", "reject")),
        "sign_once": Key(bool, True),
    },
    "upstream": {
        "host": Key(str, "127.0.0.1"),
        "port": Key(int, 10025, _positive),
        "timeout": Key((int, float), 60, _positive),
        "connect_timeout": Key((int, float), 10, _positive),
        "data_timeout": Key((int, float), 600, _positive),
        "pool_size": Key(int, 8, _non_negative),
        "helo": Key(str, ""),
    },
    "store": {
        "path": Key(str, "var/relist.db"),
    },
    "dns": {
        "nameservers": Key(list, [], _hostports),
        "timeout": Key((int, float), 5, _positive),
    },
    "verify": {
        "max_signatures": Key(int, 10, _positive),
        "min_key_bits": Key(int, 1024, _positive),
    },
    "log": {
        "level": Key(str, "info", _one_of("debug", "info", "warning", "error")),
    },
}

# [ingress]: the verify-early leg (MTA -> relist -> Mailman's LMTP port).  Present in
# the file = enabled; these are the defaults for keys the section leaves out.
INGRESS_SCHEMA: dict[str, Key] = {
    "listen": Key(str, "127.0.0.1:10024", _hostport),
    "deliver_to": Key(str, "lmtp:127.0.0.1:8024", _deliver_to),
    "retention_days": Key((int, float), 7, _positive),
}

# Per-list keys: valid in [list_defaults] and in every [lists."ADDRESS"].
def _strings(v, key):
    if not all(isinstance(x, str) for x in v):
        raise ConfigError(f"{key} = {v!r}: expected a list of strings")
    return tuple(v)


# Fields ``remove_headers`` may not name, and why (the error names both).
_KEEP_FIELDS = {
    "received": "a trace field (RFC 5321 §4.4: never removed by a relay)",
    "return-path": "a trace field (RFC 5321 §4.4)",
    "from": "required in every message (RFC 5322 §3.6)",
    "date": "required in every message (RFC 5322 §3.6)",
    "dkim-signature": "the poster's signatures are removed by `strip` (those the list's changes broke)",
    "arc-seal": "an ARC field: removing it breaks the chain relist validates and extends (RFC 8617)",
    "arc-message-signature": "an ARC field: removing it breaks the chain (RFC 8617)",
    "arc-authentication-results": "an ARC field: removing it breaks the chain (RFC 8617)",
    "sender": "written by the sender step (`add_sender`)",
    "reply-to": "written by the reply-to step (`reply_to`)",
    "x-original-from": "written by DMARC mitigation",
}
_LIST_FIELDS = frozenset(n.lower() for n in list_headers.NAMES)   # what that step writes


def _field_names(v, key):
    names = _strings(v, key)
    for name in names:
        lower = name.strip().rstrip(":").strip().lower()
        why = _KEEP_FIELDS.get(lower)
        if lower in _LIST_FIELDS:
            why = "written by the list-headers step (use list_headers = \"replace\" for relist's own)"
        if why:
            raise ConfigError(f"{key} = {list(v)!r}: {name!r} cannot be removed: {why}")
    return names


def _sender_patterns(v, key):
    """``envelope_senders``: addresses, ``*`` for any run of characters (``"*"`` alone:
    any envelope sender, the null sender included); lower-cased."""
    out = []
    for item in _strings(v, key):
        pattern = item.strip().lower()
        local, at, domain = pattern.rpartition("@")
        if pattern != "*" and (not at or not local or not domain
                               or any(c.isspace() or c in "<>" for c in pattern)):
            raise ConfigError(f"{key} = {list(v)!r}: {item!r} is not an address or a pattern like "
                              f"\"news-bounces@lists.example.org\" or \"*@mailman.example.org\" "
                              f"(\"*\" matches any run of characters)")
        out.append(pattern)
    return tuple(out)


def _canon(v, key):
    head, _, body = v.partition("/")
    body = body or "simple"
    if head not in ("simple", "relaxed") or body not in ("simple", "relaxed"):
        raise ConfigError(f"{key} = {v!r}: expected HEADER/BODY with each simple or relaxed")
    return f"{head}/{body}"


def _reply_to(v, key):
    if v not in ("", "list") and "@" not in v:
        raise ConfigError(f"{key} = {v!r}: expected \"\" (leave alone), \"list\" or an address")
    return v


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2}))?")


def _instant(v, key):
    """RFC 3339: a date-time with an offset (a string or a TOML offset date-time), or a
    full-date meaning 00:00 UTC that day.  "" -> None.  Result: an aware UTC datetime."""
    expected = (f"{key} = {v!r}: expected an RFC 3339 date-time with an offset, "
                f"e.g. \"2026-12-01T00:00:00Z\", or a date \"2026-12-01\" (00:00 UTC)")
    if v == "":
        return None
    if isinstance(v, str):
        if not _RFC3339.fullmatch(v):
            raise ConfigError(expected)
        try:
            v = datetime.fromisoformat(v.upper().replace("Z", "+00:00")) if len(v) > 10 else date.fromisoformat(v)
        except ValueError:
            raise ConfigError(expected) from None
    if isinstance(v, datetime):
        if v.tzinfo is None:
            raise ConfigError(expected + " (a local time without an offset is ambiguous)")
        return v.astimezone(timezone.utc)
    return datetime(v.year, v.month, v.day, tzinfo=timezone.utc)


LIST_SCHEMA: dict[str, Key] = {
    "mode": Key(str, "resign", _one_of("preserve", "resign", "auto")),
    "strip": Key(str, "broken", _one_of("broken", "all")),
    "display_name": Key(str, ""),
    "footer": Key(str, ""),
    "subject_prefix": Key(str, ""),
    "add_sender": Key(bool, True),
    "list_headers": Key(str, "keep", _one_of("keep", "replace")),
    "reply_to": Key(str, "", _reply_to),
    "remove_headers": Key(list, [], _field_names),
    "archive_url": Key(str, ""),
    "unsubscribe_url": Key(str, ""),
    "help_url": Key(str, ""),
    "subscribe_url": Key(str, ""),
    "sign": Key(bool, True),
    "signing_domain": Key(str, ""),
    "selector": Key(str, ""),
    "private_key": Key(str, ""),
    "ed25519_selector": Key(str, ""),
    "ed25519_private_key": Key(str, ""),
    "previous_selector": Key(str, ""),
    "previous_private_key": Key(str, ""),
    "rotation_overlap_until": Key((str, date), "", _instant),
    "canonicalization": Key(str, "relaxed/relaxed", _canon),
    "sign_headers": Key(list, [], _strings),
    "signature_ttl": Key(int, 0, _non_negative),
    "signing_identity": Key(str, ""),
    "copy_headers": Key(bool, False),
    "arc_seal": Key(bool, True),
    "dmarc_mitigation": Key(str, "munge_from", _one_of("none", "munge_from", "wrap")),
    "dmarc_trigger": Key(str, "policy", _one_of("policy", "always", "evidence")),
    "munge_phrase": Key(str, "{name} via {list_name}"),
    "downgrade_8bit": Key(bool, False),
    "envelope_senders": Key(list, [], _sender_patterns),
    "auth_bounces": Key(str, "mailman", _one_of("mailman", "owner")),
}


@dataclass(frozen=True)
class Config:
    """The whole configuration, validated."""

    path: Path | None
    server: dict[str, Any]
    upstream: dict[str, Any]
    store: dict[str, Any]
    dns: dict[str, Any]
    log: dict[str, Any]
    verify: dict[str, Any]
    ingress: dict[str, Any] | None = None   # None: no [ingress] section, leg disabled
    relay: RelayPolicy = field(default_factory=RelayPolicy)

    @property
    def hostname(self) -> str:
        return self.relay.hostname

    @property
    def authserv_id(self) -> str:
        return self.relay.authserv_id


def _check(key: Key, value: Any, name: str) -> Any:
    types = key.type if isinstance(key.type, tuple) else (key.type,)
    if isinstance(value, bool) and bool not in types:
        raise ConfigError(f"{name} = {value!r}: expected {'/'.join(t.__name__ for t in types)}")
    if not isinstance(value, types):
        raise ConfigError(f"{name} = {value!r}: expected {'/'.join(t.__name__ for t in types)}")
    return key.check(value, name) if key.check else value


def _section(schema: dict[str, Key], data: Any, where: str, fill: bool = True) -> dict[str, Any]:
    """Validate one table; with ``fill`` add defaults for absent keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"[{where}] must be a table")
    unknown = sorted(set(data) - set(schema))
    if unknown:
        raise ConfigError(f"[{where}] {unknown[0]}: unknown key (known: {', '.join(sorted(schema))})")
    out = {}
    for name, key in schema.items():
        if name in data or fill:
            out[name] = _check(key, data.get(name, key.default), f"[{where}] {name}")
    return out


def _check_rotation(values: dict[str, Any], where: str) -> None:
    """The three rotation keys go together and name a key other than the current one."""
    rotation = ("previous_selector", "previous_private_key", "rotation_overlap_until")
    present = [k for k in rotation if values[k] not in ("", None)]
    if present and len(present) != len(rotation):
        missing = [k for k in rotation if k not in present]
        raise ConfigError(f"[{where}] {present[0]} is set but {missing[0]} is not: key rotation "
                          f"needs {', '.join(rotation)} together (docs/keys.md)")
    if not present:
        return
    if not values["selector"] or not values["private_key"]:
        raise ConfigError(f"[{where}] previous_selector = {values['previous_selector']!r} needs the "
                          f"new key in selector and private_key")
    if values["previous_selector"] == values["selector"]:
        raise ConfigError(f"[{where}] previous_selector = {values['previous_selector']!r}: must differ "
                          f"from selector (a rotation starts a new selector)")
    if values["previous_private_key"] == values["private_key"]:
        raise ConfigError(f"[{where}] previous_private_key = {values['previous_private_key']!r}: must "
                          f"differ from private_key")


def _check_identity(lp: ListPolicy, where: str) -> None:
    """i= must be in the signing domain or a subdomain of it (RFC 6376 §3.5)."""
    identity = lp.signing_identity
    if not identity:
        return
    domain = sign.signing_domain(lp)
    local, at, idomain = identity.rpartition("@")
    idomain = idomain.lower().rstrip(".")
    if not at or not identity.isascii() or any(c in identity for c in " ;\r\n\t") or not (
            idomain == domain or idomain.endswith("." + domain)):
        raise ConfigError(f"[{where}] signing_identity = {identity!r}: expected an address or "
                          f"\"@domain\" in the signing domain {domain or '(the list domain)'} "
                          f"or a subdomain of it (RFC 6376 §3.5 i=)")


# Per-list keys that name a key file: relative paths are relative to the directory of
# the configuration file (not to the working directory relist was started in).
KEY_FILE_KEYS = ("private_key", "ed25519_private_key", "previous_private_key")


def _key_files_under(values: dict[str, Any], base: str | None) -> dict[str, Any]:
    """``values`` with each relative key file path made absolute under ``base``."""
    if base is None:
        return values
    return {name: (os.path.join(base, value) if name in KEY_FILE_KEYS and value
                   and not os.path.isabs(value) else value)
            for name, value in values.items()}


def _list_policy(values: dict[str, Any], address: str, configured: bool) -> ListPolicy:
    return ListPolicy(address=address, configured=configured, **values)


def parse(data: dict[str, Any], path: Path | None = None) -> Config:
    """Validate a TOML document (already parsed) into a ``Config``.  ``path``: the file
    it came from; relative key file paths are resolved against its directory (without
    ``path``, they stay relative to the working directory)."""
    known = set(SCHEMA) | {"list_defaults", "lists", "ingress"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"[{unknown[0]}]: unknown section (known: {', '.join(sorted(known))})")
    sections = {name: _section(schema, data.get(name, {}), name) for name, schema in SCHEMA.items()}
    base = os.path.dirname(os.path.abspath(path)) if path is not None else None
    defaults = _key_files_under(_section(LIST_SCHEMA, data.get("list_defaults", {}), "list_defaults"), base)
    _check_rotation(defaults, "list_defaults")
    lists_data = data.get("lists", {})
    if not isinstance(lists_data, dict):
        raise ConfigError("[lists] must be a table of [lists.\"ADDRESS\"] sections")
    lists = []
    for address, section in lists_data.items():
        if "@" not in address or address.count("@") != 1 or address.startswith("@"):
            raise ConfigError(f"[lists.{address!r}]: the section name must be a list address like \"name@example.org\"")
        own = _key_files_under(_section(LIST_SCHEMA, section, f"lists.{address!r}", fill=False), base)
        merged = {**defaults, **own}
        _check_rotation(merged, f"lists.{address!r}")
        lists.append(_list_policy(merged, address.lower(), True))
        _check_identity(lists[-1], f"lists.{address!r}")
    hostname = sections["server"]["hostname"] or socket.getfqdn()
    relay = RelayPolicy(
        hostname=hostname,
        authserv_id=sections["server"]["authserv_id"] or hostname,
        max_signatures=sections["verify"]["max_signatures"],
        min_key_bits=sections["verify"]["min_key_bits"],
        add_received=sections["server"]["add_received"],
        unknown_list=sections["server"]["unknown_list"],
        defaults=_list_policy(defaults, "", False),
        lists=tuple(lists),
    )
    ingress = _section(INGRESS_SCHEMA, data["ingress"], "ingress") if "ingress" in data else None
    return Config(path=path, relay=relay, ingress=ingress, **sections)


def _key_pairs(lp: ListPolicy) -> tuple[tuple[str, str, str, str], ...]:
    return (("selector", lp.selector, "private_key", lp.private_key),
            ("ed25519_selector", lp.ed25519_selector, "ed25519_private_key", lp.ed25519_private_key))


def check_signing(relay: RelayPolicy) -> list[str]:
    """Start-up check of what each list can sign with (``relist serve``).

    Raises ``ConfigError`` for a configured list in ``resign`` or ``auto`` mode with no
    key and no explicit ``sign = false`` (it would strip, munge From and send unsigned
    under the list's name), and for a selector without its key file or the reverse
    (every post would be deferred for ever).  Returns warnings for what is allowed but
    worth a line in the log: lists without a section that fall back to a key-less
    ``[list_defaults]``, and preserve lists that must munge From without a signature.
    """
    warnings = []
    for lp, where in ((lp, f"[lists.{lp.address!r}]") for lp in relay.lists):
        for sel_key, sel, path_key, path in _key_pairs(lp):
            if bool(sel) != bool(path):
                have, missing = (sel_key, path_key) if sel else (path_key, sel_key)
                raise ConfigError(f"{where} {have} is set but {missing} is not: a key needs both")
        if lp.signs or not lp.sign:
            continue
        if lp.mode in ("resign", "auto"):
            raise ConfigError(
                f"{where} mode = {lp.mode!r} but the list has no signing key: set selector and "
                f"private_key (and/or ed25519_selector and ed25519_private_key), or sign = false "
                f"if another hop signs for the list (docs/keys.md)")
        if lp.dmarc_mitigation != "none":
            warnings.append(f"{where} preserve mode without a signing key: a post whose poster "
                            f"signature does not survive gets its From rewritten to the list and "
                            f"leaves unsigned (set selector and private_key)")
    d = relay.defaults
    if d.sign and not d.signs and d.mode in ("resign", "auto"):
        warnings.append(f"[list_defaults] mode = {d.mode!r} without a signing key: lists with no "
                        f"[lists.\"ADDRESS\"] section are relayed unsigned (only signatures the "
                        f"changes broke are removed; From is rewritten only where DMARC requires it)")
    return warnings


def load(path: str | os.PathLike | None = None) -> Config:
    """Read the configuration from ``path``, else ``$RELIST_CONFIG``, else defaults."""
    if path is None:
        path = os.environ.get(ENV_VAR) or None
    if path is None:
        return parse({})
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse(data, path)


def with_overrides(cfg: Config, **sections: dict[str, Any]) -> Config:
    """A copy of ``cfg`` with some section values replaced (used by ``relist demo``)."""
    changes = {name: {**getattr(cfg, name), **values} for name, values in sections.items()}
    return replace(cfg, **changes)
