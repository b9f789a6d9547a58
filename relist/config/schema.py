"""The configuration's schema: every key with its type, default and check.

``SCHEMA`` (global sections), ``INGRESS_SCHEMA`` and ``LIST_SCHEMA`` (``[list_defaults]``
and each ``[lists."ADDRESS"]``) declare every key; a check raises ``ConfigError`` naming
the key and the value.  Pure: no file, no environment (``relist.config.load`` reads).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Callable

from relist.core.errors import ConfigError
from relist.core.policy import LIST_HEADER_NAMES

__all__ = ["ENV_VAR", "INGRESS_SCHEMA", "KEY_FILE_KEYS", "LIST_SCHEMA", "MTA_SIZE_MARGIN", "SCHEMA", "Key",
           "parse_hostport"]

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


def _optional_hostport(v, key):
    """``""`` -> None (off), else ``"HOST:PORT"``."""
    return parse_hostport(v, key) if v != "" else None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _store_url(v, key):
    if v:
        from relist.config.store_url import parse_url
        parse_url(v)   # ConfigError naming what is wrong (never a password)
    return v


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
        # "sqlite:///PATH" or "postgresql://USER@HOST:PORT/DATABASE" (relist.config.store_url);
        # "" = the SQLite file at path.
        "url": Key(str, "", _store_url),
        "path": Key(str, "var/relist.db"),
        "password_file": Key(str, ""),
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
    # Prometheus exposition (docs/metrics.md); "" = off.
    "metrics": {
        "listen": Key(str, "", _optional_hostport),
        "allow_remote": Key(bool, False),
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
_LIST_FIELDS = frozenset(n.lower() for n in LIST_HEADER_NAMES)   # what that step writes


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
            v = (datetime.fromisoformat(v.upper().replace("Z", "+00:00")) if len(v) > 10
                 else date.fromisoformat(v))
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


# Per-list keys that name a key file: relative paths are relative to the directory of
# the configuration file (not to the working directory relist was started in).
KEY_FILE_KEYS = ("private_key", "ed25519_private_key", "previous_private_key")
