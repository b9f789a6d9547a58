"""The pre-fork worker model: the parent forks ``[server] workers`` processes that
accept on the listening sockets it bound, replaces one that exits, and forwards a stop.

Mailman keeps a few SMTP connections open for a long time, so which worker accepts
each one decides how the cores are shared: left to the kernel, all of them can land
on one worker while the other idles.  The workers publish their open connections in
a shared array (``Load``), and a worker accepts only while no other worker has fewer
(ties race).  A busier worker defers at most ``SPREAD_WAIT`` at a time, so a worker
whose loop is stuck delays a new client by that much at worst; a worker that exits
is retired from the array by the parent.

With several workers the parent forwards a stop and says, in ``Control``, whether to
drain or cut: a worker that also got the signal itself (systemd's
KillMode=control-group, Ctrl-C in a terminal) does not take the two for a second
signal.  Workers die with the parent (``PR_SET_PDEATHSIG``: a SIGKILL of the parent
becomes a SIGTERM, so they drain and exit).  A worker that exits while relist runs is
replaced, after a back-off that grows while replacements keep failing; with every
worker gone the parent returns 1, so a supervisor (systemd ``Restart=on-failure``)
restarts relist.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
import select
import signal
import socket
import sys
import time
from typing import Callable

from relist.edge import metrics

__all__ = ["CUT_GRACE", "DRAIN_GRACE", "EXIT_GRACE", "SPREAD_POLL", "SPREAD_WAIT", "Control", "Load",
           "counted", "readable", "supervise"]

log = logging.getLogger("relist")


SPREAD_POLL = 0.002   # s between looks at the other workers' load
SPREAD_WAIT = 1.0     # s at most a busier worker leaves a new connection to the others
RETIRED = 1 << 62     # the load of a worker that has exited

RESPAWN_DELAYS = (1, 2, 5, 10, 30, 60)   # s before replacing a worker, by failures in a row
RESPAWN_STABLE = 60    # s a worker must run for its slot's failure count to start over
EXIT_GRACE = 15        # s a stopped process may take to exit before it is forced
CUT_GRACE = 30         # s past data_timeout before the parent kills workers still running
# s past data_timeout a worker's drain waits: a transaction waiting for the MTA's final
# reply when the stop came times out within data_timeout, and its own 451 must reach
# the client before the drain cuts (both clocks started within milliseconds).
DRAIN_GRACE = 2


class Load:
    """Open client connections per worker, in memory shared across the fork."""

    def __init__(self, workers: int):
        self._mem = mmap.mmap(-1, 8 * workers)   # anonymous, MAP_SHARED: seen by every child
        self.counts = memoryview(self._mem).cast("q")
        self.slot = 0

    def add(self, delta: int) -> None:
        self.counts[self.slot] += delta

    def retire(self, slot: int) -> None:
        """``slot``'s worker has exited: it never counts as the least busy again."""
        self.counts[slot] = RETIRED

    def busier(self) -> bool:
        """True while another worker has fewer open connections than this one."""
        mine = self.counts[self.slot]
        return any(n < mine for i, n in enumerate(self.counts) if i != self.slot)


async def readable(loop, sock: socket.socket) -> None:
    """Until ``sock`` has a connection waiting (for this worker or another)."""
    ready = loop.create_future()

    def wake():
        if not ready.done():
            ready.set_result(None)
    loop.add_reader(sock.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())


def counted(protocol, load: Load):
    """``protocol`` that keeps ``load`` up to date."""
    class Counted(protocol):
        def connection_made(self, transport):
            load.add(1)
            super().connection_made(transport)

        def connection_lost(self, error):
            load.add(-1)
            super().connection_lost(error)
    Counted.__name__ = protocol.__name__
    return Counted


class Control:
    """What the parent asks of its workers, in memory shared across the fork: a worker
    reads it when a stop signal comes (module doc)."""

    RUN, DRAIN, CUT = 0, 1, 2

    def __init__(self):
        self._mem = mmap.mmap(-1, 8)
        self._value = memoryview(self._mem).cast("q")

    @property
    def intent(self) -> int:
        return self._value[0]

    @intent.setter
    def intent(self, value: int) -> None:
        self._value[0] = value


PR_SET_PDEATHSIG = 1
_WATCHED = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3      # glibc's mallopt parameters
MMAP_THRESHOLD = 256 * 1024
TRIM_THRESHOLD = 32 * 1024 * 1024


def pin_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Have glibc's malloc serve every block of ``threshold`` bytes or more by its own
    mmap, given back to the system when freed, and keep it so.  Left to itself, glibc
    raises the threshold to the size of each large block freed (up to 32 MiB): after
    one large post, the copies of the next come from the heap, which is not given
    back while anything above them lives, and posts relayed at once then cost a
    worker more than the sum of each (bench/bench_memory.py: 229 MiB against 204 for
    three 25 MiB posts).  The heap's trim threshold, which glibc would otherwise leave
    at 128 KiB once the mmap threshold is set, goes to 32 MiB: at 128 KiB the heap was
    given back and grown again around each small message, 0.6 ms of CPU per message
    (bench/bench_relay.py pass-through: 1.5 -> 2.2 ms).  Called before the fork; the
    workers inherit it.  Not done when ``MALLOC_MMAP_THRESHOLD_``,
    ``MALLOC_TRIM_THRESHOLD_`` or a malloc tunable in ``GLIBC_TUNABLES`` is set (the
    administrator's choice), under a preloaded jemalloc/tcmalloc/mimalloc, or off
    glibc.  True when the thresholds were set."""
    env = os.environ
    if (not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in env
            or "MALLOC_TRIM_THRESHOLD_" in env or "malloc" in env.get("GLIBC_TUNABLES", "")
            or any(name in env.get("LD_PRELOAD", "") for name in ("jemalloc", "tcmalloc", "mimalloc"))):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):   # not glibc (musl has no mallopt)
        return False
    return mallopt(M_MMAP_THRESHOLD, threshold) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1


def _die_with_parent(parent: int) -> None:
    """Have the kernel send this worker SIGTERM when the parent exits (Linux's
    PR_SET_PDEATHSIG), so that a SIGKILL of the parent leaves no orphan serving."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as exc:
        log.warning("worker %d will not stop with its parent: prctl(PR_SET_PDEATHSIG): %s",
                    os.getpid(), exc)
        return
    if os.getppid() != parent:   # the parent died before prctl: as if it had told us
        os.kill(os.getpid(), signal.SIGTERM)


def _worker(child: Callable[[Load, Control], None], load: Load, control: Control, slot: int,
            parent: int, wake: tuple[int, int], mask) -> None:
    """The child side of a fork: serve until stopped, then exit (never returns)."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for fd in wake:
            os.close(fd)
        metrics.forked()   # the parent serves the metrics; this worker only counts
        for sig in _WATCHED:   # until the event loop installs its own handlers
            signal.signal(sig, signal.SIG_DFL)
        _die_with_parent(parent)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)   # what came meanwhile is delivered now
        load.slot = slot
        child(load, control)
        code = 0
    except BaseException:   # a worker that dies says why, and exits non-zero
        log.exception("worker %d (pid %d) failed", slot, os.getpid())
    finally:
        logging.shutdown()
        os._exit(code)


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"


def supervise(child: Callable[[Load, Control], None], socks: list, workers: int, data_timeout: float) -> int:
    """The parent of ``workers`` worker processes (module doc), each running
    ``child(load, control)`` (it serves ``socks``): fork them, replace one
    that exits (with back-off), forward a stop.  0 after a requested stop in which every
    worker exited 0; 1 when every worker is gone, or one failed while stopping."""
    load, control, parent = Load(workers), Control(), os.getpid()
    wake = os.pipe()    # signal.set_wakeup_fd: each signal's number, one byte
    for fd in wake:
        os.set_blocking(fd, False)
    for sig in _WATCHED:
        signal.signal(sig, lambda *_: None)   # the numbers arrive through the pipe
    signal.set_wakeup_fd(wake[1], warn_on_full_buffer=False)
    running: dict[int, tuple[int, float]] = {}    # pid -> (slot, started)
    failures = [0] * workers                      # per slot: exits in a row
    due: dict[int, float] = {}                    # slot -> when its replacement starts

    def spawn(slot: int) -> int:
        load.counts[slot] = 0
        # Blocked across the fork: the child sets its own handlers before any arrives.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)
        pid = os.fork()
        if pid == 0:
            _worker(child, load, control, slot, parent, wake, mask)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        running[pid] = (slot, time.monotonic())
        return pid

    def signal_all(sig: int) -> None:
        for pid in running:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    stopping = False
    kill_at: float | None = None
    status = 0
    try:
        for slot in range(workers):
            spawn(slot)
        while running or (due and not stopping):
            now = time.monotonic()
            wakeups = ([kill_at] if kill_at else []) + ([] if stopping else list(due.values()))
            select.select([wake[0]], [], [], max(0.0, min(wakeups) - now) if wakeups else None)
            try:
                received = os.read(wake[0], 512)
            except BlockingIOError:
                received = b""
            for signum in received:
                if signum not in (signal.SIGTERM, signal.SIGINT):
                    continue
                name = signal.Signals(signum).name
                if not stopping:
                    stopping, kill_at = True, time.monotonic() + data_timeout + CUT_GRACE
                    due.clear()
                    control.intent = Control.DRAIN
                    for sock in socks:
                        sock.close()
                    log.info("stopping (%s): %d worker(s) finish the transactions in flight (up to %g s); "
                             "%s again cuts them", name, len(running), data_timeout + DRAIN_GRACE, name)
                elif control.intent != Control.CUT:
                    control.intent = Control.CUT
                    log.warning("stopping now (%s again): workers cut the transactions in flight", name)
                signal_all(signal.SIGTERM)
            while running:
                try:
                    pid, st = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    running.clear()
                    break
                if pid == 0:
                    break
                if pid not in running:
                    continue
                slot, started = running.pop(pid)
                code = os.waitstatus_to_exitcode(st)
                metrics.process_dead(pid)
                load.retire(slot)   # never again the least busy: the others stop deferring to it
                if stopping:
                    if code != 0:
                        status = 1
                        log.warning("worker %d (pid %d) exited with %s while stopping",
                                    slot, pid, _exit_text(code))
                    continue
                lived = time.monotonic() - started
                failures[slot] = 1 if lived >= RESPAWN_STABLE else failures[slot] + 1
                if not running:
                    log.error("worker %d (pid %d) exited with %s after %.0f s; no worker is left: "
                              "relist exits (status 1)", slot, pid, _exit_text(code), lived)
                    return 1
                delay = RESPAWN_DELAYS[min(failures[slot], len(RESPAWN_DELAYS)) - 1]
                due[slot] = time.monotonic() + delay
                log.error("worker %d (pid %d) exited with %s after %.0f s; %d worker(s) still serving; "
                          "replacing it in %d s", slot, pid, _exit_text(code), lived, len(running), delay)
            if kill_at is not None and running and time.monotonic() >= kill_at:
                log.error("%d worker(s) still running %g s after the stop: killing them",
                          len(running), data_timeout + CUT_GRACE)
                signal_all(signal.SIGKILL)
                status, kill_at = 1, None
            if not stopping:
                for slot, when in sorted(due.items()):
                    if when <= time.monotonic():
                        del due[slot]
                        log.info("worker %d replaced (pid %d)", slot, spawn(slot))
        log.info("stopped (status %d)", status)
        return status
    finally:
        signal.set_wakeup_fd(-1)
        for fd in wake:
            os.close(fd)
        for sock in socks:
            sock.close()
