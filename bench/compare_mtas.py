"""relist's whole re-sign pipeline beside Postfix + OpenDKIM, in one run (issue 17's table).

    .venv/bin/python bench/compare_mtas.py [--messages 1000] [--rounds 3] [--sizes 4096,65536]
                                           [--recipients 1,10] [--sessions 4] [--workers 2]

Run by hand, as root (a private Postfix instance drops privileges itself; not part of
the test suite).  Same load generator for both, Postfix's ``smtp-source`` with
``--sessions`` sessions, into one ``smtp-sink``, everything on 127.0.0.1:

* relist: ``relist serve`` (``--workers``) in front of the sink, the whole re-sign
  pipeline of ``bench_relay.py --resign``: verify the poster's DKIM and DMARC over a
  loopback DNS server, Subject prefix, footer, strip, From munging, DKIM rsa-sha256 and
  an ARC seal, ``sign_once`` off (every transaction is signed);
* Postfix + OpenDKIM: a private Postfix (``postfix -c DIR``, relist.sandbox.postfix)
  whose smtpd hands each message to ``opendkim -f`` (a milter) which signs it
  rsa-sha256 relaxed/relaxed with the same key, then relays to the sink.  Postfix
  answers the client once the message is queued; its queue is drained before the
  next run.  The milter socket is a Unix socket by default: on a loopback inet socket
  (``--milter inet``) each message waits on TCP's Nagle and delayed-ACK timers (some
  90 ms: 43 messages/s against 320 on the 2-core reference VM, CPU idle), which
  measures the timers, not OpenDKIM.

Rounds are interleaved (each round runs every cell for both); the table gives medians
of messages per second and of CPU per message (relist: all its processes; OpenDKIM:
its process; Postfix: the master and its children, approximate since a child that
exits is counted only once reaped).  Before the rounds, a sample of each system's
output is captured by a dumping sink and its first DKIM-Signature verified (dkimpy,
with the bench's DNS zone).  amavisd-new is left out: it is not installed here and
its seed configuration takes more than a bench script should set up.
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


def _proc_cpu(pid: int, children: bool = False) -> float:
    """utime+stime (and the reaped children's, ``children``) of ``pid``, in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, IndexError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def postfix_cpu(master: int) -> float:
    """The Postfix master, its reaped children and its live children (approximate)."""
    total = _proc_cpu(master, children=True)
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
    return total + sum(_proc_cpu(int(p)) for p in out)


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
        # smtp-source -F appends CRLF to each line: give it LF lines.
        posts[size].write_bytes(signed_post(size, poster_key).replace(b"\r\n", b"\n"))
    config = "\n".join([
        f'[lists."bench@{LIST}"]', 'mode = "resign"', 'footer = "-- \\n{list_name} list\\n"',
        'subject_prefix = "[{list_name}] "', f'selector = "{SELECTOR}"', f'private_key = "{key_path}"',
        "arc_seal = true", 'dmarc_mitigation = "munge_from"']) + "\n"
    return config, zone, posts, key_path


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


def start_postfix(tmp: Path, port: int, milter: str, sink: int):
    """Postfix with its queue on tmpfs when there is one (/dev/shm): its cleanup fsyncs
    every queue file, and on a shared VM's disk that, not signing, would be the limit
    (relist keeps nothing on disk per message but its store's rows)."""
    from relist.sandbox.postfix import Postfix, base_main_cf

    shm = Path("/dev/shm")
    base = Path(tempfile.mkdtemp(prefix="relist-compare-postfix-", dir=shm if shm.is_dir() else tmp))
    os.chmod(base, 0o755)
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


def drain(postfix, timeout: float = 300) -> None:
    """Wait until Postfix's queue is empty (its deliveries must not run into the next run)."""
    end = time.monotonic() + timeout
    while postfix.queue_ids() and time.monotonic() < end:
        time.sleep(0.2)


def sink(port: int, dump: Path | None = None) -> subprocess.Popen:
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    extra = ["-d", f"{dump}/%H%M%S."] if dump is not None else []
    if dump is not None:
        dump.mkdir(exist_ok=True)
        os.chmod(dump, 0o777)
    proc = subprocess.Popen(["smtp-sink", *user, "-c", "-8", *extra, f"127.0.0.1:{port}", "1024"],
                            stdout=subprocess.DEVNULL)
    wait_port(port)
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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sizes", default="4096,65536")
    ap.add_argument("--recipients", default="1,10")
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sample", type=int, default=5, help="messages per system whose signature is verified")
    ap.add_argument("--timeout", type=int, default=600)
    ap.add_argument("--milter", default="unix", choices=("unix", "inet"),
                    help="OpenDKIM's socket (module doc)")
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
    postfix = dns = None
    try:
        config, zone, posts, key_path = setup(tmp, sizes)
        dns = DNSServer(zone).start()
        sink_port, relist_port, pf_port, milter_port = free_port(), free_port(), free_port(), free_port()
        conf = tmp / "relist.toml"
        conf.write_text(_override(config, relist_port, sink_port, tmp / "relist.db", args.workers,
                                  dns.nameserver, sign_once=False))
        relist = subprocess.Popen([sys.executable, "-m", "relist", "serve", "-c", str(conf)],
                                  stderr=open(tmp / "relist.log", "w"))
        procs.append(relist)
        if args.milter == "inet":
            od_socket, milter = f"inet:{milter_port}@127.0.0.1", f"inet:127.0.0.1:{milter_port}"
        else:
            od_socket, milter = f"local:{tmp / 'opendkim.sock'}", f"unix:{tmp / 'opendkim.sock'}"
        odkim = subprocess.Popen(["opendkim", "-f", "-x", str(opendkim_conf(tmp, key_path, od_socket))],
                                 stdout=subprocess.DEVNULL, stderr=open(tmp / "opendkim.log", "w"))
        procs.append(odkim)
        wait_port(relist_port)
        if args.milter == "inet":
            wait_port(milter_port)
        else:
            end = time.monotonic() + 15
            while not (tmp / "opendkim.sock").exists() and time.monotonic() < end:
                time.sleep(0.05)
        # -- a sample of each one's output, signatures verified -----------------------
        dumper = sink(sink_port, tmp / "dump")
        procs.append(dumper)
        postfix = start_postfix(tmp, pf_port, milter, sink_port)
        checked = {}
        for name, port in (("relist", relist_port), ("Postfix + OpenDKIM", pf_port)):
            before = set(glob.glob(str(tmp / "dump" / "*")))
            run(port, posts[sizes[0]], args, 1, args.sample)
            if port == pf_port:
                drain(postfix, 60)
            time.sleep(0.5)
            new = sorted(set(glob.glob(str(tmp / "dump" / "*"))) - before)
            checked[name] = verify_sample(new, zone)
        dumper.terminate()
        dumper.wait(10)
        procs.append(sink(sink_port))
        # -- the rounds ------------------------------------------------------------------
        results: dict[tuple, dict[str, list[float]]] = {}
        for size in sizes:
            for r in rcpts:     # warm up both
                run(relist_port, posts[size], args, r, 100)
                run(pf_port, posts[size], args, r, 100)
                drain(postfix)
        for rnd in range(args.rounds):
            for size in sizes:
                for r in rcpts:
                    cell = results.setdefault((size, r), {k: [] for k in ("relist", "pf", "relist_cpu",
                                                                          "odkim_cpu", "pf_cpu")})
                    c0 = cpu_seconds(relist.pid)
                    t = run(relist_port, posts[size], args, r, args.messages)
                    cell["relist"].append(args.messages / t)
                    cell["relist_cpu"].append((cpu_seconds(relist.pid) - c0) * 1000 / args.messages)
                    o0, p0 = _proc_cpu(odkim.pid), postfix_cpu(postfix.pid())
                    t = run(pf_port, posts[size], args, r, args.messages)
                    drain(postfix)
                    cell["pf"].append(args.messages / t)
                    cell["odkim_cpu"].append((_proc_cpu(odkim.pid) - o0) * 1000 / args.messages)
                    cell["pf_cpu"].append((postfix_cpu(postfix.pid()) - p0) * 1000 / args.messages)
                    print(f"round {rnd + 1} {size // 1024} KiB x {r}: relist {cell['relist'][-1]:.0f}/s "
                          f"{cell['relist_cpu'][-1]:.2f} ms; Postfix + OpenDKIM {cell['pf'][-1]:.0f}/s "
                          f"(OpenDKIM {cell['odkim_cpu'][-1]:.2f} ms, Postfix {cell['pf_cpu'][-1]:.2f} ms)",
                          flush=True)
        print(f"\n{args.messages} messages a run, {args.sessions} smtp-source sessions, medians of "
              f"{args.rounds} interleaved rounds (messages per second; CPU ms per message); "
              f"OpenDKIM on a{'n inet' if args.milter == 'inet' else ' Unix'} socket\n")
        print("| size, recipients | relist | Postfix + OpenDKIM | relist/OpenDKIM | relist CPU ms/msg "
              "| OpenDKIM's | Postfix's (approx.) |")
        print("|---|---|---|---|---|---|---|")
        med = statistics.median
        for (size, r), cell in results.items():
            a, b = med(cell["relist"]), med(cell["pf"])
            print(f"| {size // 1024} KiB, {r} | {a:.0f} | {b:.0f} | {a / b:.2f}x "
                  f"| {med(cell['relist_cpu']):.2f} "
                  f"| {med(cell['odkim_cpu']):.2f} | {med(cell['pf_cpu']):.2f} |")
        print("\nsignatures verified on a sample (dkimpy, d=" + LIST + "): " + "; ".join(
            f"{name} {ok}/{n}" for name, (ok, n) in checked.items()))
        print("amavisd-new: left out (not installed; see the module doc)")
        errors = [ln for ln in (tmp / "relist.log").read_text().splitlines() if "Traceback" in ln]
        if errors:
            print(f"relist logged {len(errors)} traceback(s); log: {tmp / 'relist.log'}")
        (tmp / "results.json").write_text(json.dumps({f"{s}x{r}": c for (s, r), c in results.items()}))
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
        if postfix is not None:
            postfix.stop()
            shutil.rmtree(postfix.base, ignore_errors=True)
        if dns is not None:
            dns.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
