"""Read ``relist.toml`` once, at start-up, into immutable values: the core's
``RelayPolicy``/``ListPolicy`` and the edges' settings (``Config``), checked against
``relist.config.schema``.  Reading the file, the environment (``$RELIST_CONFIG``) and
the host name (``socket.getfqdn``) happens here, and only here."""

from __future__ import annotations

import os
import socket
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from relist.core.errors import ConfigError
from relist.core.policy import ListPolicy, RelayPolicy

from relist.config.schema import (
    ENV_VAR, INGRESS_SCHEMA, KEY_FILE_KEYS, LIST_SCHEMA, SCHEMA, Key, _loopback,
)

__all__ = ["Config", "check_signing", "load", "parse", "with_overrides"]


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
    metrics: dict[str, Any] = field(default_factory=lambda: {"listen": None, "allow_remote": False})
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
    domain = lp.dkim_domain
    local, at, idomain = identity.rpartition("@")
    idomain = idomain.lower().rstrip(".")
    if not at or not identity.isascii() or any(c in identity for c in " ;\r\n\t") or not (
            idomain == domain or idomain.endswith("." + domain)):
        raise ConfigError(f"[{where}] signing_identity = {identity!r}: expected an address or "
                          f"\"@domain\" in the signing domain {domain or '(the list domain)'} "
                          f"or a subdomain of it (RFC 6376 §3.5 i=)")




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
            raise ConfigError(f"[lists.{address!r}]: the section name must be a list address "
                              f"like \"name@example.org\"")
        own = _key_files_under(_section(LIST_SCHEMA, section, f"lists.{address!r}", fill=False), base)
        merged = {**defaults, **own}
        _check_rotation(merged, f"lists.{address!r}")
        lists.append(_list_policy(merged, address.lower(), True))
        _check_identity(lists[-1], f"lists.{address!r}")
    metrics = sections["metrics"]
    if metrics["listen"] is not None and not metrics["allow_remote"] and not _loopback(metrics["listen"][0]):
        raise ConfigError(f"[metrics] listen = {data['metrics']['listen']!r}: not a loopback address; the "
                          f"metrics name every list and its traffic and are served without authentication: "
                          f"listen on 127.0.0.1 (scrape through a tunnel or proxy), "
                          f"or set allow_remote = true")
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
    sections["store"] = _store(sections["store"], data.get("store", {}), base)
    return Config(path=path, relay=relay, ingress=ingress, **sections)


def _store(store: dict[str, Any], given: dict[str, Any], base: str | None) -> dict[str, Any]:
    """[store]: url or path (not both); password_file, for a postgresql:// url only, relative
    to the configuration file's directory like the key files."""
    if store["url"] and "path" in given:
        raise ConfigError(f"[store] url = {store['url'].split('://')[0]}://... and path = {store['path']!r}: "
                          f"set one (path is the shorthand for url = \"sqlite:///PATH\")")
    if store["url"]:
        from relist.config.store_url import parse_url
        # path: the SQLite file the url names, "" for PostgreSQL (no file of relist's).
        store = {**store, "path": parse_url(store["url"]).path}
    password_file = store["password_file"]
    if password_file:
        if not store["url"].lower().startswith(("postgresql:", "postgres:")):
            raise ConfigError(f"[store] password_file = {password_file!r}: only for a postgresql:// url")
        if base is not None and not os.path.isabs(password_file):
            store = {**store, "password_file": os.path.join(base, password_file)}
    return store


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
