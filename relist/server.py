"""Run relist: logging, the listening sockets, the event loop, clean shutdown.

With ``[server] workers = N`` (0 = one per CPU) the parent binds the listening socket
and forks N workers that accept on it (relist.workers: the shared ``Load`` that spreads
connections, the supervision that replaces a worker that exits), each with its own
event loop, upstream pool and store writer: the CPU work (parsing, verification,
signing) then uses every core.

Stopping (SIGTERM or SIGINT): relist stops accepting, lets every transaction in flight
finish (up to ``[upstream] data_timeout``), answers everything else with 421 and
exits 0; a second signal (or that timeout) cuts what is left.  With several workers
the parent forwards the stop and says, in ``Control``, whether to drain or cut.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass, field

from relist.app import Relay
from relist.config import Config, check_signing
from relist import BUILD
from relist.edge import metrics
from relist.edge.dns import Resolver
from relist.edge.key_files import load_configured_keys
from relist.edge.smtp_in import RelayHandler
from relist.edge.smtp_session import RelistLMTP, RelistSMTP
from relist.edge.store import check as check_store
from relist.edge.store import open_store, redact
from relist.workers import (DRAIN_GRACE, EXIT_GRACE, SPREAD_POLL, SPREAD_WAIT, Control, Load, counted,
                            pin_mmap_threshold, readable, supervise)

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
    fmt = ("[%(process)d] %(message)s" if to_journal(stream)
           else "%(asctime)s relist[%(process)d]: %(message)s")
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger("relist")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    # aiosmtpd logs every command at INFO; keep it to warnings.
    logging.getLogger("mail.log").setLevel(logging.WARNING)


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
        store = open_store(cfg.store) if self.use_store else None
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
            protocol = counted(protocol, self.load)

        def factory():
            session = protocol(handler, hostname=cfg.hostname, ident=ident,
                               data_size_limit=cfg.server["max_message_size"],
                               enable_SMTPUTF8=True, loop=loop)
            session.reply_wait = cfg.upstream["data_timeout"] + 60
            return session
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
            await readable(loop, sock)
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
    timeout = config.upstream["data_timeout"] + DRAIN_GRACE
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
    # No log format of relist's names the caller's file or line: logging need not look
    # for it (sys._getframe) on every record, half the cost of a line (the logging
    # HOWTO's "Optimization").
    logging._srcfile = None
    pin_mmap_threshold()   # a large post's memory goes back when it is done (relist.workers)
    for warning in check_signing(config.relay):   # ConfigError (exit 2) for a list that cannot sign
        log.warning("%s", warning)
    # Fail before binding or forking: a missing or group/world-readable key file stops
    # relist with an error naming the file (KeyFileError is an OSError: exit 2).
    keys = load_configured_keys(config.relay)
    log.info("%d signing key(s) loaded", len(keys))
    # Which core runs, compiled or the Python sources, and why (relist.core_build).
    (log.warning if BUILD.unused else log.info)("core: %s", BUILD.describe())
    # Create and migrate the store once, before the workers exist: they then open a
    # database that is already current (SQLite: in WAL mode), and a store that cannot be
    # opened stops relist here with its reason (exit 2) instead of killing each worker.
    # A PostgreSQL server that cannot be reached costs records, not mail: relist starts
    # and its writers migrate when it answers (relist.edge.store.check).
    unreachable = check_store(config.store)
    if unreachable:
        log.error("store %s unreachable at start-up (%s): relaying without records until it answers",
                  config.store["url"] and redact(config.store["url"]), unreachable)
    listen = config.server["listen"]
    sock = bind(listen)
    ingress_sock = bind(config.ingress["listen"]) if config.ingress is not None else None
    workers = config.server["workers"] or os.cpu_count() or 1
    log.info("listening on %s:%d, relaying to %s:%d, %d worker(s)", listen[0], listen[1],
             config.upstream["host"], config.upstream["port"], workers)
    if config.ingress is not None:
        (ihost, iport), (proto, dhost, dport) = config.ingress["listen"], config.ingress["deliver_to"]
        log.info("ingress: LMTP on %s:%d, delivering to %s:%s:%d", ihost, iport, proto, dhost, dport)
    # Metrics ([metrics] listen): before the fork, so that every worker counts into the
    # directory the exposition served from this process reads (relist.edge.metrics).
    exporter = metrics.start(config.metrics["listen"]) if config.metrics["listen"] else None
    try:
        if workers == 1:
            _run(_run_until_signal(config, sock, ingress_sock))
            return 0
        socks = [s for s in (sock, ingress_sock) if s is not None]

        def child(load: Load, control: Control) -> None:   # a worker's life, after the fork
            _run(_run_until_signal(config, sock, ingress_sock, load, control))
        return supervise(child, socks, workers, config.upstream["data_timeout"])
    finally:
        if exporter is not None:
            exporter.stop()


