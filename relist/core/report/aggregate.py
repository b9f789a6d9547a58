"""``relist report``: per list, what happened to its *posts* (pure: rows in, figures out).

A post is what Mailman fans out in several transactions (at most ten recipients each,
one per member with VERP): the transactions of one list with one Message-ID.  The
ingress leg's record of the post (``facts.leg = "ingress"``) is its arrival; the
egress transactions are what relist did with it.  Mailman's own notices (welcome,
confirmations...) are counted apart: they are not posts.

Feeding order (relist.edge.history): the transaction rows (``add``), with the notes
of one egress transaction per post (``representatives`` / ``add_steps`` after each
batch of rows: the list's changes, the mode and the mitigation are decided per post
content, so every transaction of a post carries the same ones), then what
verification found on arrival (``arrivals`` / ``add_arrival``), then the bounces
(``add_bounce``).  ``result()`` is the ``--json`` document.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from relist.core.report.notes import breakage_of, facts_of, mitigation_kind, post_notes

__all__ = ["AUTH_CAUSES", "UNMATCHED", "Aggregator", "aligned"]

AUTH_CAUSES = ("dmarc", "dkim", "spf", "auth")
#: The cause of a post valid at ingress whose egress copy matched no ingress copy
#: (relist explain shows the first difference).
UNMATCHED = "mailman (no ingress match)"
TOP = 5


def aligned(signing_domain: str, from_domain: str) -> bool:
    """Relaxed DKIM alignment without the public suffix list: the same domain, or one
    a subdomain of the other (close enough for a report; verification itself uses the
    organisational domain, RFC 9989)."""
    d, f = signing_domain.lower().rstrip("."), from_domain.lower().rstrip(".")
    return bool(d and f) and (d == f or f.endswith("." + d) or d.endswith("." + f))


@dataclass(slots=True)
class _Post:
    list: str
    message_id: str
    day: str = ""             # of its first egress transaction (UTC date)
    rep: str = ""             # whose notes tell the post's: its first delivered transaction
    rep_key: bool = False     # ... which was delivered
    noted: bool = False       # its notes have been read
    ingress: str = ""         # the latest ingress record
    ingress_time: str = ""
    egress: int = 0           # egress transactions
    kept: int = 0             # ... in which a poster signature survived
    repaired: bool = False
    causes: set = field(default_factory=set)
    reached: int = 0
    deferred: int = 0         # transactions answered 4xx
    rejected: int = 0         # transactions answered 5xx
    errors: int = 0           # transactions with an internal error
    notice: bool = False
    mode: str = ""
    mitigation: str = ""      # mitigation_kind, "" when none
    signed: bool = False
    verified_ingress: str = ""  # the ingress copy its egress verdict is about
    unmatched: bool = False   # the egress verdict is not the ingress copy's (none matched)
    valid_on_arrival: bool = False


def _day(time: Any) -> str:
    return str(time)[:10]


def _reached(upstream: Any) -> tuple[int, int]:
    """(recipients the MTA accepted the message for, recipients deferred) from an
    ``upstream`` column: {recipient: reply, "DATA": reply} (SMTP) or per-recipient
    "DATA rcpt" replies (LMTP)."""
    if isinstance(upstream, str):
        try:
            upstream = json.loads(upstream or "{}")
        except ValueError:
            return 0, 0
    if not isinstance(upstream, dict):
        return 0, 0
    data = upstream.get("DATA")
    ok = deferred = 0
    for key, reply in upstream.items():
        if key == "DATA" or key.startswith("DATA "):
            continue
        reply = str(reply)
        # A recipient refused at RCPT keeps that reply; an accepted one gets its own
        # LMTP DATA reply, else the one DATA reply; none: the DATA never happened.
        final = reply if not reply.startswith("2") else upstream.get("DATA " + key, data)
        if final is None:
            continue
        final = str(final)
        ok += final.startswith("2")
        deferred += final.startswith("4")
    return ok, deferred


class Aggregator:
    """See the module doc."""

    def __init__(self) -> None:
        self.posts: dict[tuple[str, str], _Post] = {}
        self.deferred_rcpts: Counter = Counter()
        self.bounces: dict[str, list[tuple]] = {}
        self._by_rep: dict[str, _Post] = {}
        self._pending: dict[str, _Post] = {}
        self._by_arrival: dict[str, list[_Post]] = {}

    # -- 1. transactions ---------------------------------------------------------------------
    def add(self, relist_id: str, time: Any, list_address: str | None, message_id: str, facts: Any,
            upstream: Any, reply: str, steps: Any = None) -> None:
        """One transaction row (``steps``: its notes, when the caller read them too).
        Called for every row of the store: the JSON columns are read in place and only
        decoded when that is not enough."""
        if list_address is None:
            return
        key = (list_address, message_id)
        post = self.posts.get(key)
        if post is None:
            post = self.posts[key] = _Post(list_address, message_id)
        t = time if type(time) is str else str(time)
        if type(facts) is not str:
            facts = json.dumps(facts or {})   # a backend that decodes JSON columns
        if '"leg": "ingress"' in facts:
            if t >= post.ingress_time:
                post.ingress, post.ingress_time = relist_id, t
            return
        post.egress += 1
        if not post.day or t < post.day:
            post.day = t      # the earliest egress time; its date is the post's day
        reply = reply or ""
        code = reply[:1]
        if code == "4":
            post.deferred += 1
        elif code == "5":
            post.rejected += 1
        # The post's notes: of its first delivered transaction (else its first one).
        if not post.rep or (code == "2" and not post.rep_key):
            post.rep, post.rep_key = relist_id, code == "2"
            if steps is not None:
                self._notes(post, steps)
            else:
                post.noted = False
                self._pending[relist_id] = post
        if '"breakage"' in facts:
            entries: list[str] | tuple[str, ...] | None = breakage_of(facts)
            if entries is None:
                entries = facts_of(facts).get("breakage") or ()
            survived = False
            for entry in entries:
                cause = entry[entry.rfind(": ") + 2:] if ": " in entry else entry
                if cause == "survived":
                    survived = True
                else:
                    post.causes.add(cause)
            post.kept += survived
        if '"repairs"' in facts:
            post.repaired = True
        if '"internal_error"' in facts:
            post.errors += 1
        if (code == "2" and type(upstream) is str and '": "4' not in upstream and '": "5' not in upstream
                and "\\" not in upstream):
            # Every reply a 2xx (the common case): one per recipient, and DATA's.
            post.reached += upstream.count('": "') - upstream.count('"DATA')
        else:
            ok, deferred = _reached(upstream)
            post.reached += ok
            self.deferred_rcpts[list_address] += deferred

    # -- 2. the notes of one transaction per post (when ``add`` was not given them) -----------
    def representatives(self) -> list[str]:
        """The transactions whose notes ``add_steps`` should be given: one per post
        added since the last call (``add`` without ``steps``)."""
        self._by_rep, self._pending = self._pending, {}
        return [rid for rid, post in self._by_rep.items() if post.rep == rid]

    def add_steps(self, relist_id: str, steps: Any) -> None:
        post = self._by_rep.get(relist_id)
        if post is not None:
            self._notes(post, steps)

    @staticmethod
    def _notes(post: _Post, steps: Any) -> None:
        notice, mode, mitigation, signed, ingress_id, unmatched = post_notes(steps)
        post.noted = True
        post.notice, post.mode, post.signed = notice, mode, signed
        post.mitigation = mitigation_kind(mitigation) if mitigation else ""
        post.verified_ingress, post.unmatched = ingress_id, unmatched

    # -- 3. arrival verdicts -----------------------------------------------------------------
    def arrivals(self) -> list[str]:
        self._by_arrival = {}
        for p in self.posts.values():
            if p.rep and not p.notice:
                self._by_arrival.setdefault(p.verified_ingress or p.ingress or p.rep, []).append(p)
        return list(self._by_arrival)

    def add_arrival(self, relist_id: str, from_domain: str, alignment: Any, passing: list[str]) -> None:
        """What verification found for ``relist_id``: the From domain, DMARC's alignment
        list (JSON) and the domains of the DKIM signatures that passed."""
        if isinstance(alignment, str) and '"aligned": ' in alignment:
            ok = '"aligned": true' in alignment       # the store's layout: no need to decode
        else:
            try:
                items = json.loads(alignment) if isinstance(alignment, str) else (alignment or [])
            except ValueError:
                items = []
            ok = any(isinstance(a, dict) and a.get("aligned") is True for a in items)
        ok = ok or any(aligned(d, from_domain or "") for d in passing)
        for post in self._by_arrival.get(relist_id, ()):
            post.valid_on_arrival = post.valid_on_arrival or ok
            if ok and post.unmatched and not post.kept and not post.causes:
                # Valid at ingress, but what Mailman sent matched no ingress copy and
                # verified as broken: it broke before relist saw it again.
                post.causes.add(UNMATCHED)

    # -- 4. bounces --------------------------------------------------------------------------
    def add_bounce(self, list_address: str, time: Any, cause: str, recipient: str,
                   poster_domain: str) -> None:
        self.bounces.setdefault(list_address, []).append((_day(time), cause, recipient, poster_domain))

    # -- the result --------------------------------------------------------------------------
    def result(self) -> dict[str, Any]:
        lists: dict[str, dict[str, Any]] = {}
        for post in self.posts.values():
            if not post.egress:
                continue        # arrived, not (yet) sent by Mailman: held, or outside the window
            entry = lists.get(post.list)
            if entry is None:
                entry = lists[post.list] = _empty()
            if post.notice:
                entry["notices"] += 1
                entry["transactions"] += post.egress
                continue
            _count(entry, post)
            day = _day(post.day)
            bucket = entry["by_day"].get(day)
            if bucket is None:
                bucket = entry["by_day"][day] = _empty_day()
            _count(bucket, post)
        for address, rows in self.bounces.items():
            entry = lists.setdefault(address, _empty())
            by_cause: Counter = Counter(r[1] for r in rows)
            entry["bounces"] = len(rows)
            entry["bounces_by_cause"] = dict(by_cause.most_common())
            entry["top_receiver_domains"] = Counter(
                r[2].rpartition("@")[2].lower() for r in rows if r[2]).most_common(TOP)
            entry["top_poster_domains"] = Counter(r[3].lower() for r in rows if r[3]).most_common(TOP)
            for day, cause, _, _ in rows:
                bucket = entry["by_day"].setdefault(day, _empty_day())
                bucket["bounces_by_cause"][cause] = bucket["bounces_by_cause"].get(cause, 0) + 1
        for address, entry in lists.items():
            entry["deferred_recipients"] = self.deferred_rcpts.get(address, 0)
            entry["broken_by"] = dict(sorted(entry["broken_by"].items(), key=lambda kv: (-kv[1], kv[0])))
            entry["mitigations"] = dict(sorted(entry["mitigations"].items(), key=lambda kv: (-kv[1], kv[0])))
            entry["by_day"] = dict(sorted(entry["by_day"].items()))
        return {"lists": dict(sorted(lists.items()))}


def _empty_day() -> dict[str, Any]:
    return {"posts": 0, "signed_valid_on_arrival": 0, "kept_valid": 0, "resigned": 0, "mitigated": 0,
            "broken_by": {}, "bounces_by_cause": {}}


def _empty() -> dict[str, Any]:
    return {"posts": 0, "signed_valid_on_arrival": 0, "kept_valid": 0, "kept_intact": 0, "repaired": 0,
            "resigned": 0, "mitigated": 0, "broken_by": {}, "bounces_by_cause": {}, "mitigations": {},
            "modes": {}, "members_reached": 0, "transactions": 0, "notices": 0, "deferred": 0,
            "deferred_recipients": 0, "rejected": 0, "internal_errors": 0, "bounces": 0,
            "top_receiver_domains": [], "top_poster_domains": [], "by_day": {}}


def _count(entry: dict[str, Any], post: _Post) -> None:
    """Add one post to a list's (or a day's) figures."""
    entry["posts"] += 1
    kept = post.kept > 0 and post.kept == post.egress   # in every transaction of the post
    entry["signed_valid_on_arrival"] += post.valid_on_arrival
    entry["kept_valid"] += kept
    entry["resigned"] += post.mode == "resign" and post.signed
    entry["mitigated"] += bool(post.mitigation)
    for cause in post.causes:
        entry["broken_by"][cause] = entry["broken_by"].get(cause, 0) + 1
    if "kept_intact" not in entry:
        return   # a day: the charts' figures only
    entry["kept_intact"] += kept and not post.repaired
    entry["repaired"] += kept and post.repaired
    if post.mitigation:
        entry["mitigations"][post.mitigation] = entry["mitigations"].get(post.mitigation, 0) + 1
    if post.mode:
        entry["modes"][post.mode] = entry["modes"].get(post.mode, 0) + 1
    entry["members_reached"] += post.reached
    entry["transactions"] += post.egress
    entry["deferred"] += post.deferred
    entry["rejected"] += post.rejected
    entry["internal_errors"] += post.errors
