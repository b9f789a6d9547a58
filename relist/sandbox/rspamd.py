"""An independent DKIM/SPF/DMARC/ARC receiver for the tests: Debian's rspamd on 127.0.0.1.

``Rspamd`` starts ``rspamd -f`` (Debian bookworm's 3.4) in a private temporary
directory with a configuration written from scratch -- not the distribution's
``/etc/rspamd`` -- so that only four checks run: the C ``dkim`` module and the Lua
``spf``, ``dmarc`` and ``arc`` plugins.  ``judge()`` posts a message to the normal
worker's ``/checkv2`` (stdlib ``http.client``; no ``rspamc``) with the SMTP envelope
in the ``IP``/``Helo``/``From``/``Rcpt`` headers and returns a ``Judgement``::

    with DNSServer(zone).start() as dns, Rspamd(nameserver=dns.nameserver) as rs:
        v = rs.judge(message, ip="127.0.0.1", helo="relay.lists.example.org",
                     mail_from="list-bounces@lists.example.org", rcpt="m01@members.example")
        assert v.dmarc == "pass" and not v.rejected

The configuration, piece by piece (see ``_config``):

* ``options.filters = "dkim"`` -- the only C module loaded (the distribution also
  loads chartable, regexp and fuzzy_check; fuzzy_check talks to rspamd.com).  Lua
  plugins (``/usr/share/rspamd/plugins``) load only when the config has a section
  named after them, so the ``spf``/``dmarc``/``arc`` sections below are what enables
  them: no RBLs, SURBL, maps, rspamd_update, fuzzy, redis or anything else that
  could reach out.  ``explicit_modules = []`` drops the default ``settings`` and
  ``bayes_expiry``; the ``lua`` rules file (``rules/rspamd.lua``: regexp rules,
  composites) is not loaded at all, and there is no controller, proxy or fuzzy
  worker, only one ``normal`` worker bound to 127.0.0.1 on a free port.  rspamd also
  forks an ``hs_helper`` (no socket); with ``disable_hyperscan`` it compiles nothing.
* ``check_local``/``check_authed = true``: the dkim, spf and dmarc code skips
  "local" senders, and 127.0.0.1 (our usual ``IP``) is local.  ``local_addrs = []``.
* ``options.dns``: ``nameserver = ["127.0.0.1:PORT"]`` -- rspamd parses it as an
  upstream ``host:port`` (default port 53), and when ``nameserver`` is set it never
  reads ``/etc/resolv.conf``; ``hosts = null`` stops it reading ``/etc/hosts``.  No
  failure cache.  Checked with strace: rspamd's only sockets are the worker's
  listener and UDP/TCP to the given nameserver (the TCP connect is rdns's fallback
  socket; our DNSServer is UDP-only); it opens neither resolv.conf nor hosts.
* Caches off, so a test may change a DNS record between two judgements:
  ``dkim_cache_size = 0`` (DKIM keys, also used by ARC), ``spf_cache_size = 0``;
  DMARC records are never cached and rspamd's resolver has no answer cache.
* ``dmarc.reporting.enabled = false``: reporting is the only part needing redis.
* ``arc``: verification only; ``sign_inbound``/``sign_local``/``sign_authenticated``
  off so ``ARC_SIGNED`` never looks for keys.  (``allowed_ids`` would be neater but
  3.4's ``register_symbol`` rejects the table the plugin passes.)
* ``url_tld``: the public suffix list is Debian's
  ``/usr/share/rspamd/effective_tld_names.dat`` plus the reserved TLDs
  ``example``, ``test``, ``invalid``, ``localhost`` (RFC 2606/6761).  DMARC's
  organisational domain is ``rspamd_util.get_tld()``; for a name under a suffix
  that is *not* in the list it returns the whole name, so without the extra
  entries ``news.poster.example`` would be its own organisational domain (no
  ``_dmarc.poster.example`` look-up, no relaxed alignment with ``d=poster.example``).
  ``poster.example`` itself works either way (its own ``_dmarc`` is always asked).
* ``hs_cache_dir``: rspamd compiles the ~9,600 suffixes into a hyperscan database
  at start-up, ~9 s of CPU.  The compiled database is cached (content-addressed
  ``*.hsmp`` files, written atomically) in a directory shared between runs,
  ``$TMPDIR/relist-rspamd-hs-<uid>`` by default (~90 MB), so later starts take
  ~0.4 s.  While rspamd is compiling, the start-up ``timeout`` (20 s) is extended,
  up to ``compile_timeout`` (120 s).  rspamd's main process removes ``*.hsmp``
  files it did not use when it exits, so two concurrent instances with different
  suffix lists only cost each other a recompile.
* ``dkim.time_jitter = 6h`` (Debian's value; the built-in default is 60 s).
  rspamd's only time checks on DKIM (and ARC) signatures: a ``t=`` more than
  ``time_jitter`` in the future, or an ``x=`` in the past, makes the signature
  unusable ("signature was made in future" / "signature has expired" in the log),
  and such a signature leaves *no* DKIM symbol at all.  An old ``t=`` is fine.

ARC: ``ARC_ALLOW``/``ARC_REJECT``/``ARC_INVALID`` report the chain, but DMARC is not
changed by a valid chain (that takes ``whitelisted_signers_map``, not set here), so
a list message that breaks the poster's DKIM is "reject" with ``arc == "pass"``.

Processes: ``start()`` runs ``rspamd -f -T -c CONFIG`` (foreground, no Jinja), waits
for ``GET /ping`` to answer ``pong`` and raises ``RspamdError`` with the log's tail
if rspamd exits or does not answer in time (a port taken between choosing it and
binding it is retried).  ``stop()`` sends SIGTERM to that PID (rspamd's main process
stops its workers), SIGKILL after ``stop_timeout``, then SIGKILL to any worker it
left, and removes the directory.  rspamd is exec'd through ``setpriv --pdeathsig
TERM`` (util-linux) when available, so its main process is terminated if the process
(strictly, the thread) that started it dies first; an ``atexit`` hook stops an
instance nobody stopped.

As root, rspamd refuses to run workers as root, so it gets ``-u _rspamd -g _rspamd``
(the Debian package's user) and the temporary directory and the hyperscan cache
directory are handed to that user; if the user does not exist, ``--insecure``.
Installing the package (``apt-get install rspamd``) enables ``rspamd.service``
(localhost:11332-11334 with the full config) and pulls ``redis-server`` as a
Recommends; where services start on install (not in a container whose policy-rc.d
forbids it) both run, but this instance shares no port, directory or socket with
them.
"""

from __future__ import annotations

import atexit
import contextlib
import grp
import http.client
import ipaddress
import itertools
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

__all__ = ["Judgement", "Rspamd", "RspamdError"]

SHAREDIR = Path("/usr/share/rspamd")
BINARIES = ("/usr/bin/rspamd", "/usr/sbin/rspamd")
RESERVED_SUFFIXES = ("example", "test", "invalid", "localhost")

# Symbol -> verdict, first match wins (a message gets at most one of each family).
_DMARC = (("DMARC_POLICY_REJECT", "reject"), ("DMARC_POLICY_QUARANTINE", "quarantine"),
          ("DMARC_POLICY_SOFTFAIL", "softfail"), ("DMARC_DNSFAIL", "error"), ("DMARC_BAD_POLICY", "error"),
          ("DMARC_POLICY_ALLOW", "pass"), ("DMARC_POLICY_ALLOW_WITH_FAILURES", "pass"), ("DMARC_NA", "none"))
_SPF = (("R_SPF_ALLOW", "pass"), ("R_SPF_FAIL", "fail"), ("R_SPF_SOFTFAIL", "softfail"),
        ("R_SPF_NEUTRAL", "neutral"), ("R_SPF_DNSFAIL", "temperror"), ("R_SPF_PERMFAIL", "permerror"),
        ("R_SPF_NA", "none"), ("SPF_UNKNOWN", "unknown"))
_ARC = (("ARC_ALLOW", "pass"), ("ARC_REJECT", "fail"), ("ARC_INVALID", "fail"), ("ARC_DNSFAIL", "temperror"),
        ("ARC_NA", "none"))
# DKIM_TRACE options are "domain:X", one per signature checked.
_DKIM_TRACE = {"+": "pass", "-": "fail", "?": "temperror", "~": "permerror"}


class RspamdError(RuntimeError):
    """rspamd did not start, died, or answered something unexpected."""


def _first(symbols: Mapping[str, object], table: tuple[tuple[str, str], ...], default: str) -> str:
    return next((verdict for name, verdict in table if name in symbols), default)


@dataclass(frozen=True)
class Judgement:
    """What rspamd concluded about one message.

    ``dmarc``: "pass", "reject", "quarantine", "softfail" (failed under p=none),
    "none" (no policy, or not evaluated) or "error" (DNS failure / bad record).
    ``dkim``: the (domain, result) pairs of the signatures checked, result "pass",
    "fail", "temperror" or "permerror" (rspamd reports a pair once, so two passing
    signatures of one domain give one pair); empty when unsigned.  ``spf``: "pass", "fail",
    "softfail", "neutral", "none", "temperror", "permerror".  ``arc``: "pass",
    "fail" (ARC_REJECT, or ARC_INVALID: a broken chain), "temperror" or "none".
    ``rejected``: DMARC says reject or quarantine.

    A DKIM-Signature rspamd cannot use at all -- malformed, ``t=`` more than
    ``time_jitter`` in the future, ``x=`` in the past -- leaves no DKIM symbol (not
    even R_DKIM_PERMFAIL): ``dkim`` is then empty although the message is signed.
    ``Rspamd.task_log(queue_id)`` shows why ("cannot parse DKIM signature: ...").
    """

    symbols: dict[str, list[str]] = field(hash=False)
    dmarc: str
    dkim: tuple[tuple[str, str], ...]
    dkim_pass_domains: frozenset[str]
    spf: str
    arc: str
    rejected: bool
    action: str = "no action"
    queue_id: str = ""
    raw: dict = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def from_result(cls, result: Mapping) -> Judgement:
        reported = result.get("symbols") or {}
        symbols = {name: list(sym.get("options") or []) for name, sym in reported.items()}
        dkim = []
        for opt in symbols.get("DKIM_TRACE", []):
            domain, _, code = opt.rpartition(":")
            dkim.append((domain.lower(), _DKIM_TRACE.get(code, code)))
        dkim.sort()
        dmarc = _first(symbols, _DMARC, "none")
        return cls(symbols=symbols, dmarc=dmarc, dkim=tuple(dkim),
                   dkim_pass_domains=frozenset(d for d, r in dkim if r == "pass"),
                   spf=_first(symbols, _SPF, "none"), arc=_first(symbols, _ARC, "none"),
                   rejected=dmarc in ("reject", "quarantine"), action=str(result.get("action", "")),
                   queue_id=str(result.get("queue_id", "")), raw=dict(result))


def _binary() -> str | None:
    found = shutil.which("rspamd")
    return found or next((b for b in BINARIES if os.access(b, os.X_OK)), None)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ucl(value: str) -> str:
    """A UCL string literal (JSON quoting is valid UCL)."""
    return json.dumps(value)


def _nameserver(value: str) -> str:
    """``value`` checked as rspamd's upstream syntax: ``IP``, ``IP:port`` or ``[IPv6]:port``."""
    host, port = value, "53"
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest.removeprefix(":") or port
    elif value.count(":") == 1:
        host, port = value.split(":")
    try:
        ipaddress.ip_address(host)
        if not 0 < int(port) < 65536:
            raise ValueError(port)
    except ValueError:
        raise ValueError(f"nameserver must be an IP address with an optional port, not {value!r}") from None
    return value


_NOISE = ("is enabled but has not been configured", "disabling unconfigured lua module")


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent PID, start time) of ``pid`` from /proc, or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return int(fields[1]), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _children(pid: int) -> dict[int, int]:
    """rspamd's workers: {PID: start time} of the processes whose parent is ``pid``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) and stat[0] == pid:
            found[int(entry.name)] = stat[1]
    return found


class Rspamd:
    """One private rspamd instance; a context manager (``start()``/``stop()``)."""

    stop_timeout = 20.0  # seconds between SIGTERM and SIGKILL

    def __init__(self, nameserver: str, *, timeout: float = 20.0, compile_timeout: float = 120.0,
                 dns_timeout: float = 1.0, dns_retransmits: int = 2, time_jitter: str = "6h",
                 extra_suffixes: Iterable[str] = RESERVED_SUFFIXES,
                 hs_cache_dir: str | os.PathLike | None = None, user: str = "_rspamd",
                 sharedir: str | os.PathLike = SHAREDIR, log_level: str = "info"):
        """``nameserver``: "IP[:port]", the only DNS server rspamd asks.  ``timeout``: for
        start-up (``compile_timeout`` caps it while a cold hyperscan cache is built).
        ``time_jitter``: how far in the future a DKIM ``t=`` may be (UCL time, "6h").
        ``extra_suffixes``: added to the public suffix list.  ``hs_cache_dir``: the
        shared hyperscan cache (handed to ``user`` when we are root)."""
        self.nameserver = _nameserver(nameserver)
        self.timeout = timeout
        self.compile_timeout = compile_timeout
        self.dns_timeout = dns_timeout
        self.dns_retransmits = dns_retransmits
        self.time_jitter = time_jitter
        self.extra_suffixes = tuple(extra_suffixes)
        self.hs_cache_dir = Path(hs_cache_dir) if hs_cache_dir else None
        self.user = user
        self.sharedir = Path(sharedir)
        self.log_level = log_level
        self.port = 0
        self.workdir: Path | None = None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen | None = None
        self._ids = itertools.count(1)

    @staticmethod
    def available() -> bool:
        """True when rspamd and its Lua plugins are installed (Debian: ``apt-get install rspamd``)."""
        return _binary() is not None and (SHAREDIR / "plugins" / "dmarc.lua").is_file()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        binary = _binary()
        if binary is None:
            raise RspamdError("rspamd is not installed (apt-get install rspamd)")
        self.workdir = Path(tempfile.mkdtemp(prefix="relist-rspamd-"))
        atexit.register(self.stop)  # a forgotten stop(); rspamd itself also dies with us (PDEATHSIG)
        try:
            owner = self._owner()
            hs_dir = self._hs_dir(owner)
            (self.workdir / "tld.dat").write_bytes(
                (self.sharedir / "effective_tld_names.dat").read_bytes()
                + b"\n// relist: reserved TLDs (RFC 2606, RFC 6761)\n"
                + "".join(s + "\n" for s in self.extra_suffixes).encode())
            for attempt in range(3):  # the free port may be taken before rspamd binds it
                if attempt:
                    for name in ("rspamd.log", "stdout.log"):
                        with contextlib.suppress(OSError):
                            (self.workdir / name).rename(self.workdir / f"{name}.{attempt}")
                self.port = _free_port()
                conf = self.workdir / "rspamd.conf"
                conf.write_text(self._config(hs_dir))
                if owner is not None:
                    for path in (self.workdir, *self.workdir.iterdir()):
                        os.chown(path, owner.pw_uid, owner.pw_gid)
                if self._launch(binary, conf, owner):
                    return self
        except BaseException:
            self.stop()
            raise
        self.stop()
        raise RspamdError("rspamd could not bind a free port on 127.0.0.1")

    def _launch(self, binary: str, conf: Path, owner: pwd.struct_passwd | None) -> bool:
        cmd = [binary, "-f", "-T", "-c", str(conf)]
        if setpriv := shutil.which("setpriv"):  # util-linux: SIGTERM rspamd if we die without stop()
            cmd = [setpriv, "--pdeathsig", "TERM", "--", *cmd]
        if os.geteuid() == 0 and owner is not None:
            cmd += ["-u", owner.pw_name, "-g", grp.getgrgid(owner.pw_gid).gr_name]
        elif os.geteuid() == 0:
            cmd += ["--insecure"]
        began = time.monotonic()
        with open(self.workdir / "stdout.log", "ab") as out:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                          cwd=self.workdir)
        deadline = began + self.timeout
        while True:
            now = time.monotonic()
            if self._compiling():  # a cold hyperscan cache: ``timeout`` counts from the end of it
                deadline = min(max(deadline, now + self.timeout), began + self.compile_timeout)
            if now > deadline:
                break
            if self._proc.poll() is not None:
                if "Address already in use" in self.log_tail():
                    self._proc = None
                    return False
                raise RspamdError(f"rspamd exited with status {self._proc.returncode} while starting:\n"
                                  + self.log_tail())
            if self._ping():
                self.startup_seconds = time.monotonic() - began
                return True
            time.sleep(0.05)
        raise RspamdError(f"rspamd did not answer /ping on 127.0.0.1:{self.port} within "
                          f"{time.monotonic() - began:.1f} s:\n" + self.log_tail())

    def _compiling(self) -> bool:
        """rspamd is compiling the suffix list into a hyperscan database (cold cache)."""
        with contextlib.suppress(OSError):
            log = (self.workdir / "rspamd.log").read_text(errors="replace")
            return "TLD suffixes; it might take a long time" in log and "url match suffixes" not in log
        return False

    def _ping(self) -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
            try:
                conn.request("GET", "/ping")
                return conn.getresponse().read().strip() == b"pong"
            finally:
                conn.close()
        except OSError:
            return False

    def stop(self) -> None:
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            workers = _children(proc.pid)
            proc.terminate()
            try:
                proc.wait(timeout=self.stop_timeout)  # the main process stops its workers, then exits
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for pid, started in workers.items():  # left only if the main process had to be killed
                if (stat := _stat(pid)) and stat[1] == started:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- judging -----------------------------------------------------------------------------

    def judge(self, message: bytes, *, ip: str = "127.0.0.1", helo: str | None = None,
              mail_from: str | None = None, rcpt: str | Iterable[str] | None = None,
              hostname: str | None = None, timeout: float = 30.0) -> Judgement:
        """Scan ``message`` as if received from ``ip`` with this envelope; see ``Judgement``."""
        queue_id = f"relist-{next(self._ids)}"
        result = self.check(message, ip=ip, helo=helo, mail_from=mail_from, rcpt=rcpt, hostname=hostname,
                            timeout=timeout, queue_id=queue_id)
        return Judgement.from_result({**result, "queue_id": queue_id})

    def check(self, message: bytes, *, ip: str = "127.0.0.1", helo: str | None = None,
              mail_from: str | None = None, rcpt: str | Iterable[str] | None = None,
              hostname: str | None = None, timeout: float = 30.0, queue_id: str | None = None) -> dict:
        """POST /checkv2 and return rspamd's JSON reply as is."""
        if self._proc is None or self._proc.poll() is not None:
            raise RspamdError("rspamd is not running" + (":\n" + self.log_tail() if self.workdir else ""))
        headers = [("IP", ip), ("Queue-Id", queue_id or f"relist-{next(self._ids)}")]
        if helo is not None:
            headers.append(("Helo", helo))
        if mail_from is not None:
            headers.append(("From", mail_from or "<>"))
        for r in [rcpt] if isinstance(rcpt, str) else (rcpt or ()):
            headers.append(("Rcpt", r))
        if hostname is not None:
            headers.append(("Hostname", hostname))
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.putrequest("POST", "/checkv2", skip_accept_encoding=True)
            for name, value in headers:
                conn.putheader(name, value)
            conn.putheader("Content-Length", str(len(message)))
            conn.endheaders(message)
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise RspamdError(f"/checkv2 answered {response.status}: {body[:500]!r}")
        result = json.loads(body)
        if "error" in result:
            raise RspamdError(f"/checkv2 error: {result['error']}")
        return result

    def task_log(self, queue_id: str, wait: float = 1.0) -> list[str]:
        """rspamd's log lines for the scan with this ``Queue-Id`` (``Judgement.queue_id``).

        Each scan logs under a random tag; its summary line names the queue id.
        """
        deadline = time.monotonic() + wait
        while True:
            lines = (self.workdir / "rspamd.log").read_text(errors="replace").splitlines()
            tag = next((line.split("; ", 1)[0].rsplit(" ", 1)[-1] for line in lines
                        if f"qid: <{queue_id}>" in line or f"queue-id: <{queue_id}>" in line), None)
            if tag is not None or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        return [line for line in lines if tag is not None and f" {tag}; " in line]

    def log_tail(self, lines: int = 40) -> str:
        """The end of rspamd's log and of its stdout/stderr, for error messages."""
        if self.workdir is None:
            return ""
        parts = []
        for name in ("stdout.log", "rspamd.log"):
            with contextlib.suppress(OSError):
                text = [line for line in (self.workdir / name).read_text(errors="replace").splitlines()
                        if not any(noise in line for noise in _NOISE)]
                if text:
                    parts.append(f"--- {name} ---\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)

    # -- configuration -----------------------------------------------------------------------

    def _owner(self) -> pwd.struct_passwd | None:
        """The user the workers run as when we are root (None: ourselves, or --insecure)."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(self.user)
        except KeyError:
            return None

    def _hs_dir(self, owner: pwd.struct_passwd | None) -> Path:
        """The shared hyperscan cache, or a private one if the shared path is not ours."""
        path = self.hs_cache_dir or Path(tempfile.gettempdir()) / f"relist-rspamd-hs-{os.geteuid()}"
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700, parents=True)
        st = path.lstat()
        allowed = {os.geteuid()} | ({owner.pw_uid} if owner else set())
        if not path.is_dir() or path.is_symlink() or st.st_uid not in allowed:
            path = self.workdir / "hs"  # someone else's: do not trust it, compile privately
            path.mkdir()
        if owner is not None and st.st_uid != owner.pw_uid:
            os.chown(path, owner.pw_uid, owner.pw_gid)  # workers write small caches of their own
        return path

    def _config(self, hs_dir: Path) -> str:
        work = self.workdir
        return f"""\
# Written by relist.sandbox.rspamd: dkim, spf, dmarc and arc only; loopback only.
options {{
  filters = "dkim";
  explicit_modules = [];
  check_local = true;
  check_authed = true;
  local_addrs = [];
  disable_hyperscan = true;
  url_tld = {_ucl(str(work / "tld.dat"))};
  hs_cache_dir = {_ucl(str(hs_dir))};
  cache_file = {_ucl(str(work / "symbols.cache"))};
  pidfile = {_ucl(str(work / "rspamd.pid"))};
  tempdir = {_ucl(str(work))};
  task_timeout = 30s;
  dns {{
    nameserver = [{_ucl(self.nameserver)}];
    timeout = {self.dns_timeout:g}s;
    retransmits = {self.dns_retransmits:d};
    sockets = 4;
    hosts = null;
  }}
}}
logging {{
  type = "file";
  filename = {_ucl(str(work / "rspamd.log"))};
  level = {_ucl(self.log_level)};
}}
worker "normal" {{
  bind_socket = "127.0.0.1:{self.port:d}";
  count = 1;
}}
modules {{
  path = {_ucl(str(self.sharedir / "plugins"))};
}}
dkim {{
  dkim_cache_size = 0;
  sign_cache_size = 0;
  time_jitter = {self.time_jitter};
}}
spf {{
  spf_cache_size = 0;
  min_cache_ttl = 0;
}}
dmarc {{
  reporting {{ enabled = false; }}
}}
arc {{
  sign_inbound = false;
  sign_local = false;
  sign_authenticated = false;
  use_redis = false;
}}
"""
