"""GNU Mailman 3 core on loopback, for the end-to-end test (issue 15).

* :func:`ensure_venv` installs ``mailman==3.3.10`` (with the dependency versions
  ``fixtures/mailman`` was captured with) into its own virtual environment, once: a
  cache directory keyed by the version, ``.cache/mailman-venv/3.3.10`` by default
  (``$RELIST_MAILMAN_VENV`` overrides the path).  A ``.complete`` marker is written
  last, so a build that was cut off is redone; a lock keeps two builds apart.
* :class:`Mailman` runs one private instance: its own var directory and
  ``mailman.cfg``, started and stopped with its own ``mailman -C CFG start|stop``
  (by PID when that fails), its REST API on loopback (:meth:`Mailman.rest`), and a
  look into its queues (:meth:`Mailman.queue_files`).

What capture.py learned applies here: the master daemon inherits stdout/stderr, so
they go to a file, never a pipe; as root Mailman needs ``--run-as-root``.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from relist.sandbox.procs import alive

__all__ = ["CONSTRAINTS", "MAILMAN_VERSION", "Mailman", "MailmanError", "default_venv", "ensure_venv",
           "site_cfg"]

MAILMAN_VERSION = "3.3.10"
# The versions fixtures/mailman/README.md records for the capture ("Full package list"):
# newer releases of Mailman's dependencies must not change what the test runs.
CONSTRAINTS = """\
aiosmtpd==1.4.6
alembic==1.20.1
atpublic==9.0.0
attrs==26.1.0
authheaders==0.16.3
authres==1.2.0
certifi==2026.10.18
cffi==2.1.1
charset-normalizer==3.5.2
click==8.5.1
cryptography==50.0.2
dkimpy==1.1.8
dnspython==2.9.2
falcon==4.4.0
flufl.bounce==6.0.0
flufl.i18n==8.0.0
flufl.lock==10.0.0
gunicorn==27.0.1
idna==3.20
lazr.config==4.0.0
lazr.delegates==4.0.0
Mako==1.4.3
MarkupSafe==3.0.4
passlib==1.7.4
psutil==7.2.2
publicsuffix2==2.20191221
pycparser==3.12
python-dateutil==4.0.0
requests==2.34.2
SQLAlchemy==2.1.9
typing_extensions==4.16.0
tzdata==2026.6
urllib3==2.8.0
zope.component==7.1
zope.configuration==7.1
zope.event==6.2
zope.hookable==8.4
zope.i18nmessageid==8.4
zope.interface==8.7
zope.schema==8.1
"""
ROOT = Path(__file__).resolve().parent.parent.parent
REST_USER, REST_PASS = "restadmin", "restpass"


class MailmanError(RuntimeError):
    pass


def default_venv() -> Path:
    env = os.environ.get("RELIST_MAILMAN_VENV")
    return Path(env) if env else ROOT / ".cache" / "mailman-venv" / MAILMAN_VERSION


def ensure_venv(venv: Path | None = None, timeout: float = 900) -> Path:
    """The virtualenv with Mailman ``MAILMAN_VERSION``, built with pip on first use."""
    venv = Path(venv or default_venv())
    marker = venv / ".complete"
    if marker.exists():
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return venv
        if venv.exists():
            shutil.rmtree(venv)
        python = getattr(sys, "_base_executable", None) or sys.executable
        log = venv.parent / f"{venv.name}.build.log"
        with open(log, "w") as out:
            steps = [[python, "-m", "venv", str(venv)]]
            constraints = venv.parent / f"{venv.name}.constraints.txt"
            constraints.write_text(CONSTRAINTS)
            steps.append([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-c", str(constraints),
                          f"mailman=={MAILMAN_VERSION}"])
            for step in steps:
                r = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
                if r.returncode != 0:
                    raise MailmanError(f"building the Mailman venv failed ({' '.join(step)}): see {log}")
        probe = subprocess.run([str(venv / "bin" / "mailman"), "--version"], capture_output=True, text=True,
                               timeout=120)
        if MAILMAN_VERSION not in probe.stdout:
            raise MailmanError(f"{venv}: mailman --version said {probe.stdout!r} {probe.stderr!r}")
        marker.write_text(probe.stdout)
    return venv


GUNICORN_CFG = """\
[gunicorn]
# Mailman's own settings (mailman.config.gunicorn) ...
graceful_timeout = 30
timeout = 360
# ... and no control socket: gunicorn would put it in ~/.gunicorn/ (Mailman's master
# drops HOME from the runners' environment), one path for every instance.
control_socket_disable = true
"""


def site_cfg(base: Path, rest_port: int, *, retry_sleep: str = "1s") -> str:
    """The mailman.cfg sections a test site needs besides the guide's ([mta], [ARC]):
    its own var directory (``base``/var, as :class:`Mailman` has it), the REST API on
    loopback, short retry and bounce periods."""
    var = Path(base) / "var"
    return f"""\
[mailman]
layout: private
site_owner: site-owner@owner.example
default_language: en

[paths.private]
var_dir: {var}

[webservice]
hostname: 127.0.0.1
port: {rest_port}
admin_user: {REST_USER}
admin_pass: {REST_PASS}
configuration: {Path(base) / "gunicorn.cfg"}

[runner.retry]
sleep_time: {retry_sleep}

[runner.bounces]
# Mailman's default is 2m: a DSN would wait that long in the bounces queue.
sleep_time: 1s

"""


def wait_port(port: int, timeout: float = 120, alive=None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            if alive is not None and not alive():
                raise MailmanError(f"port {port}: the process that should listen there is gone")
            time.sleep(0.2)
    raise MailmanError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class Mailman:
    """One Mailman instance under ``base``: ``cfg_text`` is the whole mailman.cfg
    (``site_cfg(base, ...)`` plus the site's own sections).  ``env`` is added to the
    ``mailman`` command's environment; Mailman's master passes only a few variables on
    to its runners (not HOME, not MAIL_CONFIG: a site's ``postmap`` options go in its
    ``[mta] configuration`` file)."""

    def __init__(self, venv: Path, base: Path, cfg_text: str, *, rest_port: int, lmtp_port: int,
                 env: dict | None = None):
        self.venv = Path(venv)
        self.base = Path(base)
        self.cfg = self.base / "mailman.cfg"
        self.var = self.base / "var"
        self.cfg_text = cfg_text
        self.rest_port = rest_port
        self.lmtp_port = lmtp_port
        self.env = dict(os.environ, **(env or {}))
        self.log = self.base / "mailman-cli.log"
        self.started = False

    # -- control ---------------------------------------------------------------------

    def cmd(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        root = ["--run-as-root"] if os.geteuid() == 0 else []
        with open(self.log, "a") as fp:
            r = subprocess.run([str(self.venv / "bin" / "mailman"), *root, "-C", str(self.cfg), *args],
                               stdout=fp, stderr=fp, stdin=subprocess.DEVNULL, timeout=timeout, env=self.env)
        if check and r.returncode != 0:
            raise MailmanError(f"mailman {' '.join(args)} exited {r.returncode}: {self.tail()}")
        return r

    def start(self, timeout: float = 180) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.var.mkdir(exist_ok=True)
        self.cfg.write_text(self.cfg_text)
        (self.base / "gunicorn.cfg").write_text(GUNICORN_CFG)
        self.cmd("start", "--force")
        self.started = True
        begun = time.monotonic()

        def master_up() -> bool:
            # The master writes its pid file a moment after `mailman start` returns.
            return self.master_pid() is not None or time.monotonic() - begun < 30
        try:
            wait_port(self.rest_port, timeout, alive=master_up)
            wait_port(self.lmtp_port, timeout, alive=master_up)
        except MailmanError as exc:
            raise MailmanError(f"{exc}\n{self.tail()}") from None

    def master_pid(self) -> int | None:
        try:
            pid = int((self.var / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if alive(pid) else None

    def stop(self, timeout: float = 60) -> None:
        """``mailman stop``, then the master and its runners by PID if they linger."""
        if not self.started:
            return
        pid = self.master_pid()
        children = _children(pid) if pid else []
        try:
            self.cmd("stop", check=False, timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        end = time.monotonic() + timeout
        while time.monotonic() < end and any(alive(p) for p in [pid, *children] if p):
            time.sleep(0.2)
        for p in [pid, *children]:
            if p and alive(p):
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.started = False

    def tail(self, n: int = 4000) -> str:
        parts = []
        for path in [self.log, *sorted((self.var / "logs").glob("*.log"))]:
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            if text.strip():
                parts.append(f"--- {path.name}\n{text[-n:]}")
        return "\n".join(parts)

    # -- REST ------------------------------------------------------------------------

    def rest(self, method: str, path: str, data: dict | None = None, timeout: float = 60):
        """Call Mailman's REST API (``/3.1/...``); returns the decoded JSON or None."""
        url = f"http://127.0.0.1:{self.rest_port}/3.1/{path.lstrip('/')}"
        body = json.dumps(data).encode() if data is not None else None
        req = urllib.request.Request(url, data=body, method=method)
        token = base64.b64encode(f"{REST_USER}:{REST_PASS}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        if body is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                text = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500]
            raise MailmanError(f"REST {method} {path}: {exc.code} {detail!r}\n{self.tail()}") from None
        return json.loads(text) if text.strip() else None

    def create_list(self, address: str, settings: dict, members: list[str],
                    templates: dict[str, str] | None = None) -> str:
        """Create ``address`` with ``settings`` (its REST config) and subscribe
        ``members`` pre-verified, silently; returns the list id.  ``templates``:
        template name -> text, written to the list's template directory (an empty
        text turns Mailman's default off, e.g. its footer)."""
        domain = address.split("@", 1)[1]
        if not any(d["mail_host"] == domain for d in (self.rest("GET", "domains") or {}).get("entries", [])):
            self.rest("POST", "domains", {"mail_host": domain})
        self.rest("POST", "lists", {"fqdn_listname": address})
        list_id = address.replace("@", ".")
        self.rest("PATCH", f"lists/{list_id}/config", {"send_welcome_message": False,
                                                       "admin_notify_mchanges": False, **settings})
        for name, text in (templates or {}).items():
            d = self.var / "templates" / "lists" / list_id / "en"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{name}.txt").write_text(text)
        for member in members:
            self.rest("POST", "members", {"list_id": list_id, "subscriber": member, "pre_verified": True,
                                          "pre_confirmed": True, "pre_approved": True})
        # Mailman adds a list's archiver rows the first time anything asks for them
        # (ListArchiverSet), without a lock: two runners doing that for a new list's
        # first posts at once leave duplicate rows, and from then on every post of the
        # list is shunted (sqlalchemy MultipleResultsFound in the decorate handler).
        # Asking once here, in one REST request, makes them before any post arrives.
        self.rest("GET", f"lists/{list_id}/archivers")
        return list_id

    # -- queues ----------------------------------------------------------------------

    def queue_files(self) -> dict[str, list[str]]:
        """Queue name -> the files in it (``.pck`` entries, and ``.bak`` being worked)."""
        qdir = self.var / "queue"
        if not qdir.is_dir():
            return {}
        return {q.name: sorted(f.name for f in q.iterdir()) for q in qdir.iterdir() if q.is_dir()}

    def busy(self) -> int:
        """Messages still in a queue a runner will work on (not shunt/bad)."""
        return sum(len(v) for k, v in self.queue_files().items() if k not in ("shunt", "bad"))

    def shunted(self) -> list[str]:
        q = self.queue_files()
        return [f"{k}/{f}" for k in ("shunt", "bad") for f in q.get(k, [])]


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fp:
                out += [int(x) for x in fp.read().split()]
    except OSError:
        pass
    return out
