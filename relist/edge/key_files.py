"""Key files and key DNS lookups: the IO half of ``relist.core.sign.signing_keys``.

* Private key files are created with mode 0600 from the first byte (``os.open`` with
  ``O_CREAT | O_EXCL`` and mode 0600: never world-readable, never overwritten).
* Loading refuses a file that group or others may read, naming the file; errors never
  contain key material.
* ``lookup_txt`` asks one TXT name for ``relist keys test`` through the relay's
  resolver (``relist.edge.dns``), so the tool sees DNS exactly as the relay does.
"""

from __future__ import annotations

import asyncio

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import dkim
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from relist.core.facts import Answer, Question, Status
from relist.edge.dns import Resolver
from relist.core.policy import ListPolicy, RelayPolicy
from relist.core.sign import (
    KeyStatus, RecordCheck, SigningKey, check_record, load_private_key, private_pem, sign_dkim,
)
from relist.core.sign.signing_keys import ED25519, RSA, BadKey
from relist.edge.secret_files import NotRegularFile, OpenToOthers, read_owner_only

__all__ = [
    "BadKey", "ConfiguredKey", "KEY_SLOTS", "KeyFileError", "check_published", "configured_keys",
    "generate", "load_configured_keys", "lookup_txt", "read_configured_keys", "read_private_key",
    "write_private_key",
    "wrong_slot",
]

MIN_GENERATE_BITS = 1024   # RFC 8301 §3.2: signers MUST use at least 1024 bits (SHOULD 2048)
_SLOT_OF = {"rsa": "private_key", "ed25519": "ed25519_private_key"}   # ConfiguredKey.algorithm -> setting


class KeyFileError(OSError):
    """A key file cannot be used; the message names the file (``relist`` exits 2)."""


def generate(algorithm: str = "rsa", bits: int = 2048) -> SigningKey:
    """A new private key: ``rsa`` (``bits``, e = 65537) or ``ed25519`` (RFC 8463)."""
    if algorithm == "rsa":
        if bits < MIN_GENERATE_BITS:
            raise ValueError(f"--bits {bits}: RSA keys must have at least {MIN_GENERATE_BITS} bits "
                             "(RFC 8301 §3.2)")
        return SigningKey(RSA, rsa.generate_private_key(public_exponent=65537, key_size=bits))
    if algorithm == "ed25519":
        return SigningKey(ED25519, ed25519.Ed25519PrivateKey.generate())
    raise ValueError(f"algorithm {algorithm!r}: expected rsa or ed25519")


def write_private_key(path: str | os.PathLike, key: SigningKey) -> Path:
    """Create ``path`` (mode 0600, must not exist) holding ``key`` as PKCS#8 PEM."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path}: already exists; not overwriting a key file") from None
    try:
        os.fchmod(fd, 0o600)   # the umask can only have removed bits; make it exact
        os.write(fd, private_pem(key))
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def read_private_key(path: str | os.PathLike) -> SigningKey:
    """Load a key file, refusing one readable by group or others (checked on the open file)."""
    path = Path(path)
    try:
        data = read_owner_only(path)
    except FileNotFoundError:
        raise KeyFileError(f"{path}: private key file not found") from None
    except PermissionError:
        raise KeyFileError(f"{path}: private key file not readable by this user") from None
    except NotRegularFile:
        raise KeyFileError(f"{path}: not a regular file") from None
    except OpenToOthers as exc:
        raise KeyFileError(f"{path}: private key file is accessible by group or others "
                           f"(mode {exc.mode:04o}); run: chmod 600 {path}") from None
    try:
        return load_private_key(data, str(path))
    except BadKey as exc:
        raise KeyFileError(str(exc)) from None


def lookup_txt(name: str, nameservers: Iterable[tuple[str, int]] = (), timeout: float = 5) -> Answer:
    """TXT records at ``name`` as a three-valued ``Answer``, asked through the relay's own
    resolver (``relist.edge.dns``).  ``nameservers`` empty: /etc/resolv.conf."""
    return asyncio.run(Resolver(list(nameservers), timeout).answer(Question.txt(name)))


_TEST_MESSAGE = (b"From: relist key test <postmaster@%s>\r\nTo: <postmaster@%s>\r\n"
                 b"Subject: relist keys test\r\nDate: %s\r\nMessage-ID: <keytest@%s>\r\n\r\n"
                 b"relist keys test: sign and verify with the published key.\r\n")


def check_published(key: SigningKey, domain: str, selector: str, answer: Answer,
             min_bits: int = 1024, now: datetime | None = None) -> RecordCheck:
    """Compare the DNS ``answer`` with ``key``; when the record matches, also sign a test
    message and verify it with dkimpy against the published record."""
    if answer.status is Status.ABSENT:
        return RecordCheck(KeyStatus.NOT_PUBLISHED, answer.detail or "no record")
    if answer.status is Status.TEMPERROR:
        return RecordCheck(KeyStatus.DNS_ERROR, answer.detail or "lookup failed")
    check = check_record(key, answer.records, min_bits)
    if check.status not in (KeyStatus.OK, KeyStatus.TESTING):
        return check
    now = now or datetime.now(timezone.utc)
    d = domain.encode("ascii")
    msg = _TEST_MESSAGE % (d, d, now.strftime("%a, %d %b %Y %H:%M:%S +0000").encode(), d)
    field = sign_dkim(msg, domain=domain, selector=selector, key=key, now=now)

    def dnsfunc(name, timeout=5):
        return answer.records[0]
    try:
        verified = dkim.verify(field + msg, dnsfunc=dnsfunc, minkey=min(min_bits, 1024))
    except dkim.DKIMException:
        verified = False
    if not verified:
        return RecordCheck(KeyStatus.SIGN_FAILED, "a test signature did not verify with the published record")
    return check


@dataclass(frozen=True, slots=True)
class ConfiguredKey:
    """One key named in the configuration."""

    where: str          # "lists.'a@b'" or "list_defaults"
    domain: str         # d=
    selector: str
    path: str
    algorithm: str      # "rsa" | "ed25519" (what the key setting is for)
    previous: bool = False              # previous_selector/previous_private_key (rotation)
    until: datetime | None = None       # for a previous key: rotation_overlap_until

    @property
    def setting(self) -> str:
        """The key file setting it comes from."""
        return "previous_private_key" if self.previous else _SLOT_OF[self.algorithm]

    @property
    def role(self) -> str:
        """How ``relist keys`` describes it: "" or "previous key, signs until ..."."""
        if not self.previous:
            return ""
        return f"previous key, signs until {self.until:%Y-%m-%dT%H:%M:%SZ}" if self.until else "previous key"


def _keys_of(lp: ListPolicy, where: str) -> list[ConfiguredKey]:
    domain = lp.dkim_domain
    out = []
    for sel, path, alg in ((lp.selector, lp.private_key, "rsa"),
                           (lp.ed25519_selector, lp.ed25519_private_key, "ed25519")):
        if sel or path:
            out.append(ConfiguredKey(where, domain, sel, path, alg))
    if lp.previous_selector or lp.previous_private_key:
        out.append(ConfiguredKey(where, domain, lp.previous_selector, lp.previous_private_key, "rsa",
                                 previous=True, until=lp.rotation_overlap_until))
    return out


def configured_keys(relay: RelayPolicy) -> list[ConfiguredKey]:
    """Every key in ``[lists."ADDRESS"]`` and ``[list_defaults]``, duplicates removed.

    ``[list_defaults]`` keys without ``signing_domain`` sign under each list's own domain,
    so they appear once per configured list (and with domain "" for the rest).
    """
    out: list[ConfiguredKey] = []
    seen: set[tuple[str, str, str]] = set()
    for lp in relay.lists:
        for k in _keys_of(lp, f"lists.{lp.address!r}"):
            if (k.domain, k.selector, k.path) not in seen:
                seen.add((k.domain, k.selector, k.path))
                out.append(k)
    for k in _keys_of(relay.defaults, "list_defaults"):
        if (k.domain, k.selector, k.path) not in seen and not any(
                (o.selector, o.path) == (k.selector, k.path) for o in out):
            seen.add((k.domain, k.selector, k.path))
            out.append(k)
    return out



# The key file settings and the algorithm each one signs with: the RSA slots sign
# a=rsa-sha256 under an RSA selector and the ARC seal; the Ed25519 slot a=ed25519-sha256.
KEY_SLOTS = (("private_key", RSA), ("ed25519_private_key", ED25519), ("previous_private_key", RSA))


def wrong_slot(key: SigningKey, setting: str, path: str = "") -> str | None:
    """Why ``key`` cannot be used in the setting ``setting`` (``private_key``,
    ``ed25519_private_key``, ``previous_private_key``), or None when it can."""
    expected = dict(KEY_SLOTS)[setting]
    if key.algorithm == expected:
        return None
    where = path or key.source
    if expected == RSA:
        return (f"{setting} = {where!r}: this file holds an Ed25519 key, but {setting} takes an "
                f"RSA key (rsa-sha256 under an RSA selector; the ARC seal uses it too): put it in "
                f"ed25519_private_key with ed25519_selector, or give {setting} an RSA key")
    return (f"{setting} = {where!r}: this file holds an RSA key, but {setting} takes an Ed25519 "
            f"key (ed25519-sha256, RFC 8463): put it in private_key with selector, or give "
            f"{setting} an Ed25519 key (relist keys generate --algorithm ed25519)")


def load_configured_keys(relay: RelayPolicy) -> dict[str, SigningKey]:
    """Every configured key file loaded once, by path (for ``relist serve`` at start-up).

    Raises ``KeyFileError`` naming the first file that is missing, unreadable, not a key,
    or accessible by group or others, and the first setting given a key of the other
    algorithm (an Ed25519 key in ``private_key`` or ``previous_private_key``, an RSA key
    in ``ed25519_private_key``), naming the section, the setting and the file, so the
    server does not start half-configured.
    A configured ``previous_private_key`` is loaded (and checked) like the others, even
    after its overlap: remove the ``previous_*`` lines before deleting the file.
    The values go into ``Context.keys``; a ``sign`` step looks keys up by the list's path.
    """
    keys, problems = read_configured_keys(relay)
    if problems:
        raise problems[0]
    return keys


def read_configured_keys(relay: RelayPolicy) -> tuple[dict[str, SigningKey], list[KeyFileError]]:
    """The offline key check shared by ``relist serve`` (``load_configured_keys``, which
    stops at the first problem) and ``relist check-config`` (which reports them all):
    every configured key file read once, by path, and a ``KeyFileError`` for each file
    that cannot be read and each setting given a key of the other algorithm (its
    ``key_path``: the key file's path)."""
    keys: dict[str, SigningKey] = {}
    problems: list[KeyFileError] = []
    failed: set[str] = set()
    sections = [(relay.defaults, "list_defaults")] + [(lp, f"lists.{lp.address!r}") for lp in relay.lists]
    for lp, where in sections:
        for setting, _ in KEY_SLOTS:
            path = getattr(lp, setting)
            if not path or path in failed:
                continue
            if path not in keys:
                try:
                    keys[path] = read_private_key(path)
                except KeyFileError as exc:
                    failed.add(path)
                    exc.key_path = path
                    problems.append(exc)
                    continue
            problem = wrong_slot(keys[path], setting, path)
            if problem:
                exc = KeyFileError(f"[{where}] {problem}")
                exc.key_path = path
                problems.append(exc)
    return keys, problems
