"""Run relist: logging, the listening socket, worker processes, clean shutdown.

With ``[server] workers = N`` (0 = one per CPU) the parent binds the listening socket
and forks N workers that accept on it, each with its own event loop, upstream pool
and store writer: the CPU work (parsing, verification, signing) then uses every core.

Mailman keeps a few SMTP connections open for a long time, so which worker accepts
each one decides how the cores are shared: left to the kernel, all of them can land
on one worker while the other idles.  The workers publish their open connections in
a shared array (``Load``), and a worker accepts only while no other worker has fewer
(ties race).  A busier worker defers at most ``SPREAD_WAIT`` at a time, so a worker
whose loop is stuck delays a new client by that much at worst; a worker that exits
is retired from the array by the parent.

Stopping (SIGTERM or SIGINT): relist stops accepting, lets every transaction in flight
finish (up to ``[upstream] data_timeout``), answers everything else with 421 and
exits 0; a second signal (or that timeout) cuts what is left.  With several workers
the parent forwards the stop and says, in ``Control``, whether to drain or cut: a
worker that also got the signal itself (systemd's KillMode=control-group, Ctrl-C in
a terminal) does not take the two for a second signal.  Workers die with the parent
(``PR_SET_PDEATHSIG``: a SIGKILL of the parent becomes a SIGTERM, so they drain and
exit).  A worker that exits while relist runs is replaced, after a back-off that
grows while replacements keep failing; with every worker gone relist exits 1, so a
supervisor (systemd ``Restart=on-failure``) restarts it.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import mmap
import os
import select
import signal
import socket
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field

from relist.app import Relay
from relist.config import Config, check_signing
from relist.edge.dns import Resolver
from relist.edge.keys import load_configured_keys
from relist.edge.smtp_in import RelayHandler, RelistLMTP, RelistSMTP
from relist.edge.store import Store, connect

__all__ = ["Server", "ThreadedServer", "bind", "serve", "setup_logging", "to_journal"]

log = logging.getLogger("relist")


def to_journal(stream) -> bool:
    """True when ``stream`` is systemd-journald's stream for this service: systemd sets
    ``JOURNAL_STREAM`` to its ``DEVICE:INODE`` (systemd.exec(5)), compared with the
    stream's own, so a shell started from a unit that writes elsewhere is not fooled."""
    dev, _, ino = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def setup_logging(level: str = "info", stream=None) -> None:
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    # journald stamps each line with the time, "relist" and the main process id itself:
    # then only the (worker's) process id.
    fmt = "[%(process)d] %(message)s" if to_journal(stream) else "%(asctime)s relist[%(process)d]: %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger("relist")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    # aiosmtpd logs every command at INFO; keep it to warnings.
    logging.getLogger("mail.log").setLevel(logging.WARNING)


SPREAD_POLL = 0.002   # s between looks at the other workers' load
SPREAD_WAIT = 1.0     # s at most a busier worker leaves a new connection to the others
RETIRED = 1 << 62     # the load of a worker that has exited

RESPAWN_DELAYS = (1, 2, 5, 10, 30, 60)   # s before replacing a worker, by failures in a row
RESPAWN_STABLE = 60    # s a worker must run for its slot's failure count to start over
EXIT_GRACE = 15        # s a stopped process may take to exit before it is forced
CUT_GRACE = 30         # s past data_timeout before the parent kills workers still running


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


async def _readable(loop, sock: socket.socket) -> None:
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


def _counted(protocol, load: Load):
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


def bind(listen: tuple[str, int]) -> socket.socket:
    """The listening socket; an OSError that names the address when it cannot be had."""
    host, port = listen
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {where}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


@dataclass
class Server:
    """One process's relist: a listener plus its Relay."""

    config: Config
    use_store: bool = True
    load: Load | None = None    # set in a worker of several: accept by load (module doc)
    relay: Relay | None = None
    ingress: Relay | None = None
    servers: list = field(default_factory=list)
    sockets: list = field(default_factory=list)
    accepting: list = field(default_factory=list)
    handlers: list = field(default_factory=list)

    async def start(self, sock: socket.socket | None = None,
                    ingress_sock: socket.socket | None = None) -> None:
        """Listen for Mailman (egress) and, with an [ingress] section, for the MTA."""
        cfg = self.config
        keys = load_configured_keys(cfg.relay)   # refuses keys others can read
        store = Store(cfg.store["path"]) if self.use_store else None
        resolver = Resolver.from_config(cfg)
        self.relay = Relay(cfg, store=store, resolver=resolver, keys=keys)
        await self._listen(self.relay, RelistSMTP, "relist ESMTP", sock or bind(cfg.server["listen"]))
        if cfg.ingress is not None:
            self.ingress = Relay(cfg, leg="ingress", store=store, resolver=resolver, keys=keys)
            await self._listen(self.ingress, RelistLMTP, "relist LMTP",
                               ingress_sock or bind(cfg.ingress["listen"]))

    async def _listen(self, relay: Relay, protocol, ident: str, sock: socket.socket) -> None:
        cfg = self.config
        handler = RelayHandler(relay, cfg.server["allowed_clients"])
        self.handlers.append(handler)
        loop = asyncio.get_running_loop()

        if self.load is not None:
            protocol = _counted(protocol, self.load)

        def factory():
            return protocol(handler, hostname=cfg.hostname, ident=ident,
                            data_size_limit=cfg.server["max_message_size"],
                            enable_SMTPUTF8=True, loop=loop)
        self.sockets.append(sock)
        if self.load is None:
            self.servers.append(await loop.create_server(factory, sock=sock))
        else:
            self.accepting.append(asyncio.create_task(self._accept(sock, factory)))

    async def _accept(self, sock: socket.socket, factory) -> None:
        """Accept on ``sock`` shared with the other workers, leaving each new
        connection to a less busy worker when there is one (module doc).

        Every worker waits for the socket to become readable; then a worker that
        has more connections than another polls the shared load for at most
        ``SPREAD_WAIT``, so that the less busy one takes the connection, and only
        then tries a non-blocking accept (which finds nothing if another took it).
        """
        loop = asyncio.get_running_loop()
        last_warning = 0.0
        while True:
            await _readable(loop, sock)
            deadline = loop.time() + SPREAD_WAIT
            while self.load.busier() and loop.time() < deadline:
                await asyncio.sleep(SPREAD_POLL)
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                continue     # another worker took it
            except OSError as exc:   # e.g. EMFILE: the connection stays queued; try again
                if loop.time() - last_warning > 10:
                    last_warning = loop.time()
                    log.warning("accept failed: %s (retrying)", exc)
                await asyncio.sleep(0.1)
                continue
            handed = False
            try:
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await loop.connect_accepted_socket(factory, conn)
                handed = True
            except OSError as exc:   # the client went away already
                log.info("connection dropped while being accepted: %s", exc)
            except Exception:  # noqa: BLE001 - a bug; this worker must go on accepting
                log.exception("cannot serve an accepted connection")
            finally:
                if not handed:
                    conn.close()

    @property
    def port(self) -> int:
        return self.sockets[0].getsockname()[1]

    @property
    def ingress_port(self) -> int:
        return self.sockets[1].getsockname()[1]

    def counters(self) -> dict:
        """The egress leg's counters, with the pooled connections found stale."""
        if self.relay is None:
            return {}
        return {**self.relay.counters, "upstream_stale": self.relay.pool.stale}

    async def stop(self, timeout: float = 0, cut: asyncio.Event | None = None) -> bool:
        """Stop accepting, let the transactions in flight finish for up to ``timeout``
        seconds (or until ``cut`` is set), close every session (421 to those not in a
        transaction), then the upstream pools and the store.  False when transactions
        had to be cut."""
        for task in self.accepting:
            task.cancel()
        await asyncio.gather(*self.accepting, return_exceptions=True)
        for srv in self.servers:
            srv.close()
        if self.load is not None:       # accepting by hand: this worker's copy of the socket
            for sock in self.sockets:
                sock.close()
        in_flight = sum(handler.drain() for handler in self.handlers)
        drained = True
        if in_flight:
            log.info("stopping: %d transaction(s) in flight, waiting up to %g s for them",
                     in_flight, timeout)
        waiting = [asyncio.ensure_future(h.wait_closed()) for h in self.handlers]
        cutting = asyncio.ensure_future(cut.wait()) if cut is not None else None
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            pending = set(waiting)
            while pending and not (cutting and cutting.done()):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                done, _ = await asyncio.wait(pending | ({cutting} if cutting else set()),
                                             timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                pending -= done
            if pending:
                cut_ids = [rid for h in self.handlers for rid in h.cut()]
                if cut_ids:
                    drained = False
                    log.warning("stopping: cut %d transaction(s) in flight: %s",
                                len(cut_ids), " ".join(cut_ids))
                await asyncio.wait(waiting, timeout=5)
        finally:
            for fut in waiting + ([cutting] if cutting else []):
                fut.cancel()
        for srv in self.servers:
            await srv.wait_closed()
        for relay in (self.ingress, self.relay):
            if relay is not None:
                await relay.pool.close()
        if self.relay is not None and self.relay.store is not None:
            await asyncio.to_thread(self.relay.store.close)
        return drained


class ThreadedServer:
    """A Server on its own event loop in a thread (tests, ``relist demo``)."""

    def __init__(self, config: Config, use_store: bool = True):
        self.server = Server(config, use_store=use_store)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="relist")

    def start(self) -> ThreadedServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def relay(self) -> Relay:
        return self.server.relay

    @property
    def ingress_port(self) -> int:
        return self.server.ingress_port

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


async def _run_until_signal(config: Config, sock: socket.socket, ingress_sock,
                            load: Load | None = None, control: Control | None = None) -> None:
    server = Server(config, load=load)
    await server.start(sock, ingress_sock)
    if load is not None:
        log.info("worker %d accepting", load.slot)
    # Everything built so far (config, keys, imported modules) lives as long as the
    # process: keep it out of the cyclic collector's scans, and let the young
    # generation grow (each message allocates thousands of short-lived objects).
    gc.freeze()
    gc.set_threshold(20000, 20, 20)
    stopping, cut = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        # The parent's word decides (module doc); without one, a second signal cuts.
        intent = control.intent if control is not None else Control.RUN
        if intent == Control.CUT or (intent == Control.RUN and stopping.is_set()):
            if not cut.is_set():
                log.warning("stopping now (%s again): cutting the transactions in flight", sig.name)
            cut.set()
        stopping.set()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    await stopping.wait()
    timeout = config.upstream["data_timeout"]
    log.info("stopping: no new transactions; %s", server.counters())
    drained = await server.stop(timeout, cut)
    _exit_guard()
    log.info("stopped%s: %s", "" if drained else " (transactions cut)", server.counters())


def _exit_guard(seconds: float = EXIT_GRACE) -> None:
    """Exit in ``seconds`` even if the event loop's shutdown hangs (a task that does not
    end when cancelled must not keep a stopped relist alive)."""
    def force():
        log.error("stopped, but the process did not exit within %g s: forcing it", seconds)
        logging.shutdown()
        os._exit(1)
    timer = threading.Timer(seconds, force)
    timer.daemon = True
    timer.start()


def _run(coro) -> None:
    """asyncio.run on uvloop where available (libuv: about half the per-message event
    loop cost of the stdlib loop for relist's many small socket operations)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coro)


def serve(config: Config) -> int:
    """``relist serve``: run until SIGTERM/SIGINT."""
    setup_logging(config.log["level"])
    for warning in check_signing(config.relay):   # ConfigError (exit 2) for a list that cannot sign
        log.warning("%s", warning)
    # Fail before binding or forking: a missing or group/world-readable key file stops
    # relist with an error naming the file (KeyFileError is an OSError: exit 2).
    keys = load_configured_keys(config.relay)
    log.info("%d signing key(s) loaded", len(keys))
    # Create and migrate the store once, before the workers exist: they then open a
    # database that is already in WAL mode and current, and a store that cannot be
    # opened stops relist here with its reason (exit 2) instead of killing each worker.
    try:
        connect(config.store["path"]).close()
    except sqlite3.Error as exc:
        raise OSError(f"store {config.store['path']}: {exc}") from exc
    listen = config.server["listen"]
    sock = bind(listen)
    ingress_sock = bind(config.ingress["listen"]) if config.ingress is not None else None
    workers = config.server["workers"] or os.cpu_count() or 1
    log.info("listening on %s:%d, relaying to %s:%d, %d worker(s)", listen[0], listen[1],
             config.upstream["host"], config.upstream["port"], workers)
    if config.ingress is not None:
        (ihost, iport), (proto, dhost, dport) = config.ingress["listen"], config.ingress["deliver_to"]
        log.info("ingress: LMTP on %s:%d, delivering to %s:%s:%d", ihost, iport, proto, dhost, dport)
    if workers == 1:
        _run(_run_until_signal(config, sock, ingress_sock))
        return 0
    return _supervise(config, [s for s in (sock, ingress_sock) if s is not None], workers)


PR_SET_PDEATHSIG = 1
_WATCHED = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}


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


def _worker(config: Config, socks: list, load: Load, control: Control, slot: int,
            parent: int, wake: tuple[int, int], mask) -> None:
    """The child side of a fork: serve until stopped, then exit (never returns)."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for fd in wake:
            os.close(fd)
        for sig in _WATCHED:   # until the event loop installs its own handlers
            signal.signal(sig, signal.SIG_DFL)
        _die_with_parent(parent)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)   # what came meanwhile is delivered now
        load.slot = slot
        _run(_run_until_signal(config, socks[0], socks[1] if len(socks) > 1 else None, load, control))
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


def _supervise(config: Config, socks: list, workers: int) -> int:
    """The parent of ``workers`` worker processes (module doc): fork them, replace one
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
    data_timeout = config.upstream["data_timeout"]

    def spawn(slot: int) -> int:
        load.counts[slot] = 0
        # Blocked across the fork: the child sets its own handlers before any arrives.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)
        pid = os.fork()
        if pid == 0:
            _worker(config, socks, load, control, slot, parent, wake, mask)
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
                             "%s again cuts them", name, len(running), data_timeout, name)
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

