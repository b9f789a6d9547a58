"""relist's whole re-sign pipeline beside Postfix + OpenDKIM and amavisd-new, in one run (issue 17's table).

    .venv/bin/python bench/compare_mtas.py [--messages 1000] [--rounds 3] [--sizes 4096,65536]
                                           [--recipients 1,10] [--sessions 4] [--workers 2]
                                           [--milter unix|inet] [--amavis-sink unix|inet]
                                           [--workload grid|mailman|both] [--posts 10] [--floor]

Run by hand, as root (a private Postfix instance drops privileges itself, and so does
amavisd; not part of the test suite).  Same load generator for all, Postfix's
``smtp-source`` with ``--sessions`` sessions, into one ``smtp-sink``, everything on
127.0.0.1:

* relist: ``relist serve`` (``--workers``) in front of the sink, the whole re-sign
  pipeline of ``bench_relay.py --resign``: verify the poster's DKIM and DMARC over a
  loopback DNS server, Subject prefix, footer, strip, From munging, DKIM rsa-sha256 and
  an ARC seal, ``sign_once`` off (every transaction is signed);
* Postfix + OpenDKIM: a private Postfix (``postfix -c DIR``, relist.sandbox.postfix)
  whose smtpd hands each message to ``opendkim -f`` (a milter) which signs it
  rsa-sha256 relaxed/relaxed with the same key, then relays to the sink.  Postfix
  answers the client once the message is queued, so it has two figures: *answered*
  (smtp-source's time, the figure of earlier runs) and *delivered* (until its queue is
  empty, i.e. the sink has everything: the figure comparable with the others, which
  answer only after the sink did).  The milter socket is a Unix socket by default: on a
  loopback inet socket (``--milter inet``) each message waits on TCP's Nagle and
  delayed-ACK timers (some 90 ms: 43 messages/s against 320 on the 2-core reference
  VM, CPU idle), which measures the timers, not OpenDKIM;
* amavisd-new (Debian ``amavisd-new``; left out, with a line saying so, when it is not
  installed): a private instance (``amavisd -c FILE... foreground``), the package's seed
  configuration (``/usr/share/amavis/conf.d``, ``/etc/amavis/conf.d``) followed by the
  bench's own file, which moves everything into the bench's directories, listens on a
  free loopback port, forwards to the sink, bypasses virus, spam, banned-file and header
  checks and MIME decoding (it only signs: rsa-sha256 relaxed/relaxed, d= the list's
  domain, same key), ``$max_servers = --workers``.  smtp-source talks to it directly;
  it answers after the sink did.  The package's system service is not used.  It
  forwards to a second ``smtp-sink`` (same options) on a Unix socket by default: on
  loopback TCP (``--amavis-sink inet``, the one sink) amavisd writes the final
  ``.`` of a message larger than its 40,000-byte buffer as a small segment that
  Nagle holds until the sink's delayed ACK, some 40 ms a message (64 KiB, one
  session: 17 messages/s against 55 to 75 on the 2-core VM), the timers again.

Rounds are interleaved (each round runs every cell for every system); the table gives
medians of messages per second and of CPU per message (relist: all its processes;
OpenDKIM: its process; Postfix and amavisd: the master and its children, approximate
since a child that exits is counted only once reaped, so each run ends with a 0.3 s
pause, not timed, for the master to reap).  Before the rounds, a sample
of each system's output is captured by a dumping sink and its first DKIM-Signature
verified (dkimpy, with the bench's DNS zone).

Before the rounds (and again at the end) a line names the machine: its CPU, whether it
has AVX-512 IFMA (OpenSSL's fastest RSA path) and the CPU time of one RSA-2048 signature
with the bench's key.  relist's pipeline makes three a message, OpenDKIM and amavisd-new
one, so the ratios move with that figure from one machine to the next (243 µs on an
AVX-512 IFMA machine, 740-940 µs on an AMD EPYC 7003 VM without it).  ``--floor`` adds a
fourth system to the grid: edge_floor.py's lean relay (a command loop over asyncio
streams, relist's upstream client, no parse, no verify, no store), ``--workers``
processes on one port, making the same three RSA-2048 signatures over each message's
SHA-256 and adding one as a field: what any relay doing relist's signing in Python on
this machine spends at least, so ``floor/Postfix`` is the most relist's ratio can be
here.

``--workload mailman`` (or ``both``: the grid, then this) is the Mailman case: one post
to a 1,000-member list is 100 SMTP transactions of 10 recipients with identical bytes
(``smtp-source -m 100 -r 10 -F post``), ``--posts`` posts a run, one after the other,
over ``--sessions`` sessions (several outgoing runners), each post distinct (its own
Subject and Message-ID, signed by the poster) and fresh for every run (relist's sign
cache must not carry a post from one run to the next).  relist runs with ``sign_once``
on (a second instance: each worker signs a post once and reuses it for the post's
other transactions), beside the grid's relist (every transaction signed) for
reference, Postfix + OpenDKIM (signs every transaction; timed until its queue is empty
after each post, its answered figure beside it) and amavisd-new (signs every
transaction).  Three rows: all posts 4 KiB, all 64 KiB, and a day's mix (70 % 4 KiB,
25 % 64 KiB, 5 % 1 MiB, at least one of each; the posts' times are summed).  Figures:
recipients delivered per second (transactions x 10 / seconds) and CPU ms per
transaction; then how many of the sign_once instance's transactions reused a
signature, from its store.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_relay import _override, cpu_seconds, free_port, signed_post, source, wait_port  # noqa: E402
from relist.sandbox.dnsserver import DNSServer, split_txt  # noqa: E402

__all__ = ["main"]

LIST, SELECTOR = "lists.example.org", "bench"
AMAVISD = next((p for p in ("/usr/sbin/amavisd-new", "/usr/sbin/amavisd") if os.path.exists(p)), None)
AMAVIS_INSTALL = "apt-get install --no-install-recommends amavisd-new"
AMAVIS_SEED = ("/usr/share/amavis/conf.d", "/etc/amavis/conf.d")
# The day's mix of posts: (size, share of the posts).
MIX = ((4096, 0.70), (65536, 0.25), (1024 * 1024, 0.05))
POST_TRANSACTIONS, POST_RECIPIENTS = 100, 10     # one post to a 1,000-member list
RELIST_SIGNATURES = 3    # RSA signatures a grid message: DKIM-Signature, ARC-Message-Signature, ARC-Seal


def _proc_cpu(pid: int, children: bool = False) -> float:
    """utime+stime (and the reaped children's, ``children``) of ``pid``, in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, IndexError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu(master: int) -> float:
    """A master process (Postfix's, amavisd's), its reaped children and its live
    children with theirs (approximate: a child that exits counts once reaped)."""
    total = _proc_cpu(master, children=True)
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
    return total + sum(_proc_cpu(int(p), children=True) for p in out)


def post_bytes(size: int, poster_key, n: int = 1) -> bytes:
    """Post number ``n`` of about ``size`` bytes, as ``bench_relay.signed_post`` but
    with its own Subject and Message-ID (Mailman's next post never has this one's
    bytes), signed by the poster; LF lines (smtp-source -F appends CRLF to each)."""
    if n == 1:
        return signed_post(size, poster_key).replace(b"\r\n", b"\n")
    import dkim

    from relist.core.sign.signing_keys import private_pem
    line = b"The quick brown fox jumps over the lazy dog, and then over the list.\r\n"
    head = (b"From: Poster <poster@poster.example>\r\nTo: bench@lists.example.org\r\n"
            b"Subject: Benchmark post %d\r\nDate: Sat, 21 Nov 2026 10:00:00 +0000\r\n"
            b"Message-ID: <bench-%d@poster.example>\r\nList-Id: <bench.lists.example.org>\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n") % (n, n)
    post = head + line * max(1, (size - len(head)) // len(line))
    signed = dkim.sign(post, b"s1", b"poster.example", private_pem(poster_key),
                       include_headers=[b"from", b"to", b"subject", b"date", b"message-id",
                                        b"content-type"]) + post
    return signed.replace(b"\r\n", b"\n")


def setup(tmp: Path, sizes: list[int]):
    """Keys, the DNS zone, relist's list configuration, OpenDKIM's tables, one post per size."""
    from relist.core.sign.signing_keys import dns_record
    from relist.edge.key_files import generate, write_private_key

    list_key, poster_key = generate("rsa"), generate("rsa")
    key_path = write_private_key(tmp / "bench.key", list_key)
    os.chmod(key_path, 0o600)
    zone = {f"{SELECTOR}._domainkey.{LIST}": [split_txt(dns_record(list_key))],
            "s1._domainkey.poster.example": [split_txt(dns_record(poster_key))],
            "_dmarc.poster.example": ["v=DMARC1; p=none"]}
    posts = {}
    for size in sizes:
        posts[size] = tmp / f"post-{size}.eml"
        posts[size].write_bytes(post_bytes(size, poster_key))
    config = "\n".join([
        f'[lists."bench@{LIST}"]', 'mode = "resign"', 'footer = "-- \\n{list_name} list\\n"',
        'subject_prefix = "[{list_name}] "', f'selector = "{SELECTOR}"', f'private_key = "{key_path}"',
        "arc_seal = true", 'dmarc_mitigation = "munge_from"']) + "\n"
    return config, zone, posts, key_path, poster_key


def opendkim_conf(tmp: Path, key_path: Path, socket: str) -> Path:
    """OpenDKIM signing every message from 127.0.0.1 with the list's key (d= the list's
    domain, s= bench, relaxed/relaxed, rsa-sha256); ``socket``: its milter socket, in
    OpenDKIM's notation (``inet:PORT@127.0.0.1`` or ``local:/path``)."""
    (tmp / "keytable").write_text(f"{SELECTOR}._domainkey.{LIST} {LIST}:{SELECTOR}:{key_path}\n")
    (tmp / "signingtable").write_text(f"* {SELECTOR}._domainkey.{LIST}\n")
    conf = tmp / "opendkim.conf"
    conf.write_text("\n".join([
        "Mode s", "Syslog no", "LogWhy no", f"Socket {socket}", "UMask 000",
        f"KeyTable file:{tmp / 'keytable'}", f"SigningTable refile:{tmp / 'signingtable'}",
        "Canonicalization relaxed/relaxed", "SignatureAlgorithm rsa-sha256", "OversignHeaders From",
        "InternalHosts 127.0.0.1", "RequireSafeKeys no", "AutoRestart no",
        f"PidFile {tmp / 'opendkim.pid'}"]) + "\n")
    return conf


def _shm_dir(tmp: Path, prefix: str) -> Path:
    """A directory on tmpfs when there is one (/dev/shm): Postfix's cleanup fsyncs every
    queue file and amavisd writes each message to its TEMPBASE, and on a shared VM's
    disk that, not signing, would be the limit (relist keeps nothing on disk per
    message but its store's rows)."""
    shm = Path("/dev/shm")
    base = Path(tempfile.mkdtemp(prefix=prefix, dir=shm if shm.is_dir() else tmp))
    os.chmod(base, 0o755)
    return base


def start_postfix(tmp: Path, port: int, milter: str, sink: int):
    """Postfix with its queue on tmpfs when there is one (``_shm_dir``)."""
    from relist.sandbox.postfix import Postfix, base_main_cf

    base = _shm_dir(tmp, "relist-compare-postfix-")
    main_cf = base_main_cf(base, hostname="postfix.bench") + "\n".join([
        f"relayhost = [127.0.0.1]:{sink}", f"smtpd_milters = {milter}",
        "milter_default_action = tempfail", "smtpd_recipient_restrictions = permit_mynetworks, reject",
        "smtpd_relay_restrictions = permit_mynetworks, reject", "message_size_limit = 0",
        "smtpd_peername_lookup = no", "smtpd_client_connection_rate_limit = 0"]) + "\n"
    master_cf = f"127.0.0.1:{port} inet n - n - - smtpd\n"
    postfix = Postfix(base, main_cf, master_cf)
    postfix.__enter__()
    wait_port(port)
    return postfix


def queued(postfix) -> int:
    """Queue files in Postfix's queue directories, counted directly: a ``postqueue``
    run every few milliseconds would cost more than a 4 KiB delivery."""
    n = 0
    for name in ("maildrop", "incoming", "active", "deferred", "hold"):
        for _, _, files in os.walk(postfix.base / "queue" / name):
            n += len(files)
    return n


def drain(postfix, timeout: float = 300) -> float:
    """Wait until Postfix's queue is empty (its deliveries must not run into the next
    run; the sink has everything once it is); the monotonic time it was first seen
    empty (polled every 10 ms), confirmed by ``postqueue``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not queued(postfix):
            empty = time.monotonic()
            if not postfix.queue_ids():
                return empty
        time.sleep(0.01)
    print(f"Postfix's queue not empty after {timeout:.0f} s", file=sys.stderr)
    return time.monotonic()


def amavis_files(tmp: Path, home: Path, key_path: Path, port: int, forward: str, servers: int) -> list[str]:
    """The package's seed configuration files (as its service reads them, run-parts
    order) and, last, the bench's own, which overrides them: everything under
    ``home``, listen on ``port``, forward to the sink, no checks, sign only."""
    seed = []
    for d in AMAVIS_SEED:
        if os.path.isdir(d):
            seed += subprocess.run(["run-parts", "--list", d], capture_output=True, text=True).stdout.split()
    conf = tmp / "amavisd.conf"
    conf.write_text(f"""\
use strict;
# The bench's private instance (bench/compare_mtas.py); read after the seed files.
$myhostname = 'amavis.bench';
$mydomain = 'bench';
$daemon_user  = 'amavis';
$daemon_group = 'amavis';
$MYHOME   = '{home}';
$TEMPBASE = "$MYHOME/tmp";
$ENV{{TMPDIR}} = $TEMPBASE;
$db_home  = "$MYHOME/db";
$pid_file  = "$MYHOME/amavisd.pid";
$lock_file = "$MYHOME/amavisd.lock";
$QUARANTINEDIR = undef;
$DO_SYSLOG = 0;
$LOGFILE = "$MYHOME/amavis.log";
$log_level = 0;
$inet_socket_bind = '127.0.0.1';
$inet_socket_port = {port};
$unix_socketname = undef;
@inet_acl = qw(127.0.0.1);
@mynetworks = qw(127.0.0.0/8);
$originating = 1;
$forward_method = '{forward}';
$notify_method  = $forward_method;
$max_servers = {servers};
# It only signs: no virus, spam, banned-file or header checks, no MIME decoding.
@bypass_virus_checks_maps  = (1);
@bypass_spam_checks_maps   = (1);
@bypass_banned_checks_maps = (1);
@bypass_header_checks_maps = (1);
$bypass_decode_parts = 1;
$enable_dkim_verification = 0;
$enable_dkim_signing = 1;
dkim_key('{LIST}', '{SELECTOR}', '{key_path}');
@dkim_signature_options_bysender_maps = (
  {{ '.' => {{ d => '{LIST}', a => 'rsa-sha256', c => 'relaxed/relaxed', ttl => 21*24*3600 }} }} );
1;
""")
    return [*seed, str(conf)]


def start_amavisd(tmp: Path, key_path: Path, port: int, forward: str, servers: int):
    """A private amavisd in the foreground (the Popen is its master), its home, queue
    files and log on tmpfs when there is one; its own copy of the key, the amavis
    user's (amavisd drops to it)."""
    import pwd

    user = pwd.getpwnam("amavis")
    home = _shm_dir(tmp, "relist-compare-amavis-")
    for d in (home, home / "tmp", home / "db"):
        d.mkdir(exist_ok=True)
        os.chown(d, user.pw_uid, user.pw_gid)
    key = home / "bench.key"
    shutil.copyfile(key_path, key)
    os.chmod(key, 0o600)
    os.chown(key, user.pw_uid, user.pw_gid)
    files = amavis_files(tmp, home, key, port, forward, servers)
    cmd = [AMAVISD, *(a for f in files for a in ("-c", f)), "foreground"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(tmp / "amavisd.err", "w"))
    end = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < end:
        try:
            wait_port(port, 1)
            return proc, home
        except SystemExit:
            pass
    if proc.poll() is None:
        proc.kill()
    log = (home / "amavis.log").read_text(errors="replace") if (home / "amavis.log").exists() else ""
    raise SystemExit(f"amavisd did not start: {' '.join(cmd)}\n{(tmp / 'amavisd.err').read_text()[-2000:]}"
                     f"{log[-2000:]}")


def sink(where: int | Path, dump: Path | None = None) -> subprocess.Popen:
    """smtp-sink on 127.0.0.1:``where`` or on the Unix socket ``where`` (mode 0666: the
    amavis user connects to it); ``dump``: also write each message there."""
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    extra = ["-d", f"{dump}/%H%M%S."] if dump is not None else []
    if dump is not None:
        dump.mkdir(exist_ok=True)
        os.chmod(dump, 0o777)
    address = f"127.0.0.1:{where}" if isinstance(where, int) else f"unix:{where}"
    if not isinstance(where, int):
        where.unlink(missing_ok=True)
    proc = subprocess.Popen(["smtp-sink", *user, "-c", "-8", *extra, address, "1024"],
                            stdout=subprocess.DEVNULL)
    if isinstance(where, int):
        wait_port(where)
    else:
        end = time.monotonic() + 15
        while not where.exists() and time.monotonic() < end:
            time.sleep(0.05)
        os.chmod(where, 0o666)
    return proc


def verify_sample(files: list[str], zone: dict) -> tuple[int, int]:
    """(verified, sampled): the top DKIM-Signature of each dumped message (the sink's
    own X-*/Received lines above it are not signed) verifies with d= the list's."""
    import dkim

    def dnsfunc(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        txt = zone.get(name.rstrip("."))
        return "".join(txt[0]).encode() if txt else None

    ok = 0
    for path in files:
        d = dkim.DKIM(Path(path).read_bytes(), minkey=1024)
        try:
            ok += bool(d.verify(idx=0, dnsfunc=dnsfunc)) and d.domain == LIST.encode()
        except dkim.DKIMException:
            pass
    return ok, len(files)


def run(port: int, post: Path, args, recipients: int, messages: int) -> float:
    ns = argparse.Namespace(sessions=args.sessions, messages=messages, post_file=str(post),
                            recipients=recipients, timeout=args.timeout, size=0)
    return source(port, ns)


class System:
    """One system under test: where smtp-source sends, how its CPU is read, and (Postfix)
    the queue to drain.  ``measure`` runs the given posts one after the other and
    returns (answered seconds, delivered seconds, CPU seconds): the sum over the posts
    of smtp-source's time, and of the time until the sink has everything."""

    def __init__(self, name: str, port: int, cpu, postfix=None):
        self.name, self.port, self.cpu, self.postfix = name, port, cpu, postfix

    def measure(self, posts: list[Path], args, recipients: int, messages: int) -> tuple[float, float, float]:
        answered = delivered = 0.0
        c0 = self.cpu()
        for post in posts:
            start = time.monotonic()
            answered += run(self.port, post, args, recipients, messages)
            delivered += (drain(self.postfix) if self.postfix is not None else time.monotonic()) - start
        # A child that has just exited counts once its master reaped it (amavisd's do
        # after a session): without this pause its CPU would go to the next run.
        time.sleep(0.3)
        return answered, delivered, self.cpu() - c0


def mix_sizes(posts: int) -> list[int]:
    """The day's mix for ``posts`` posts: MIX's shares, at least one post of each size."""
    return [size for size, share in MIX for _ in range(max(1, round(posts * share)))]


def grid(systems: dict, posts: dict, args, sizes: list[int], rcpts: list[int]) -> dict:
    """Interleaved rounds over sizes x recipients; per cell and system lists of
    answered/s, delivered/s and CPU ms per message (plus OpenDKIM's own CPU)."""
    for size in sizes:
        for r in rcpts:     # warm up all
            for s in systems.values():
                s.measure([posts[size]], args, r, 100)
    results: dict[tuple, dict[str, list[float]]] = {}
    n = args.messages
    for rnd in range(args.rounds):
        for size in sizes:
            for r in rcpts:
                cell = results.setdefault((size, r), {})
                line = []
                for key, s in systems.items():
                    o0 = _proc_cpu(args.odkim_pid)
                    answered, delivered, cpu = s.measure([posts[size]], args, r, n)
                    cell.setdefault(key, []).append(n / answered)
                    cell.setdefault(key + "_delivered", []).append(n / delivered)
                    cell.setdefault(key + "_cpu", []).append(cpu * 1000 / n)
                    text = f"{s.name} {n / answered:.0f}/s"
                    if s.postfix is not None:
                        cell.setdefault("odkim_cpu", []).append((_proc_cpu(args.odkim_pid) - o0) * 1000 / n)
                        text += (f" answered, {n / delivered:.0f}/s delivered (OpenDKIM "
                                 f"{cell['odkim_cpu'][-1]:.2f} ms, Postfix {cpu * 1000 / n:.2f} ms)")
                    else:
                        text += f" {cpu * 1000 / n:.2f} ms"
                    line.append(text)
                print(f"round {rnd + 1} {size // 1024} KiB x {r}: " + "; ".join(line), flush=True)
    return results


def print_grid(results: dict, systems: dict, args) -> None:
    med = statistics.median
    am = "am" in systems
    print(f"\n{args.messages} messages a run, {args.sessions} smtp-source sessions, medians of "
          f"{args.rounds} interleaved rounds (messages per second; CPU ms per message); "
          f"OpenDKIM on a{'n inet' if args.milter == 'inet' else ' Unix'} socket.  Timed: smtp-source's "
          f"run; for Postfix also until its queue is empty (delivered: the sink has everything; "
          f"relist{' and amavisd-new answer' if am else ' answers'} only after the sink did, so "
          f"{'theirs' if am else 'its'} is both)\n")
    head = ["size, recipients", "relist", "Postfix + OpenDKIM answered", "Postfix + OpenDKIM delivered"]
    head += ["amavisd-new"] if am else []
    head += ["relist/Postfix answered", "relist/Postfix delivered"] + (["relist/amavisd-new"] if am else [])
    # The ratio of the medians above, and beside it the same round's ratio, round by round
    # (min / median / max): how much of a margin the noise of the machine leaves.
    head += ["relist/Postfix delivered by round (min / median / max)"]
    head += ["relist CPU ms/msg", "OpenDKIM's", "Postfix's (approx.)"]
    head += ["amavisd-new's (approx.)"] if am else []
    floor = "floor" in systems
    if floor:
        head += ["floor msgs/s", "floor/Postfix delivered (by round: min / median / max)", "floor CPU ms/msg"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for (size, r), cell in results.items():
        a, b, bd = med(cell["relist"]), med(cell["pf"]), med(cell["pf_delivered"])
        row = [f"{size // 1024} KiB, {r}", f"{a:.0f}", f"{b:.0f}", f"{bd:.0f}"]
        row += [f"{med(cell['am']):.0f}"] if am else []
        row += [f"{a / b:.2f}x", f"{a / bd:.2f}x"] + ([f"{a / med(cell['am']):.2f}x"] if am else [])
        rounds = [x / y for x, y in zip(cell["relist"], cell["pf_delivered"])]
        row += [f"{min(rounds):.2f} / {med(rounds):.2f} / {max(rounds):.2f}"]
        row += [f"{med(cell[k]):.2f}" for k in ("relist_cpu", "odkim_cpu", "pf_cpu")]
        row += [f"{med(cell['am_cpu']):.2f}"] if am else []
        if floor:
            f = med(cell["floor"])
            by_round = [x / y for x, y in zip(cell["floor"], cell["pf_delivered"])]
            spread = f"{min(by_round):.2f} / {med(by_round):.2f} / {max(by_round):.2f}"
            row += [f"{f:.0f}", f"{f / bd:.2f}x ({spread})", f"{med(cell['floor_cpu']):.2f}"]
        print("| " + " | ".join(row) + " |")


def mailman(systems: dict, args, tmp: Path, poster_key) -> dict:
    """The Mailman workload (module doc): per round, each row and each system gets
    ``--posts`` fresh distinct posts, each sent as 100 transactions x 10 recipients."""
    rows = {"4 KiB posts": [4096] * args.posts, "64 KiB posts": [65536] * args.posts,
            "a day's mix": mix_sizes(args.posts)}
    made = [1]

    def fresh(sizes: list[int]) -> list[Path]:
        out = []
        for size in sizes:
            made[0] += 1
            path = tmp / f"mailman-{made[0] % 1000}.eml"    # a file per post of the run
            path.write_bytes(post_bytes(size, poster_key, made[0]))
            out.append(path)
        return out

    for s in systems.values():     # warm up all, one post each
        s.measure(fresh([4096]), args, POST_RECIPIENTS, POST_TRANSACTIONS)
    results: dict[str, dict[str, list[float]]] = {}
    for rnd in range(args.rounds):
        for row, sizes in rows.items():
            cell = results.setdefault(row, {})
            tx = len(sizes) * POST_TRANSACTIONS
            line = []
            for key, s in systems.items():
                o0 = _proc_cpu(args.odkim_pid)
                answered, delivered, cpu = s.measure(fresh(sizes), args, POST_RECIPIENTS, POST_TRANSACTIONS)
                cell.setdefault(key, []).append(tx * POST_RECIPIENTS / answered)
                cell.setdefault(key + "_delivered", []).append(tx * POST_RECIPIENTS / delivered)
                cell.setdefault(key + "_cpu", []).append(cpu * 1000 / tx)
                if s.postfix is not None:
                    cell.setdefault("odkim_cpu", []).append((_proc_cpu(args.odkim_pid) - o0) * 1000 / tx)
                line.append(f"{s.name} {cell[key + '_delivered'][-1]:.0f} rcpt/s {cpu * 1000 / tx:.2f} ms")
            print(f"mailman round {rnd + 1} {row}: " + "; ".join(line), flush=True)
    return results


def print_mailman(results: dict, systems: dict, args) -> None:
    med = statistics.median
    am = "am" in systems
    mix = ", ".join(f"{round(share * 100)} % " + (f"{size >> 20} MiB" if size >= 1 << 20 else
                                                   f"{size >> 10} KiB") for size, share in MIX)
    print(f"\nMailman workload: distinct posts, {args.posts} a run ({len(mix_sizes(args.posts))} in the "
          f"day's mix: {mix}, at least one each), each post {POST_TRANSACTIONS} transactions x "
          f"{POST_RECIPIENTS} recipients with identical bytes, {args.sessions} smtp-source sessions, "
          f"medians of {args.rounds} interleaved rounds.  Recipients delivered per second "
          f"(transactions x {POST_RECIPIENTS} / seconds) and CPU ms per transaction.  Timed: each "
          f"post's smtp-source run, and for Postfix until its queue is empty after the post "
          f"(answered: smtp-source's time alone); relist{' and amavisd-new' if am else ''} answer"
          f"{'' if am else 's'} only after the sink did.  relist sign_once: one signature per post "
          f"and worker; every tx: sign_once off\n")
    head = ["posts", "relist sign_once", "relist every tx", "Postfix + OpenDKIM delivered",
            "Postfix + OpenDKIM answered"]
    head += ["amavisd-new"] if am else []
    head += ["sign_once/Postfix delivered"] + (["sign_once/amavisd-new"] if am else [])
    head += ["relist sign_once CPU ms/tx", "relist every tx", "OpenDKIM's", "Postfix's (approx.)"]
    head += ["amavisd-new's (approx.)"] if am else []
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row, cell in results.items():
        a, pd = med(cell["once"]), med(cell["pf_delivered"])
        out = [row, f"{a:.0f}", f"{med(cell['relist']):.0f}", f"{pd:.0f}", f"{med(cell['pf']):.0f}"]
        out += [f"{med(cell['am']):.0f}"] if am else []
        out += [f"{a / pd:.2f}x"] + ([f"{a / med(cell['am']):.2f}x"] if am else [])
        out += [f"{med(cell[k + '_cpu']):.2f}" for k in ("once", "relist")]
        out += [f"{med(cell['odkim_cpu']):.2f}", f"{med(cell['pf_cpu']):.2f}"]
        out += [f"{med(cell['am_cpu']):.2f}"] if am else []
        print("| " + " | ".join(out) + " |")


def reused(db: Path) -> tuple[int, int]:
    """(transactions that reused a signature, all transactions) in a relist store: the
    proof that sign_once did its work (the sample's and warm-up's included)."""
    import sqlite3

    con = sqlite3.connect(db)
    try:
        total = con.execute("SELECT count(*) FROM transactions").fetchone()[0]
        hits = con.execute("SELECT count(*) FROM transactions WHERE steps LIKE ?",
                           ('%"sign-cache"%',)).fetchone()[0]
    finally:
        con.close()
    return hits, total


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, and SIGKILL after 30 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def start_floor(tmp: Path, key_path: Path, port: int, sink_port: int, workers: int) -> list[subprocess.Popen]:
    """``workers`` processes of edge_floor.py's lean relay on one port (SO_REUSEPORT, as
    relist's workers), each making ``RELIST_SIGNATURES`` RSA signatures a message."""
    cmd = [sys.executable, str(ROOT / "bench" / "edge_floor.py"), "--serve", "lean", "--port", str(port),
           "--upstream", str(sink_port), "--signs", str(RELIST_SIGNATURES), "--key", str(key_path),
           "--reuse-port"]
    return [subprocess.Popen(cmd, stderr=open(tmp / "floor.log", "a")) for _ in range(workers)]


def machine_line(key_path: Path, n: int = 200) -> str:
    """The CPU, and what one RSA-2048 signature costs on it (the bench's key, signed
    as relist signs: ``SigningKey.sign``): relist's pipeline makes three a message,
    OpenDKIM and amavisd one, so the ratios depend on this figure."""
    from relist.edge.key_files import read_private_key

    key = read_private_key(key_path)
    times = []
    for _ in range(n):
        t = time.process_time()
        key.sign(b"x")
        times.append(time.process_time() - t)
    model, ifma = "?", False
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "?":
                model = line.partition(":")[2].strip()
            if line.startswith("flags"):
                ifma = ifma or "avx512ifma" in line.split()
    except OSError:
        pass
    return (f"machine: {model}, {os.cpu_count()} CPUs, AVX-512 IFMA {'yes' if ifma else 'no'}; "
            f"one RSA-2048 signature {statistics.median(times) * 1e6:.0f} µs CPU (median of {n}); "
            f"a message: relist {RELIST_SIGNATURES} (DKIM-Signature, ARC-Message-Signature, "
            "ARC-Seal), OpenDKIM 1, amavisd-new 1")


def start_relist(tmp: Path, name: str, config: str, port: int, sink_port: int, args, nameserver: str,
                 sign_once: bool) -> subprocess.Popen:
    conf = tmp / f"{name}.toml"
    conf.write_text(_override(config, port, sink_port, tmp / f"{name}.db", args.workers, nameserver,
                              sign_once=sign_once))
    return subprocess.Popen([sys.executable, "-m", "relist", "serve", "-c", str(conf)],
                            stderr=open(tmp / f"{name}.log", "w"))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sizes", default="4096,65536")
    ap.add_argument("--recipients", default="1,10")
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2, help="relist's workers and amavisd's $max_servers")
    ap.add_argument("--sample", type=int, default=5, help="messages per system whose signature is verified")
    ap.add_argument("--timeout", type=int, default=600)
    ap.add_argument("--milter", default="unix", choices=("unix", "inet"),
                    help="OpenDKIM's socket (module doc)")
    ap.add_argument("--amavis-sink", default="unix", choices=("unix", "inet"),
                    help="how amavisd reaches its sink (module doc)")
    ap.add_argument("--workload", default="grid", choices=("grid", "mailman", "both"),
                    help="the sizes x recipients grid, the Mailman workload (module doc), or both")
    ap.add_argument("--posts", type=int, default=10,
                    help="Mailman workload: posts a run (100 transactions each)")
    ap.add_argument("--floor", action="store_true",
                    help="grid: also the RSA floor, a lean relay making relist's signatures (module doc)")
    args = ap.parse_args()
    for tool in ("smtp-source", "smtp-sink", "postfix", "opendkim"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            print(f"{tool} not found (Debian: postfix, opendkim)", file=sys.stderr)
            return 2
    if os.geteuid() != 0:
        print("run as root: the private Postfix instance needs it", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",")]
    rcpts = [int(r) for r in args.recipients.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="relist-compare-"))
    os.chmod(tmp, 0o755)
    procs: list[subprocess.Popen] = []
    postfix = dns = amavis_home = None
    try:
        config, zone, posts, key_path, poster_key = setup(tmp, sizes)
        dns = DNSServer(zone).start()
        sink_port, relist_port, pf_port, milter_port = free_port(), free_port(), free_port(), free_port()
        relist = start_relist(tmp, "relist", config, relist_port, sink_port, args, dns.nameserver, False)
        procs.append(relist)
        once = None
        if args.workload != "grid":
            once_port = free_port()
            once = start_relist(tmp, "relist-once", config, once_port, sink_port, args, dns.nameserver, True)
            procs.append(once)
        if args.milter == "inet":
            od_socket, milter = f"inet:{milter_port}@127.0.0.1", f"inet:127.0.0.1:{milter_port}"
        else:
            od_socket, milter = f"local:{tmp / 'opendkim.sock'}", f"unix:{tmp / 'opendkim.sock'}"
        odkim = subprocess.Popen(["opendkim", "-f", "-x", str(opendkim_conf(tmp, key_path, od_socket))],
                                 stdout=subprocess.DEVNULL, stderr=open(tmp / "opendkim.log", "w"))
        procs.append(odkim)
        args.odkim_pid = odkim.pid
        wait_port(relist_port)
        if once is not None:
            wait_port(once_port)
        if args.milter == "inet":
            wait_port(milter_port)
        else:
            end = time.monotonic() + 15
            while not (tmp / "opendkim.sock").exists() and time.monotonic() < end:
                time.sleep(0.05)
        # -- a sample of each one's output, signatures verified -----------------------
        procs.append(sink(sink_port, tmp / "dump"))
        postfix = start_postfix(tmp, pf_port, milter, sink_port)
        systems = {"relist": System("relist", relist_port, lambda: cpu_seconds(relist.pid)),
                   "pf": System("Postfix + OpenDKIM", pf_port, lambda: tree_cpu(postfix.pid()), postfix)}
        if args.floor:
            floor_port = free_port()
            floors = start_floor(tmp, key_path, floor_port, sink_port, args.workers)
            procs.extend(floors)
            wait_port(floor_port)
            systems["floor"] = System(f"floor ({RELIST_SIGNATURES} RSA)", floor_port,
                                      lambda: sum(_proc_cpu(p.pid) for p in floors))
        if AMAVISD is not None:
            am_port = free_port()
            if args.amavis_sink == "unix":
                am_sink = tmp / "amavis-sink.sock"
                forward = f"smtp:{am_sink}"
                procs.append(sink(am_sink, tmp / "dump"))
            else:
                am_sink, forward = sink_port, f"smtp:[127.0.0.1]:{sink_port}"
            amavisd, amavis_home = start_amavisd(tmp, key_path, am_port, forward, args.workers)
            procs.append(amavisd)
            live = {"am": amavisd}     # replaced below, after the sample
            systems["am"] = System("amavisd-new", am_port, lambda: tree_cpu(live["am"].pid))
        checked = {}
        sampled = [s for key, s in systems.items() if key != "floor"]   # no DKIM signature to verify
        if once is not None:
            sampled.append(System("relist sign_once", once_port, lambda: 0.0))
        for s in sampled:
            before = set(glob.glob(str(tmp / "dump" / "*")))
            s.measure([posts[sizes[0]]], args, 1, args.sample)
            time.sleep(0.5)
            new = sorted(set(glob.glob(str(tmp / "dump" / "*"))) - before)
            checked[s.name] = verify_sample(new, zone)
        for proc in [p for p in procs if p.args[0] == "smtp-sink"]:    # the dumping sinks
            stop(proc)
            procs.remove(proc)
        procs.append(sink(sink_port))
        if AMAVISD is not None:
            # amavisd's children keep their connection to the dumping sink and fail the
            # next message once it is gone (451, no retry): a fresh instance.
            stop(amavisd)
            procs.remove(amavisd)
            shutil.rmtree(amavis_home, ignore_errors=True)
            if args.amavis_sink == "unix":
                procs.append(sink(am_sink))
            amavisd, amavis_home = start_amavisd(tmp, key_path, am_port, forward, args.workers)
            procs.append(amavisd)
            live["am"] = amavisd
        # -- the rounds ------------------------------------------------------------------
        machine = machine_line(key_path)
        print(machine, flush=True)
        saved = {}
        if args.workload in ("grid", "both"):
            results = grid(systems, posts, args, sizes, rcpts)
            print_grid(results, systems, args)
            saved["grid"] = {f"{s}x{r}": c for (s, r), c in results.items()}
        if once is not None:
            mm_systems = {"once": System("relist sign_once", once_port, lambda: cpu_seconds(once.pid)),
                          **systems,
                          "relist": System("relist every tx", relist_port, lambda: cpu_seconds(relist.pid))}
            mm = mailman(mm_systems, args, tmp, poster_key)
            print_mailman(mm, mm_systems, args)
            hits, total = reused(tmp / "relist-once.db")
            print(f"\nrelist sign_once: {hits} of {total} transactions reused a signature (its store)")
            saved["mailman"] = mm
        print("\n" + machine)
        print("signatures verified on a sample (dkimpy, d=" + LIST + "): " + "; ".join(
            f"{name} {ok}/{n}" for name, (ok, n) in checked.items()))
        if AMAVISD is None:
            print(f"amavisd-new: left out: not installed ({AMAVIS_INSTALL})")
        for name in ("relist", "relist-once"):
            log = tmp / f"{name}.log"
            errors = [ln for ln in log.read_text().splitlines() if "Traceback" in ln] if log.exists() else []
            if errors:
                print(f"{name} logged {len(errors)} traceback(s); log: {log}")
        (tmp / "results.json").write_text(json.dumps(saved))
    finally:
        for p in reversed(procs):
            stop(p)
        if postfix is not None:
            postfix.stop()
            shutil.rmtree(postfix.base, ignore_errors=True)
        if amavis_home is not None:
            shutil.rmtree(amavis_home, ignore_errors=True)
        if dns is not None:
            dns.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
