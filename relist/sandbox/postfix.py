"""A private Postfix instance on loopback, for the end-to-end test (issue 15).

``postfix -c DIR`` with its own configuration directory, queue directory and data
directory under one base directory: it never touches the system's Postfix (no
/etc/postfix/main.cf is read or written; the instance is started and stopped with
its own ``postfix -c DIR start|stop``).  The caller gives the site's ``main.cf`` and
``master.cf`` lines (docs/deployment.md's snippets); this module adds what any
instance needs: the directories, ``inet_interfaces = 127.0.0.1``, a log file
(``maillog_file``, read by :meth:`Postfix.log`), and the internal services of
``master.cf`` (cleanup, qmgr, smtp, lmtp ...).

Postfix must run as root here (it drops to ``mail_owner`` itself), as in CI.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from relist.sandbox.procs import alive

__all__ = ["POSTFIX", "Postfix", "PostfixError", "available", "base_main_cf"]

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
POSTCONF = shutil.which("postconf") or "/usr/sbin/postconf"

# Postfix's internal services, as in its stock master.cf (no chroot: a private
# instance has no chroot tree).  The inet listeners come from the caller.
INTERNAL_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
    -o syslog_name=postfix/$service_name
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixError(RuntimeError):
    pass


def available() -> bool:
    """Postfix is installed and this process may run a private instance (root)."""
    return os.path.exists(POSTFIX) and os.geteuid() == 0


def base_main_cf(base: Path, *, hostname: str = "mx.test") -> str:
    """What any private instance under ``base`` needs in its main.cf."""
    return f"""\
# private instance (relist.sandbox.postfix): everything under {base}
compatibility_level = 3.6
queue_directory = {base}/queue
data_directory = {base}/data
maillog_file = {base}/maillog
maillog_file_prefixes = {base}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = {hostname}
mydomain = test
myorigin = $myhostname
mydestination =
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
smtpd_banner = $myhostname ESMTP
biff = no
smtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native
"""


class Postfix:
    """``base``: an empty directory (mode 0755: Postfix's unprivileged processes must
    reach their queue and data directories).  ``main_cf``/``master_cf``: the text of
    the instance's configuration (see :func:`base_main_cf`); the internal services are
    appended to ``master_cf``."""

    def __init__(self, base: Path, main_cf: str, master_cf: str):
        self.base = Path(base)
        self.config_dir = self.base / "etc"
        self.main_cf = main_cf
        self.master_cf = master_cf
        self.running = False

    # -- files -----------------------------------------------------------------------

    def write(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        for sub in ("queue", "data"):
            (self.base / sub).mkdir(exist_ok=True)
        shutil.chown(self.base / "data", user=self.postconf("mail_owner", default=True))
        (self.config_dir / "main.cf").write_text(self.main_cf)
        (self.config_dir / "master.cf").write_text(self.master_cf.rstrip("\n") + "\n\n" + INTERNAL_SERVICES)
        (self.base / "maillog").touch()

    def postconf(self, name: str, default: bool = False) -> str:
        args = [POSTCONF, "-h"] + (["-d"] if default else ["-c", str(self.config_dir)]) + [name]
        out = subprocess.run(args, capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise PostfixError(f"postconf {name}: {out.stderr.strip()}")
        return out.stdout.strip()

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([POSTFIX, "-c", str(self.config_dir), *args], capture_output=True,
                              text=True, timeout=timeout, env=self._env())

    def _env(self) -> dict:
        env = dict(os.environ)
        env["MAIL_CONFIG"] = str(self.config_dir)
        return env

    # -- control ---------------------------------------------------------------------

    def check(self) -> str:
        """``postfix -c DIR check``: warnings are returned, errors raise."""
        out = self._run("check")
        text = out.stdout + out.stderr
        if out.returncode != 0 or "fatal" in text:
            raise PostfixError(f"postfix check failed ({out.returncode}):\n{text}{self.log()[-3000:]}")
        return text

    def start(self) -> None:
        out = self._run("start")
        if out.returncode != 0:
            raise PostfixError(f"postfix start failed ({out.returncode}):\n{out.stdout}{out.stderr}"
                               f"{self.log()[-3000:]}")
        self.running = True

    def reload(self) -> None:
        out = self._run("reload")
        if out.returncode != 0:
            raise PostfixError(f"postfix reload failed:\n{out.stdout}{out.stderr}")

    def set_master_cf(self, master_cf: str) -> None:
        """Replace the caller's part of master.cf and reload (e.g. to stop one listener)."""
        self.master_cf = master_cf
        (self.config_dir / "master.cf").write_text(master_cf.rstrip("\n") + "\n\n" + INTERNAL_SERVICES)
        self.reload()

    def pid(self) -> int | None:
        try:
            return int((self.base / "queue" / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self, timeout: float = 30) -> None:
        """``postfix -c DIR stop``; the master process by its PID if that fails."""
        if not self.running and self.pid() is None:
            return
        pid = self.pid()
        try:
            self._run("stop", timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        end = time.monotonic() + timeout
        while pid is not None and alive(pid) and time.monotonic() < end:
            time.sleep(0.1)
        if pid is not None and alive(pid):
            os.kill(pid, 9)
        self.running = False

    def postmap(self, path: Path | str, kind: str = "hash") -> None:
        out = subprocess.run([shutil.which("postmap") or "/usr/sbin/postmap", "-c", str(self.config_dir),
                              f"{kind}:{path}"], capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise PostfixError(f"postmap {path}: {out.stderr}")

    def query(self, key: str, table: str) -> str | None:
        """``postmap -q KEY TABLE`` (the guide's check of the transport)."""
        out = subprocess.run([shutil.which("postmap") or "/usr/sbin/postmap", "-c", str(self.config_dir),
                              "-q", key, table], capture_output=True, text=True, timeout=30)
        return out.stdout.strip() if out.returncode == 0 else None

    def queue_ids(self) -> list[str]:
        """Queue ids of messages still in the queue (``postqueue -j``)."""
        out = subprocess.run([shutil.which("postqueue") or "/usr/sbin/postqueue", "-c", str(self.config_dir),
                              "-j"], capture_output=True, text=True, timeout=30)
        return re.findall(r'"queue_id"\s*:\s*"([0-9A-Za-z]+)"', out.stdout)

    def log(self) -> str:
        try:
            return (self.base / "maillog").read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self):
        self.write()
        self.check()
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


