"""Prometheus metrics (``[metrics] listen``, docs/metrics.md).

Off by default: with ``listen = ""`` nothing here runs and ``prometheus_client`` is
never imported; ``store_failed`` and ``recorder`` cost one test of a module global.

On, ``start`` runs in the process that binds the sockets (the parent of the workers,
before it forks): it creates a private directory for the library's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, removed again by ``Exporter.stop``), builds the metric
families, and serves the exposition over HTTP from a thread, read by the library's
``MultiProcessCollector`` from every worker's files, so that a scrape sums what all
workers counted (those that have exited too: their counts stay).  Each worker, after
the fork, closes its copy of the HTTP socket (``forked``) and counts into its own
memory-mapped file; the parent calls ``process_dead`` for a worker that exited.

What is counted is read from the finished ``Record`` (and the replies) at the
composition root (``relist.app`` calls a ``Recorder``): the core computes nothing for
metrics.  Every label value comes from a fixed vocabulary or from the configuration
(list addresses of configured ``[lists."ADDRESS"]`` sections; any other list is
``other``), never from what a message says, so a sender cannot add time series.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import os
import re
import shutil
import tempfile
from typing import Any

from relist.core import pipeline
from relist.core.guard import UNGUARDED
from relist.core.model import Action, Record, Reply
from relist.core.policy import RelayPolicy
from relist.core.steps import dmarc_mitigation, mode
from relist.edge.store.rows import bounce_counts

__all__ = ["Exporter", "Recorder", "forked", "process_dead", "recorder", "start", "store_failed"]

log = logging.getLogger("relist")

ENV = "PROMETHEUS_MULTIPROC_DIR"
# Seconds: from a few ms (a cached post) to [upstream] data_timeout's 600 s.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
POSTS_REMEMBERED = 4096      # Message-IDs per worker: a post's transactions count as one post
PIPELINE_REMEMBERED = 1024   # pipeline durations waiting for their transaction's end

NO_LIST, OTHER = "none", "other"
# Label vocabularies (docs/metrics.md).  Anything outside them is counted as "other".
SIGNATURE_RESULTS = frozenset({"pass", "fail", "neutral", "temperror", "permerror", "policy", "none"})
DMARC_RESULTS = frozenset({"pass", "fail", "none", "temperror", "permerror"})
BOUNCE_CAUSES = frozenset({"dmarc", "dkim", "spf", "auth", "mailbox", "spam", "other"})
BREAKAGE_CAUSES = frozenset(pipeline.step_names()) | {"mailman", "survived", UNGUARDED}
# relist's own 4xx replies by enhanced status code (relist.edge.smtp_in / smtp_out).
_STALE = re.compile(r"relist-metrics-(\d+)-\w+")
_OWN_DEFERRALS = {"4.4.1": "unreachable", "4.4.2": "upstream_failed", "4.3.0": "internal_error",
                  "4.5.0": "reissue_refused"}


class _Families:
    """The metric families (created once per process tree, before the fork)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram
        c = {"registry": None}   # exposed through MultiProcessCollector only
        self.transactions = Counter("relist_transactions", "SMTP/LMTP transactions finished, by leg, "
                                    "list and outcome (relayed, deferred, rejected)",
                                    ["leg", "list", "outcome"], **c)
        self.posts = Counter("relist_posts", "Posts relayed on the egress leg, by list and the mode "
                             "chosen for the post (once per post, not per transaction)",
                             ["list", "mode"], **c)
        self.signatures = Counter("relist_arrival_signatures", "Poster DKIM signatures on arrival, by "
                                  "verification result", ["leg", "list", "result"], **c)
        self.dmarc = Counter("relist_arrival_dmarc", "Posts by DMARC result on arrival",
                             ["leg", "list", "result"], **c)
        self.breakage = Counter("relist_signature_breakage", "Poster signatures valid on arrival, by what "
                                "broke them (a step, mailman, unguarded step) or survived",
                                ["list", "cause"], **c)
        self.mitigations = Counter("relist_mitigations", "Posts whose From was munged or that were wrapped "
                                   "for DMARC, by method and reason", ["list", "method", "reason"], **c)
        self.bounces = Counter("relist_bounces", "Failed recipients in bounces for a list's bounce "
                               "address (ingress leg), by cause and what relist did",
                               ["list", "cause", "action"], **c)
        self.deferrals = Counter("relist_deferrals", "Transactions answered 4xx, by reason",
                                 ["leg", "reason"], **c)
        self.errors = Counter("relist_internal_errors", "Transactions in which relist hit a bug "
                              "(recorded, see the store's internal_error)", ["leg"], **c)
        self.store_errors = Counter("relist_store_errors", "Records the store failed to write or "
                                    "dropped (mail keeps flowing)", **c)
        self.upstream = Histogram("relist_upstream_latency_seconds", "From handing the message to the "
                                  "next hop to its final reply", ["leg"], buckets=BUCKETS, **c)
        self.pipeline = Histogram("relist_pipeline_latency_seconds", "relist's own work on a message "
                                  "(DNS lookups included), end of DATA to the bytes to send",
                                  ["leg"], buckets=BUCKETS, **c)


_families: _Families | None = None   # set by start(): metrics are on in this process tree


def store_failed(n: int) -> None:
    """The store failed to write (or dropped) ``n`` records.  A no-op with metrics off."""
    families = _families
    if families is not None and n > 0:
        families.store_errors.inc(n)


class Exporter:
    """The HTTP exposition in the parent process, and the multiprocess directory."""

    def __init__(self, directory: str, httpd, thread, address: tuple[str, int]):
        self.directory, self.httpd, self.thread, self.address = directory, httpd, thread, address

    def stop(self) -> None:
        """Stop serving and remove the directory (the parent, at exit)."""
        global _families, _exporter
        self.httpd.shutdown()
        self.httpd.server_close()
        shutil.rmtree(self.directory, ignore_errors=True)
        if os.environ.get(ENV) == self.directory:
            del os.environ[ENV]
        _families = _exporter = None


_exporter: Exporter | None = None


def start(listen: tuple[str, int]) -> Exporter:
    """Turn metrics on for this process and the workers it forks next, and serve the
    exposition on ``listen`` (an OSError naming the address when it cannot be bound)."""
    global _families, _exporter
    _remove_stale()
    directory = tempfile.mkdtemp(prefix=f"relist-metrics-{os.getpid()}-")   # private (0700) and empty
    os.environ[ENV] = directory
    try:
        from prometheus_client import CollectorRegistry, multiprocess, start_http_server, values
        # The library picks its value class when first imported; here it is imported with
        # the directory set, unless something imported it before (then: pick again).
        values.ValueClass = values.get_value_class()
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        host, port = listen
        try:
            httpd, thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            raise OSError(exc.errno, f"[metrics] cannot listen on {where}: {exc.strerror or exc}") from None
        _families = _Families()
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        del os.environ[ENV]
        raise
    _exporter = Exporter(directory, httpd, thread, httpd.server_address[:2])
    log.info("metrics: Prometheus exposition on http://%s:%d/metrics",
             *((f"[{host}]" if ":" in host else host), _exporter.address[1]))
    if not _loopback(host):   # only with [metrics] allow_remote = true (relist.config)
        log.warning("metrics: served on %s without authentication to any client that can reach it", host)
    return _exporter


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _remove_stale() -> None:
    """Directories left by a relist that was killed (SIGKILL: no ``Exporter.stop``):
    this user's ``relist-metrics-PID-*`` whose process is gone."""
    base = tempfile.gettempdir()
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        m = _STALE.fullmatch(name)
        if m is None:
            continue
        path = os.path.join(base, name)
        try:
            if os.lstat(path).st_uid != os.getuid():
                continue
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:   # PermissionError: that process lives (another user's); gone meanwhile
            continue


def forked() -> None:
    """In a worker just forked: close its copy of the exposition's listening socket
    (the parent serves it; counting goes on in this process's own files)."""
    if _exporter is not None:
        _exporter.httpd.socket.close()


def process_dead(pid: int) -> None:
    """The parent's bookkeeping for a worker that exited (its counts stay)."""
    if _exporter is not None:
        from prometheus_client import multiprocess
        multiprocess.mark_process_dead(pid, _exporter.directory)


def recorder(leg: str, policy: RelayPolicy) -> Recorder | None:
    """What one leg of a worker counts with; None when metrics are off."""
    return None if _families is None else Recorder(_families, leg, policy)


def _outcome(reply: Reply) -> str:
    return "relayed" if reply.code < 300 else "deferred" if reply.code < 500 else "rejected"


def deferral_reason(record: Record | None, upstream: dict[str, Reply], reply: Reply) -> str:
    """Why a transaction was answered 4xx, from a fixed vocabulary (docs/metrics.md)."""
    if any(r == reply for r in upstream.values()):
        return "next_hop"          # the MTA's (or, ingress, Mailman's) own 4xx, passed on
    if record is not None and record.steps and record.reply == reply:
        return "relist_refused"    # the core deferred it (unknown_list = "defer", key not loaded)
    return _OWN_DEFERRALS.get(reply.enhanced, OTHER)


def mitigation_reason(lp, verdict) -> str:
    """Why DMARC mitigation acted, from the structured verdict and the list's settings,
    in the order ``relist.core.steps.dmarc_mitigation.decide`` tests them."""
    if lp.dmarc_trigger == "always":
        return "always"
    if verdict is None:
        return "no_verdict"
    if lp.dmarc_trigger == "evidence":
        return "evidence"
    dmarc = verdict.dmarc
    if dmarc.result == "temperror":
        return "policy_unknown"
    policy = dmarc.effective_policy
    return f"policy_{policy}" if policy in ("quarantine", "reject") else OTHER


def _mode(record: Record) -> str:
    for note in record.steps:
        if note.step == mode.NAME:
            word = note.detail.split(" ", 1)[0]
            return word if word in (mode.PRESERVE, mode.RESIGN) else ""
    return ""


class Recorder:
    """Counts one leg's transactions in one worker (``relist.app.Relay`` calls it)."""

    def __init__(self, families: _Families, leg: str, policy: RelayPolicy):
        self.m = families
        self.leg = leg
        self.policy = policy
        self.lists = frozenset(lp.address for lp in policy.lists)
        self.posts: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
        self.pipeline_s: dict[str, float] = {}
        self._children: dict[tuple, Any] = {}   # (family, label values) -> child: labels() is slow

    def _at(self, family, *values: str):
        """``family.labels(*values)``, kept (the label sets are few: module doc)."""
        key = (id(family), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(*values)
        return child

    def list_label(self, address: str | None) -> str:
        if not address:
            return NO_LIST
        address = address.lower()
        return address if address in self.lists else OTHER

    def pipeline_done(self, relist_id: str, seconds: float) -> None:
        """The core (and its DNS lookups) took ``seconds`` for this transaction."""
        self._at(self.m.pipeline, self.leg).observe(seconds)
        if len(self.pipeline_s) >= PIPELINE_REMEMBERED:
            self.pipeline_s.pop(next(iter(self.pipeline_s)))
        self.pipeline_s[relist_id] = seconds

    def bounce(self, list_address: str, cause: Any, action: str) -> None:
        cause = str(getattr(cause, "value", cause))
        self._at(self.m.bounces, self.list_label(list_address), cause if cause in BOUNCE_CAUSES else OTHER,
                              action if action in ("mailman", "owner") else OTHER).inc()

    def transaction(self, relist_id: str, record: Record | None, upstream: dict[str, Reply],
                    reply: Reply, seconds: float) -> None:
        """One finished transaction: ``seconds`` from the end of DATA (or MAIL, for a
        transaction that ended there) to the reply."""
        m, leg = self.m, self.leg
        pipeline_s = self.pipeline_s.pop(relist_id, None)
        list_label = self.list_label(record.list_address if record is not None else None)
        outcome = _outcome(reply)
        self._at(m.transactions, leg, list_label, outcome).inc()
        if outcome == "deferred":
            self._at(m.deferrals, leg, deferral_reason(record, upstream, reply)).inc()
        if any(k == "DATA" or k.startswith("DATA ") for k in upstream):
            self._at(m.upstream, leg).observe(max(0.0, seconds - (pipeline_s or 0.0)))
        if record is None:
            return
        for list_address, cause, action in bounce_counts(record, reply):
            self.bounce(list_address, cause, action)
        if record.findings.internal_error:
            self._at(m.errors, leg).inc()
        if outcome != "relayed" or record.list_address is None:
            return
        if leg == "egress":
            self._post(record, list_label)
        else:
            self._arrival(record, list_label)

    def _post(self, record: Record, list_label: str) -> None:
        """Egress: what happened to one post, counted once for all its transactions."""
        chosen = _mode(record)
        if not chosen:
            return   # not list mail: relayed unchanged (unknown_list = "pass")
        if record.message_id:
            key = (list_label, record.message_id[:512])   # a cross-post counts for each list
            if key in self.posts:
                self.posts.move_to_end(key)
                return
            self.posts[key] = None
            if len(self.posts) > POSTS_REMEMBERED:
                self.posts.popitem(last=False)
        m = self.m
        self._at(m.posts, list_label, chosen).inc()
        self._arrival(record, list_label)
        for entry in record.findings.breakage:
            cause = entry.rpartition(": ")[2]
            self._at(m.breakage, list_label, cause if cause in BREAKAGE_CAUSES else OTHER).inc()
        if any(n.step == dmarc_mitigation.NAME and n.action == Action.APPLIED for n in record.steps):
            lp = self.policy.list_for_address(record.list_address)
            method = lp.dmarc_mitigation if lp.dmarc_mitigation in ("munge_from", "wrap") else OTHER
            self._at(m.mitigations, list_label, method, mitigation_reason(lp, record.verdict)).inc()

    def _arrival(self, record: Record, list_label: str) -> None:
        verdict = record.verdict
        if verdict is None:
            return
        m, leg = self.m, self.leg
        for sig in verdict.signatures:
            if sig.kind == "dkim":
                result = str(sig.result)
                self._at(m.signatures, leg, list_label,
                         result if result in SIGNATURE_RESULTS else OTHER).inc()
        result = str(verdict.dmarc.result)
        self._at(m.dmarc, leg, list_label, result if result in DMARC_RESULTS else OTHER).inc()
