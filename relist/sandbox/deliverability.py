"""Deliverability of the real Mailman corpus through relist, judged by rspamd.

For each relist configuration (``MODES``) and each DMARC policy of the posters'
domain (``POLICIES``), all on 127.0.0.1:

1. relist starts with both legs (the list keys generated, published on a loopback
   DNS server with the corpus's ``dns.json``, an SPF record and a p=reject DMARC
   record for the list domain), every list of ``fixtures/mailman`` in that mode and
   no decoration of relist's own (Mailman's prefix and footer are already in what it
   sends, as deployed: docs/deployment.md);
2. each case's ``post.eml`` passes the ingress leg (LMTP) on its way to a stand-in
   Mailman, then every transaction Mailman really sent is replayed through the egress
   leg into a sink MTA;
3. rspamd (``relist.sandbox.rspamd``: its dkim, spf, dmarc and arc modules only)
   judges every message the sink received, twice: **direct** (from 127.0.0.1, inside
   the list domain's SPF) and **forwarded** (from 192.0.2.25, outside it: SPF fails,
   only DKIM can carry DMARC).

The configuration ``mailman`` is the baseline: what Mailman sent, judged without
relist.  ``scripts/deliverability.py`` prints the tables in docs/modes.md from this;
tests/test_deliverability.py holds relist to the goals (module ``goals``).
"""

from __future__ import annotations

import smtplib
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from relist.config import parse, with_overrides
from relist.demo import DEFAULT_FIXTURES, LIST_DOMAIN, Transaction, demo_zone, load_corpus, load_posts, \
    make_list_keys, send_ingress, RSA_SELECTOR, ED25519_SELECTOR
from relist.core.message import RawMessage
from relist.sandbox.dnsserver import DNSServer
from relist.sandbox.rspamd import Judgement, Rspamd
from relist.sandbox.sink import Sink
from relist.server import ThreadedServer

__all__ = ["DIRECT", "FORWARDED", "MODES", "POLICIES", "Outcome", "goals", "run_matrix", "table"]

POSTER = "poster.example"
POLICIES = ("none", "quarantine", "reject")
# name -> list settings (besides the keys); "mailman": no relist at all.
MODES: dict[str, dict | None] = {
    "mailman": None,
    "resign": {"mode": "resign"},
    "preserve": {"mode": "preserve"},
    "auto": {"mode": "auto"},
    "auto, evidence": {"mode": "auto", "dmarc_trigger": "evidence"},
    "resign, wrap": {"mode": "resign", "dmarc_mitigation": "wrap"},
}
DIRECT = ("127.0.0.1", "relist.demo")
FORWARDED = ("192.0.2.25", "forwarder.example")     # TEST-NET-1: only a value in rspamd's IP header


@dataclass(frozen=True)
class Outcome:
    """One transaction as it left (relist's output, or Mailman's for the baseline)."""

    name: str              # "<case>/out-NN" as in the corpus
    list_name: str         # "plain", "decorated", "verp", "dmarc", or "notice"
    signed_at_ingress: bool
    direct: Judgement
    forwarded: Judgement
    content_type: str = ""  # of the message as it left (a wrapped post: multipart/mixed)


@dataclass
class Run:
    mode: str
    policy: str
    outcomes: list[Outcome] = field(default_factory=list)
    refused: int = 0       # transactions relist did not accept (must be 0)

    def count(self, how: str, *verdicts: str) -> int:
        return sum(getattr(o, how).dmarc in verdicts for o in self.outcomes)


def _zone(root: Path, policy: str) -> dict:
    zone = demo_zone(root)
    zone[f"_dmarc.{POSTER}"] = [f"v=DMARC1; p={policy}"]
    zone[LIST_DOMAIN] = ["v=spf1 ip4:127.0.0.1 -all"]
    zone[f"_dmarc.{LIST_DOMAIN}"] = ["v=DMARC1; p=reject"]
    return zone


def _config(workdir: Path, settings: dict, keys: dict, sink_port: int, mailman_port: int, nameserver: str):
    signing = {"selector": RSA_SELECTOR, "private_key": keys["rsa"],
               "ed25519_selector": ED25519_SELECTOR, "ed25519_private_key": keys["ed25519"]}
    lists = {f"{name}@{LIST_DOMAIN}": {**settings, **signing}
             for name in ("plain", "decorated", "verp", "dmarc")}
    cfg = parse({
        "server": {"hostname": DIRECT[1], "workers": 1},
        "store": {"path": str(workdir / "relist.db")},
        "dns": {"nameservers": [nameserver], "timeout": 2},
        "upstream": {"port": sink_port, "timeout": 10},
        "lists": lists,
        "ingress": {"deliver_to": f"lmtp:127.0.0.1:{mailman_port}"},
    })
    return with_overrides(cfg, server={"listen": ("127.0.0.1", 0)}, ingress={"listen": ("127.0.0.1", 0)})


def _list_of(tx: Transaction) -> str:
    case = tx.name.split("/", 1)[0]
    return "notice" if case[:2].isdigit() else case.split("-", 1)[0]


def _relay(corpus, posts, settings, root: Path, dns: DNSServer, keys: dict, workdir: Path):
    """(what the sink received, in corpus order; refused count) for one relist run."""
    with Sink() as sink, Sink(lmtp=True) as mailman:
        cfg = _config(workdir, settings, keys, sink.port, mailman.port, dns.nameserver)
        with ThreadedServer(cfg) as relist:
            send_ingress(relist.ingress_port, posts)
            relist.relay.store.wait_handled(2 * len(posts))   # the ingress copies are stored
            out, refused = [], 0
            with smtplib.SMTP("127.0.0.1", relist.port, timeout=30) as client:
                client.ehlo("mailman.demo")
                for tx in corpus:
                    before = len(sink.messages)
                    try:
                        client.sendmail(tx.mail_from, tx.rcpt_tos, tx.data)
                    except smtplib.SMTPException:
                        refused += 1
                    out.append(sink.messages[before] if len(sink.messages) > before else None)
        (workdir / "relist.db").unlink(missing_ok=True)
        return out, refused


def run_matrix(modes=tuple(MODES), policies=POLICIES, root: Path | None = None) -> list[Run]:
    """Every (mode, policy) run, judged by one rspamd."""
    root = root or DEFAULT_FIXTURES
    corpus, posts = load_corpus(root), load_posts(root)
    signed = {p.name.split("/", 1)[0]: b"DKIM-Signature:" in p.data.split(b"\r\n\r\n", 1)[0] for p in posts}
    runs = []
    with tempfile.TemporaryDirectory(prefix="relist-deliverability-") as tmp, \
            DNSServer(_zone(root, "none")) as dns, Rspamd(nameserver=dns.nameserver) as rspamd:
        workdir = Path(tmp)
        keys = make_list_keys(workdir, dns)
        for policy in policies:
            dns.set(f"_dmarc.{POSTER}", [f"v=DMARC1; p={policy}"])
            for mode in modes:
                settings = MODES[mode]
                if settings is None:
                    sent = [(tx.mail_from, tx.data) for tx in corpus]
                    refused = 0
                else:
                    delivered, refused = _relay(corpus, posts, settings, root, dns, keys, workdir)
                    sent = [(d.mail_from, d.data) if d is not None else None for d in delivered]
                run = Run(mode, policy, refused=refused)
                for tx, got in zip(corpus, sent):
                    if got is None:
                        continue
                    mail_from, data = got
                    rcpt = tx.rcpt_tos[0]
                    judged = [rspamd.judge(data, ip=ip, helo=helo, mail_from=mail_from, rcpt=rcpt)
                              for ip, helo in (DIRECT, FORWARDED)]
                    kind = (RawMessage.parse(data).header_text("content-type") or "").split(";")[0].strip()
                    run.outcomes.append(Outcome(tx.name, _list_of(tx),
                                                signed.get(tx.name.split("/", 1)[0], False),
                                                *judged, content_type=kind.lower()))
                runs.append(run)
    return runs


def table(runs: list[Run]) -> str:
    """The Markdown tables of docs/modes.md."""
    by = {(r.mode, r.policy): r for r in runs}
    modes = list(dict.fromkeys(r.mode for r in runs))
    total = max(len(r.outcomes) for r in runs)
    lines = ["| configuration | p=reject: rejected (direct / forwarded) | p=quarantine: quarantined "
             "(direct / forwarded) | p=none: DMARC pass (direct / forwarded) | p=none: DMARC fail |",
             "|---|---|---|---|---|"]
    for mode in modes:
        cells = []
        for policy, verdicts in (("reject", ("reject", "quarantine")),
                                 ("quarantine", ("reject", "quarantine")), ("none", ("pass",))):
            r = by.get((mode, policy))
            cells.append("-" if r is None else
                         f"{r.count('direct', *verdicts)} / {r.count('forwarded', *verdicts)} "
                         f"of {len(r.outcomes)}")
        r = by.get((mode, "none"))
        cells.append("-" if r is None else
                     f"{r.count('direct', 'softfail', 'reject', 'quarantine')} of {len(r.outcomes)}")
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    lines += ["", f"Per list under p=none, direct (DMARC pass / messages; {total} messages in all):", "",
              "| configuration | " + " | ".join(("plain", "decorated", "verp", "dmarc", "notice")) + " |",
              "|---|---|---|---|---|---|"]
    for mode in modes:
        r = by.get((mode, "none"))
        if r is None:
            continue
        passed = Counter(o.list_name for o in r.outcomes if o.direct.dmarc == "pass")
        seen = Counter(o.list_name for o in r.outcomes)
        lines.append(f"| {mode} | " + " | ".join(f"{passed[k]}/{seen[k]}" for k in
                                                 ("plain", "decorated", "verp", "dmarc", "notice")) + " |")
    return "\n".join(lines)


def goals(runs: list[Run]) -> list[str]:
    """What issue "Every mode delivers" asks, checked over ``runs``; the failures, or []."""
    failed = []
    by = {(r.mode, r.policy): r for r in runs}
    for r in runs:
        if r.mode == "mailman":
            continue
        if r.refused:
            failed.append(f"{r.mode}, p={r.policy}: relist refused {r.refused} transaction(s)")
        for o in r.outcomes:
            for how in ("direct", "forwarded"):
                j = getattr(o, how)
                if r.policy != "none" and j.rejected:
                    failed.append(f"{r.mode}, p={r.policy}, {how}: {o.name} {j.dmarc}")
                if r.mode.endswith("evidence") and j.dmarc not in ("pass", "none"):
                    failed.append(f"{r.mode}, p={r.policy}, {how}: {o.name} DMARC {j.dmarc} "
                                  "(evidence passes all)")
        if r.policy == "none":
            baseline = by.get(("mailman", "none"))
            before = {o.name: o.direct.dmarc for o in baseline.outcomes} if baseline else {}
            for o in r.outcomes:
                if o.direct.dmarc == "pass":
                    continue
                if before.get(o.name) == "pass":
                    failed.append(f"{r.mode}, p=none: {o.name} passed DMARC from Mailman alone, "
                                  "not through relist")
                if o.list_name == "plain" and o.signed_at_ingress:
                    failed.append(f"{r.mode}, p=none: {o.name} (undecorated list, signed at ingress) "
                                  "fails DMARC")
    return failed
