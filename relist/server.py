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
"""

from __future__ import annotations

import asyncio
import gc
import logging
import mmap
import os
import signal
import socket
import sqlite3
import sys
import threading
from dataclasses import dataclass, field

from relist.app import Relay
from relist.config import Config, check_signing
from relist.edge.dns import Resolver
from relist.edge.keys import load_configured_keys
from relist.edge.smtp_in import RelayHandler, RelistLMTP, RelistSMTP
from relist.edge.store import Store, connect

__all__ = ["Server", "ThreadedServer", "bind", "serve", "setup_logging"]

log = logging.getLogger("relist")


def setup_logging(level: str = "info", stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s relist[%(process)d]: %(message)s"))
    root = logging.getLogger("relist")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    # aiosmtpd logs every command at INFO; keep it to warnings.
    logging.getLogger("mail.log").setLevel(logging.WARNING)


SPREAD_POLL = 0.002   # s between looks at the other workers' load
SPREAD_WAIT = 1.0     # s at most a busier worker leaves a new connection to the others
RETIRED = 1 << 62     # the load of a worker that has exited


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


def bind(listen: tuple[str, int]) -> socket.socket:
    host, port = listen
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
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

    async def stop(self) -> None:
        for task in self.accepting:
            task.cancel()
        await asyncio.gather(*self.accepting, return_exceptions=True)
        for srv in self.servers:
            srv.close()
            await srv.wait_closed()
        for relay in (self.ingress, self.relay):
            if relay is not None:
                await relay.pool.close()
        if self.relay is not None and self.relay.store is not None:
            await asyncio.to_thread(self.relay.store.close)


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
                            load: Load | None = None) -> None:
    server = Server(config, load=load)
    await server.start(sock, ingress_sock)
    if load is not None:
        log.info("worker %d accepting", load.slot)
    # Everything built so far (config, keys, imported modules) lives as long as the
    # process: keep it out of the cyclic collector's scans, and let the young
    # generation grow (each message allocates thousands of short-lived objects).
    gc.freeze()
    gc.set_threshold(20000, 20, 20)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: %s", server.relay.counters)
    await server.stop()


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
    children = []
    load = Load(workers)
    for slot in range(workers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                load.slot = slot
                _run(_run_until_signal(config, sock, ingress_sock, load))
                code = 0
            except BaseException:   # a worker that dies says why, and exits non-zero
                log.exception("worker %d (pid %d) failed", slot, os.getpid())
            finally:
                logging.shutdown()
                os._exit(code)
        children.append(pid)

    stopping = False

    def forward(signum, _frame):
        nonlocal stopping
        stopping = True
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    running = {pid: slot for slot, pid in enumerate(children)}
    while running:
        try:
            pid, st = os.wait()
        except InterruptedError:
            continue
        except ChildProcessError:
            break
        slot = running.pop(pid, None)
        if slot is None:
            continue
        code = os.waitstatus_to_exitcode(st)
        status = status or code != 0
        load.retire(slot)   # never again the least busy: the others stop deferring to it
        if running and not stopping:
            log.error("worker %d (pid %d) exited with status %d; %d worker(s) still serving",
                      slot, pid, code, len(running))
    return int(status)

