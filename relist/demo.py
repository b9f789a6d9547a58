"""``relist demo``: relist's main job on an embedded default, nothing else needed.

Starts, all on 127.0.0.1: a DNS server holding the corpus's poster keys and the
list keys the demo generates (RSA-2048 and Ed25519, in a temporary directory), a sink
standing in for the outgoing MTA, and relist itself (one process, store in the same
temporary directory).  Then it replays every SMTP transaction of the
``fixtures/mailman`` corpus (what a real Mailman 3 sent) through relist over SMTP,
verifies what reached the sink as a receiver would (relist's DKIM signatures and ARC
seal, and on the preserve list the poster signatures that were valid on arrival), and
ends with a summary per list read back from the store, counted per post (as
``relist report`` counts: relist.core.report).  ``--verbose`` adds what relist did to
each transaction and the relayed headers; ``--keep DIR`` keeps the store with a
configuration file for ``relist explain`` and ``relist report``.
"""

from __future__ import annotations

import contextlib
import json
import smtplib
import sqlite3
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from relist.edge.verifier import check_bytes
from relist.config import parse, with_overrides
from relist.core.report.text import pairs
from relist.core.sign.signing_keys import dns_record
from relist.edge.dns import Resolver
from relist.edge.history import load_report
from relist.edge.key_files import generate, write_private_key
from relist.sandbox.dnsserver import DNSServer, split_txt
from relist.sandbox.sink import Sink
from relist.server import ThreadedServer, setup_logging

__all__ = ["Transaction", "load_corpus", "run"]

DEFAULT_FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "mailman"

# Used when relist is installed without its source tree (no fixtures directory).
BUILTIN = (
    b"From: Poster <poster@poster.example>\r\nTo: plain@lists.example.org\r\n"
    b"Subject: Hello list\r\nDate: Sat, 21 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <builtin-1@poster.example>\r\nList-Id: <plain.lists.example.org>\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    b"A built-in demo post.\r\nFrom the demo.\r\n"
)


@dataclass
class Transaction:
    name: str
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


def load_corpus(root: Path) -> list[Transaction]:
    """Every recorded Mailman transaction under ``root`` (cases/*/out-*.eml, notices/...)."""
    out = []
    for eml in sorted(root.glob("*/*/out-*.eml")):
        meta = json.loads(eml.with_suffix(".json").read_text())
        out.append(Transaction(f"{eml.parent.name}/{eml.stem}", meta["mail_from"],
                               list(meta["rcpt_tos"]), eml.read_bytes()))
    return out


def demo_zone(root: Path) -> dict:
    dns_json = root / "dns.json"
    return json.loads(dns_json.read_text()) if dns_json.exists() else {}


LIST_DOMAIN = "lists.example.org"
RSA_SELECTOR, ED25519_SELECTOR = "demo-rsa", "demo-ed"


def make_list_keys(workdir: Path, dns_server: DNSServer) -> dict[str, str]:
    """Generate the demo's list keys (mode 0600) and publish them on the demo DNS."""
    paths = {}
    for algorithm, selector in (("rsa", RSA_SELECTOR), ("ed25519", ED25519_SELECTOR)):
        key = generate(algorithm)
        paths[algorithm] = str(write_private_key(workdir / f"{selector}.key", key))
        dns_server.set(f"{selector}._domainkey.{LIST_DOMAIN}", [split_txt(dns_record(key))])
    return paths


def load_posts(root: Path) -> list[Transaction]:
    """Each case's post as the MTA delivered it to Mailman (cases/*/post.eml)."""
    out = []
    for eml in sorted(root.glob("cases/*/post.eml")):
        meta = json.loads((eml.parent / "meta.json").read_text())
        out.append(Transaction(f"{eml.parent.name}/post", meta["mail_from"], [meta["list"]],
                               eml.read_bytes()))
    return out


def send_ingress(port: int, posts: list[Transaction]) -> int:
    """Deliver the posts over LMTP to relist's ingress leg; return how many were refused."""
    refused = 0
    with smtplib.LMTP("127.0.0.1", port, timeout=30) as client:
        for tx in posts:
            try:
                client.sendmail(tx.mail_from, tx.rcpt_tos, tx.data)
            except smtplib.SMTPException:
                refused += 1
    return refused


def demo_settings(workdir: Path, sink_port: int, nameserver: str, keys: dict[str, str] | None = None,
                  mailman_port: int | None = None) -> dict:
    """The demo's configuration, as the TOML file would hold it."""
    signing = {}
    if keys:
        signing = {"selector": RSA_SELECTOR, "private_key": keys["rsa"],
                   "ed25519_selector": ED25519_SELECTOR, "ed25519_private_key": keys["ed25519"],
                   "arc_seal": True}
    return {
        "server": {"hostname": "relist.demo", "workers": 1},
        "store": {"path": str(workdir / "relist.db")},
        "dns": {"nameservers": [nameserver], "timeout": 2},
        "upstream": {"port": sink_port, "timeout": 10},
        "lists": {
            # Undecorated list: keep the poster's signature valid, repair what Mailman broke.
            "plain@lists.example.org": {"mode": "preserve", **signing},
            # Decorated list: footer and prefix, signed as the list; the poster signatures
            # these break are removed, From munged for p=quarantine/p=reject posters.
            "decorated@lists.example.org": {"mode": "resign", "footer": "-- \n{list_name} list\n",
                                            "subject_prefix": "[{list_name}] ", **signing},
            "verp@lists.example.org": {"mode": "resign", **signing},
            # Per post: preserve when an aligned poster signature survives, else re-sign.
            "dmarc@lists.example.org": {"mode": "auto", **signing},
        },
        **({"ingress": {"deliver_to": f"lmtp:127.0.0.1:{mailman_port}"}} if mailman_port else {}),
    }


def demo_config(workdir: Path, sink_port: int, nameserver: str, keys: dict[str, str] | None = None,
                mailman_port: int | None = None):
    cfg = parse(demo_settings(workdir, sink_port, nameserver, keys, mailman_port))
    if mailman_port:
        return with_overrides(cfg, server={"listen": ("127.0.0.1", 0)}, ingress={"listen": ("127.0.0.1", 0)})
    return with_overrides(cfg, server={"listen": ("127.0.0.1", 0)})


def receiver_view(messages, nameserver: str) -> dict[str, list[int]]:
    """Verify what reached the sink as a receiver would; [passed, total] per kind."""
    host, _, port = nameserver.rpartition(":")
    resolver = Resolver([(host, int(port))], 2.0)
    tally = {"rsa": [0, 0], "ed25519": [0, 0], "poster": [0, 0], "arc": [0, 0]}
    for m in messages:
        verdict = check_bytes(m.data, resolver)
        for s in verdict.signatures:
            if s.kind != "dkim":
                continue
            kind = ("ed25519" if "ed25519" in s.algorithm else "rsa") if s.domain == LIST_DOMAIN else "poster"
            tally[kind][1] += 1
            tally[kind][0] += str(s.result) == "pass"
        if b"\nARC-Seal:" in m.data or m.data.startswith(b"ARC-Seal:"):
            tally["arc"][1] += 1
            tally["arc"][0] += str(verdict.arc.cv) == "pass"
    return tally


def run(verbose: bool = False, fixtures: str | None = None, out=None, keep: str | None = None) -> int:
    out = out or sys.stdout
    root = Path(fixtures) if fixtures else DEFAULT_FIXTURES
    corpus = load_corpus(root) if root.is_dir() else []
    if not corpus:
        print(f"(no corpus under {root}; using the built-in sample post)", file=out)
        corpus = [Transaction("builtin/out-01", "plain-bounces@lists.example.org",
                              ["member@example.com"], BUILTIN)]
    setup_logging("warning")
    if keep:
        Path(keep).mkdir(mode=0o700, parents=True)   # refuses an existing directory
    with (contextlib.nullcontext(keep) if keep
          else tempfile.TemporaryDirectory(prefix="relist-demo-")) as tmp, \
            DNSServer(demo_zone(root)) as dns_server, Sink() as sink, Sink(lmtp=True) as mailman:
        workdir = Path(tmp)
        keys = make_list_keys(workdir, dns_server)
        posts = load_posts(root) if root.is_dir() else []
        cfg = demo_config(workdir, sink.port, dns_server.nameserver, keys, mailman.port if posts else None)
        with ThreadedServer(cfg) as relist:
            store = relist.relay.store
            if posts:
                # The MTA's side: each post passes relist's ingress leg on its way to
                # Mailman, which verifies it and keeps a copy for the preserve-mode repair.
                print(f"relist demo: ingress LMTP on 127.0.0.1:{relist.ingress_port} -> "
                      f"stand-in Mailman on 127.0.0.1:{mailman.port}; {len(posts)} posts", file=out)
                refused = send_ingress(relist.ingress_port, posts)
                print(f"    {len(mailman.messages)} reached Mailman, {refused} refused", file=out)
                store.wait_handled(2 * len(posts))   # per post: its record and its ingress copy
            print(f"relist demo: relist on 127.0.0.1:{relist.port} -> sink MTA on 127.0.0.1:{sink.port}, "
                  f"DNS on {dns_server.nameserver}; {len(corpus)} transactions from {root}", file=out)
            replies = []
            with smtplib.SMTP("127.0.0.1", relist.port, timeout=30) as client:
                client.ehlo("mailman.demo")
                for tx in corpus:
                    try:
                        client.sendmail(tx.mail_from, tx.rcpt_tos, tx.data)
                        replies.append("250")
                    except smtplib.SMTPException as exc:
                        replies.append(str(getattr(exc, "smtp_code", exc)))
            store.wait_handled(len(corpus) + 2 * len(posts))
        failures = sum(not code.startswith("2") for code in replies)
        if verbose:
            _details(workdir / "relist.db", corpus, len(posts), out)
        print(f"\nsink received {len(sink.messages)} messages; {failures} transaction(s) not accepted",
              file=out)
        tally = receiver_view(sink.messages, dns_server.nameserver)
        print("as a receiver verifies them (relist check against the demo DNS):", file=out)
        for kind, label in (("rsa", f"list DKIM rsa-sha256 (d={LIST_DOMAIN})"),
                            ("ed25519", f"list DKIM ed25519-sha256 (d={LIST_DOMAIN})"),
                            ("arc", "ARC chain (cv=pass)"),
                            ("poster", "poster signatures kept (preserve/auto lists)")):
            ok, total = tally[kind]
            print(f"    {label:<44} {ok}/{total} pass", file=out)
        failures += tally["rsa"][1] - tally["rsa"][0] + tally["ed25519"][1] - tally["ed25519"][0]
        if verbose:
            for m in sink.messages:
                head = m.data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
                print("\n" + head, file=out)
        summary(cfg, out)
        if keep:
            conf = write_kept_config(Path(keep), cfg)
            print(f"\nstore and keys kept in {keep}; what happened to a post, and the whole report:\n"
                  f"    relist explain -c {conf} '<plain-01@poster.example>'\n"
                  f"    relist report -c {conf}          (--json, --html report.html)\n"
                  f"(docs/diagnostics.md; the store is SQLite: {Path(keep) / 'relist.db'})", file=out)
        else:
            print("\nrun `relist demo --keep DIR` to keep the store, then `relist explain -c DIR/relist.toml "
                  "ID` and `relist report -c DIR/relist.toml` (docs/diagnostics.md)", file=out)
        return 1 if failures else 0


def _details(db_path: Path, corpus: list[Transaction], skip: int, out) -> None:
    """Per transaction: what relist did (``--verbose``), read back from the store."""
    db = sqlite3.connect(db_path)
    try:
        rows = db.execute("SELECT relist_id, list_address, steps, reply, size_in, size_out, duration_ms "
                          "FROM transactions ORDER BY rowid").fetchall()[skip:]
    finally:
        db.close()
    # One client connection, one transaction at a time: rows are in corpus order.
    for tx, row in zip(corpus, rows):
        relist_id, lst, steps, reply, size_in, size_out, ms = row
        print(f"\n{tx.name}  {relist_id}  list={lst or '-'}  from=<{tx.mail_from}> "
              f"nrcpt={len(tx.rcpt_tos)}  {size_in}->{size_out} bytes  {ms:.1f} ms\n"
              f"    reply: {reply}", file=out)
        for n in json.loads(steps):
            print(f"    {n['step']:<16} {n['action']:<9} {n['detail']}", file=out)


SUMMARY_HEADS = ("list", "mode", "posts", "valid on arrival", "kept intact", "repaired", "re-signed",
                 "mitigated", "broken by")


def summary_rows(cfg) -> list[tuple[str, ...]]:
    """One row per list (``SUMMARY_HEADS``), counted per post from the store."""
    from relist.edge.store import open_reader
    with open_reader(cfg.store) as reader:
        report = load_report(reader).result()
    modes = {lp.address: lp.mode for lp in cfg.relay.lists}
    rows = []
    for address, e in report["lists"].items():
        mode = modes.get(address, "-")
        if mode == "auto" and e["modes"]:
            mode += " (" + ", ".join(f"{m} {n}" for m, n in e["modes"].items()) + ")"
        rows.append((address, mode, str(e["posts"]), str(e["signed_valid_on_arrival"]), str(e["kept_intact"]),
                     str(e["repaired"]), str(e["resigned"]), str(e["mitigated"]), pairs(e["broken_by"])))
    return rows


def summary(cfg, out) -> None:
    rows = summary_rows(cfg)
    print("\nper list, counted per post (Mailman's notices apart):", file=out)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(SUMMARY_HEADS)]
    for i, line in enumerate((SUMMARY_HEADS, *rows)):
        cells = [v.ljust(w) if j in (0, 1, 8) else v.rjust(w) for j, (v, w) in enumerate(zip(line, widths))]
        print("    " + "  ".join(cells).rstrip(), file=out)


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))   # a TOML basic string: JSON's escapes are TOML's


def write_kept_config(keep: Path, cfg) -> Path:
    """``keep/relist.toml``: the demo's store and lists, for ``relist explain`` and
    ``relist report`` (the demo's DNS, sink and ports are gone once it ends)."""
    lines = ["# Written by `relist demo --keep`: the demo's store and lists.",
             "[store]", f"path = {_toml(cfg.store['path'])}", ""]
    for lp in cfg.relay.lists:
        lines.append(f"[lists.{_toml(lp.address)}]")
        lines.append(f"mode = {_toml(lp.mode)}")
        lines.append("")
    path = keep / "relist.toml"
    path.write_text("\n".join(lines))
    return path
