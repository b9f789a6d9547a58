"""What the SMTP edge costs, apart from the core: the floor under relist's CPU per message.

    .venv/bin/python bench/edge_floor.py [--messages 10000] [--rounds 3] [--size 4096]

Four servers relay the same smtp-source load (4 sessions, 1 recipient, the post
``bench_relay --resign`` sends) into one smtp-sink, each a single process on 127.0.0.1,
in interleaved rounds, on the event loop ``relist serve`` runs on (uvloop when it is
installed); the table gives the medians of CPU ms per message (utime+stime of the
server process) and messages per second:

* **lean**: a hand-written command loop over asyncio streams (no aiosmtpd), relaying
  with relist's own upstream client (``relist.edge.smtp_out.Connection``) as relist
  does: MAIL and the first RCPT pipelined when the client's RCPT comes, the client
  answered after the MTA, DATA and the content after the client's end of data.
* **aiosmtpd**: aiosmtpd's stock ``SMTP`` with a handler doing the same relaying.
* **relist's session**: relist's own ``SMTP`` subclass (``RelistSMTP``: DATA read in
  blocks, plain paths by a regex, the idle deadline, the allowed-clients check) with
  that handler: relist's SMTP edge without the core, the DNS, the store or the log.
* **relist, no key**: ``relist serve`` (one worker) with no list configured: the post
  is its list's at the defaults (verified, List-* fields, Sender, Received and
  Authentication-Results added, nothing signed): the edge, the store, the log line
  and the core without RSA.
* **relist re-sign**: ``relist serve`` (one worker) re-signing the post as
  ``bench_relay --resign`` does (verify, footer, prefix, DKIM, ARC seal).

lean's figure is what a message costs with relist's upstream client and about the
least SMTP server Python can have; relist's session minus lean is what aiosmtpd, as
relist uses it, adds (stock aiosmtpd reads DATA line by line and parses each path
with the email package: relist's session does neither); the relist servers minus
the session are the core, the DNS plan, the store and the log line
(``bench/profile_core.py`` gives the core's share).  Run by hand; the figures
go in the closing note.  Everything binds 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import ipaddress
import re
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_relay import (_override, free_port, measured, resign_setup, start_sink, tools_missing,  # noqa: E402
                         wait_port)
from relist.edge.smtp_out import Connection  # noqa: E402

_PATH = re.compile(r"^(?:FROM|TO):\s*<([^<>]*)>", re.IGNORECASE)
SERVERS = ("lean", "aiosmtpd", "relist's session")   # run by this script (--serve)


def _upstream(port: int) -> Connection:
    return Connection("127.0.0.1", port, timeout=60, connect_timeout=10, helo="edge-floor")


async def _rcpt(conn: Connection, state: dict, rcpt: str) -> str:
    """relist's order: MAIL goes up with the first RCPT; the client hears the MTA's reply."""
    if conn.writer is None:
        await conn.connect()
    if not state["rcpts"]:
        mail, reply = await conn.mail_rcpt(state["from"], [], rcpt)
        if reply is None:
            return mail.line()
    else:
        reply = await conn.rcpt(rcpt)
    if reply.code < 300:
        state["rcpts"].append(rcpt)
    return reply.line()


# -- lean: a command loop over asyncio streams ----------------------------------------------

def _signer(key_path: str | None, signs: int):
    """``content -> content`` with ``signs`` signatures made with the key as relist
    signs (``SigningKey.sign``: rsa-sha256 over a small hash input, here the content's
    SHA-256, hashed once as a body hash is), the first added as a field: the RSA work a
    relay making relist's signatures cannot avoid, and nothing else."""
    if not signs:
        return lambda content: content
    from relist.edge.key_files import read_private_key

    key = read_private_key(key_path)

    def sign(content: bytes) -> bytes:
        digest = hashlib.sha256(content).digest()
        made = [key.sign(digest) for _ in range(signs)]
        return b"X-Floor-Signature: " + base64.b64encode(made[0]) + b"\r\n" + content
    return sign


async def _lean_session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: int,
                        sign=lambda content: content) -> None:
    conn, state = _upstream(up), {"from": "", "rcpts": []}
    writer.write(b"220 edge-floor ESMTP\r\n")
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            verb, _, arg = line.decode("utf-8", "surrogateescape").rstrip("\r\n").partition(" ")
            verb = verb.upper()
            if verb in ("EHLO", "HELO"):
                reply = ("250-edge-floor\r\n250-PIPELINING\r\n250 8BITMIME" if verb == "EHLO"
                         else "250 edge-floor")
            elif verb == "MAIL":
                m = _PATH.match(arg)
                state = {"from": m.group(1) if m else "", "rcpts": []}
                reply = "250 2.1.0 OK"
            elif verb == "RCPT":
                m = _PATH.match(arg)
                reply = await _rcpt(conn, state, m.group(1) if m else "")
            elif verb == "DATA":
                writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                data = await reader.readuntil(b"\r\n.\r\n")
                content = data[:-3]
                if content.startswith(b"."):
                    content = content[1:]
                content = sign(content.replace(b"\r\n.", b"\r\n"))
                reply = (await conn.data(content))[0].line() if state["rcpts"] else "554 5.5.1 no recipients"
                state = {"from": "", "rcpts": []}
            elif verb == "RSET":
                if state["rcpts"]:
                    await conn.rset()
                state, reply = {"from": "", "rcpts": []}, "250 2.0.0 OK"
            elif verb == "NOOP":
                reply = "250 2.0.0 OK"
            elif verb == "QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                break
            else:
                reply = "502 5.5.2 not implemented"
            writer.write(reply.encode("utf-8") + b"\r\n")
    finally:
        conn.close()
        writer.close()


# -- aiosmtpd: its stock SMTP with a relaying handler ---------------------------------------

class _Relay:
    def __init__(self, up: int):
        self.up = up

    async def handle_MAIL(self, server, session, envelope, address, options):
        envelope.mail_from, envelope.mail_options = address, options
        session.state = {"from": address, "rcpts": []}
        if getattr(session, "conn", None) is None:
            session.conn = _upstream(self.up)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, options):
        reply = await _rcpt(session.conn, session.state, address)
        if reply.startswith("2"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server, session, envelope):
        return (await session.conn.data(envelope.content))[0].line()


class _SessionRelay(_Relay):
    """What ``RelistSMTP`` asks of relist's handler, beyond the hooks."""

    draining = False

    def __init__(self, up: int):
        super().__init__(up)
        self.allowed = [ipaddress.ip_network("127.0.0.0/8")]
        self.sessions: set = set()

    def session_closed(self, session) -> None:
        self.sessions.discard(session)
        conn = getattr(session.session, "conn", None)
        if conn is not None:
            conn.close()

    async def too_big(self, *args) -> None:
        pass


async def _serve(kind: str, port: int, up: int, sign=lambda content: content,
                 reuse_port: bool = False) -> None:
    loop = asyncio.get_running_loop()
    if kind == "lean":
        server = await asyncio.start_server(lambda r, w: _lean_session(r, w, up, sign), "127.0.0.1", port,
                                            limit=1 << 20, reuse_port=reuse_port)
    elif kind == "aiosmtpd":
        from aiosmtpd.smtp import SMTP
        handler = _Relay(up)
        server = await loop.create_server(lambda: SMTP(handler, decode_data=False, hostname="edge-floor"),
                                          "127.0.0.1", port)
    else:
        from relist.edge.smtp_session import RelistSMTP
        handler = _SessionRelay(up)

        def session():
            s = RelistSMTP(handler, hostname="edge-floor", data_size_limit=0, enable_SMTPUTF8=True, loop=loop)
            s.reply_wait = 660
            return s
        server = await loop.create_server(session, "127.0.0.1", port)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()


# -- the comparison -------------------------------------------------------------------------

def _slug(kind: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", kind)


def _start(kind: str, tmp: Path, port: int, sink_port: int, dns) -> subprocess.Popen:
    if kind in SERVERS:
        cmd = [sys.executable, __file__, "--serve", kind, "--port", str(port), "--upstream", str(sink_port)]
    else:
        base = (tmp / "resign.toml").read_text() if kind == "relist re-sign" else ""
        conf = tmp / f"{_slug(kind)}.toml"
        db = tmp / f"{_slug(kind)}.db"
        if db.exists():
            db.unlink()
        conf.write_text(_override(base, port, sink_port, db, 1, dns.nameserver, sign_once=False))
        cmd = [sys.executable, "-m", "relist", "serve", "-c", str(conf)]
    proc = subprocess.Popen(cmd, stderr=open(tmp / f"{_slug(kind)}.log", "a"))
    wait_port(port)
    return proc


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    # lean only, for compare_mtas.py --floor: RSA signatures a message, the key, and
    # several processes on one port.
    ap.add_argument("--signs", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--key", help=argparse.SUPPRESS)
    ap.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        from relist.server import _run     # the event loop relist serve runs on (uvloop if there)
        _run(_serve(args.serve, args.port, args.upstream, _signer(args.key, args.signs), args.reuse_port))
        return 0
    if tools_missing():
        return 2
    from relist.sandbox.dnsserver import DNSServer
    kinds = SERVERS + ("relist, no key", "relist re-sign")
    cpu: dict[str, list[float]] = {k: [] for k in kinds}
    rate: dict[str, list[float]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(prefix="relist-edge-floor-") as tmp_name:
        tmp = Path(tmp_name)
        config, zone, post = resign_setup(tmp, args.size)
        size = Path(post).stat().st_size
        (tmp / "resign.toml").write_text(config)
        sink_port = free_port()
        sink = start_sink(sink_port)
        dns = DNSServer(zone).start()
        load = argparse.Namespace(sessions=4, messages=args.messages, recipients=1, timeout=600,
                                  size=args.size, post_file=post)
        try:
            for rnd in range(1, args.rounds + 1):
                for kind in kinds:
                    port = free_port()
                    proc = _start(kind, tmp, port, sink_port, dns)
                    try:
                        took, used = measured(port, proc.pid, load)
                    finally:
                        proc.send_signal(signal.SIGTERM)
                        proc.wait(30)
                    cpu[kind].append(used * 1000 / args.messages)
                    rate[kind].append(args.messages / took)
                    print(f"round {rnd} {kind}: {rate[kind][-1]:.0f} msgs/s, {cpu[kind][-1]:.3f} ms/msg",
                          flush=True)
        finally:
            sink.terminate()
            sink.wait(10)
            dns.stop()
    print(f"\n{args.messages} messages of {size} bytes a run, "
          f"4 smtp-source sessions, one server process, medians of {args.rounds} interleaved rounds\n")
    print("| server | msgs/s | CPU ms/msg | more than the one above |")
    print("|---|---|---|---|")
    last = None
    for kind in kinds:
        c = statistics.median(cpu[kind])
        more = "" if last is None else f"{c - last:+.3f} ms"
        print(f"| {kind} | {statistics.median(rate[kind]):.0f} | {c:.3f} | {more} |")
        last = c
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
