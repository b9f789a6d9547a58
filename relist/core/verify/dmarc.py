"""DMARC (RFC 9989): policy discovery by the DNS Tree Walk, DKIM alignment, result.

SPF is out of scope: relist is not at the SMTP edge, so only DKIM identifiers are
evaluated (docs/verification.md).  The walk is progressive: ``questions`` names only
what the facts so far make necessary, and the edge calls ``plan()`` again with the
answers.

- §4.10: query ``_dmarc.<author>``; then from the parent (or, for eight or more
  labels, from the last seven labels) down to the TLD; at most eight queries; a
  single valid record with psd=y or psd=n stops the walk; several v=DMARC1 records
  at one name are all discarded.
- §4.10.1: the record applied is the Author Domain's own (``p``), else the
  Organizational Domain's, else the PSD's (``sp`` for an existing Author Domain,
  ``np`` for a non-existent one, each falling back to ``p``).  An invalid p/sp/np
  with a valid rua acts as p=none; without rua there is no DMARC.
- §4.10.2: the Organizational Domain, longest name first: psd=n there; psd=y above
  the start means one label below it; else the record with the fewest labels; else
  the starting domain.
- §4.4.1: a passing DKIM signature aligns strictly when d= is the Author Domain,
  relaxed when both have the same Organizational Domain.  A signature from a key in
  testing mode (t=y) does not count (RFC 6376 §3.6.1).
"""

from __future__ import annotations


import re
from dataclasses import dataclass, field

from relist.core.addresses import mailboxes
from relist.core.verify.results import Alignment, DmarcResult, SignatureResult
from relist.core.dkim.tags import TagError, parse_tags, valid_domain
from relist.core.facts import Facts, Question, Status
from relist.core.memo import small_lru_cache
from relist.core.message import HeaderField, RawMessage

__all__ = ["MAX_QUERIES", "author_domain", "evaluate", "questions", "walk", "walk_targets"]

MAX_QUERIES = 8
POLICIES = ("none", "quarantine", "reject")
_VERSION = re.compile(r"^[ \t]*v[ \t]*=[ \t]*DMARC1[ \t]*(;|$)")


@dataclass(frozen=True, slots=True)
class Record:
    name: str
    text: str
    tags: dict

    @property
    def psd(self) -> str:
        return self.tags.get("psd", "").strip().lower()


@dataclass(frozen=True, slots=True)
class Walk:
    start: str
    found: tuple[Record, ...] = ()
    pending: Question | None = None     # the next name the facts do not answer
    temperror: str = ""                 # a name whose answer was a temporary error
    queries: int = 0
    notes: tuple[str, ...] = ()
    own_answered: bool = False          # the first query (the start itself) is answered

    @property
    def complete(self) -> bool:
        return self.pending is None and not self.temperror

    def record_at(self, name: str) -> Record | None:
        return next((r for r in self.found if r.name == name), None)


def walk_targets(domain: str) -> list[str]:
    """The names (without ``_dmarc.``) the Tree Walk queries, in order (§4.10)."""
    return [name for name, _ in _targets(domain)]


@small_lru_cache(4096, 1024)
def _targets(domain: str) -> tuple[tuple[str, Question], ...]:
    """(name, its ``_dmarc.`` question) for each name the walk queries; cached, the
    same author domains come back post after post."""
    return tuple((name, _question(name)) for name in _walk_names(domain))


def _walk_names(domain: str) -> list[str]:
    labels = domain.split(".")
    rest = labels[1:] if len(labels) < 8 else labels[-7:]
    names = [domain]
    while rest:
        names.append(".".join(rest))
        rest = rest[1:]
    return names[:MAX_QUERIES]


def _question(name: str) -> Question:
    return Question.txt("_dmarc." + name)


def walk(domain: str, facts: Facts, stop_after_first: bool = False) -> Walk:
    """Walk as far as the facts allow."""
    found: list[Record] = []
    notes: list[str] = []
    queries = 0
    for n, (name, q) in enumerate(_targets(domain)):
        answer = facts.answers.get(q)
        if answer is None:
            return Walk(domain, tuple(found), q, "", queries, tuple(notes), n > 0)
        queries += 1
        if answer.status == Status.TEMPERROR:
            return Walk(domain, tuple(found), None, name, queries, tuple(notes), n > 0)
        rec, note = _read(name, tuple(answer.records) if answer.status == Status.FOUND else ())
        if note:
            notes.append(note)
        elif rec is not None:
            found.append(rec)
            if rec.psd in ("y", "n"):
                break
        if stop_after_first and n == 0 and found:
            return Walk(domain, tuple(found), None, "", queries, tuple(notes), True)
    return Walk(domain, tuple(found), None, "", queries, tuple(notes), True)


@small_lru_cache(4096, 2048)
def _read(name: str, records: tuple[bytes, ...]) -> tuple[Record | None, str]:
    """(the DMARC record at ``_dmarc.<name>``, or a note why none is used) from the TXT
    records found there.  Cached: a pure function of its arguments, and the same
    policy records come back post after post (Record is frozen; its tags are only
    read)."""
    texts = [r.decode("utf-8", "replace") for r in records]
    texts = [t for t in texts if _VERSION.match(t)]
    if len(texts) > 1:
        return None, f"{len(texts)} DMARC records at _dmarc.{name}: all discarded"
    if texts:
        try:
            return Record(name, texts[0], parse_tags(texts[0])), ""
        except TagError as exc:
            return None, f"invalid DMARC record at _dmarc.{name}: {exc}"
    return None, ""


def org_domain(w: Walk) -> str:
    """§4.10.2 selection over a completed walk."""
    for rec in w.found:                         # longest name first
        if rec.psd == "n":
            return rec.name
        if rec.psd == "y" and rec.name != w.start:
            below = w.start[: -len(rec.name)].rstrip(".").split(".")[-1]
            return f"{below}.{rec.name}"
    if w.found:
        return min(w.found, key=lambda r: r.name.count(".")).name
    return w.start


def author_domain(msg: RawMessage) -> tuple[str, str]:
    """(Author Domain, problem): one From field with addresses in one domain (§5.3.1)."""
    froms = msg.get_all("from")
    if not froms:
        return "", "no From field"
    if len(froms) > 1:
        return "", f"{len(froms)} From fields"
    return _from_field(froms[0].raw)


@small_lru_cache(4096, 1024)
def _from_field(raw: bytes) -> tuple[str, str]:
    # Cached by the field's bytes: its text() (an unfolding regex) is a pure function
    # of them.
    return _from_domain(HeaderField(raw, "from").text())


@small_lru_cache(4096, 1024)
def _from_domain(text: str) -> tuple[str, str]:
    # Cached: plan() asks for it every DNS round and the step again (email's address
    # parser was a third of the per-message core time); a pure function of the text.
    domains = set()
    for _, addr in mailboxes(text):   # (nested comments: relist.core.addresses)
        if "@" in addr:
            d = valid_domain(addr.rpartition("@")[2])
            domains.add(d or "")
    if not domains:
        return "", "no address with a domain in From"
    if "" in domains:
        return "", "From domain is not a valid domain name"
    if len(domains) > 1:
        return "", f"From has {len(domains)} domains"
    return domains.pop(), ""


def _shares_parent(a: str, b: str) -> bool:
    return a.rsplit(".", 1)[-1] == b.rsplit(".", 1)[-1]


def _policy(rec: Record, author: str, facts: Facts, exists_needed: list) -> tuple[str, str, str]:
    """(policy, tag, problem) for the record applied to ``author``."""
    tags = rec.tags
    p = tags.get("p", "").strip().lower()
    sp = tags.get("sp", "").strip().lower() if "sp" in tags else None
    np = tags.get("np", "").strip().lower() if "np" in tags else None
    bad = p not in POLICIES or (sp is not None and sp not in POLICIES) or \
        (np is not None and np not in POLICIES)
    if bad:
        rua = [u for u in tags.get("rua", "").split(",") if re.match(r"^\s*[A-Za-z][A-Za-z0-9+.-]*:\S", u)]
        if rua:
            return "none", "p", "invalid p/sp/np with a valid rua: treated as p=none (RFC 9989 §4.10.1)"
        return "", "", "record has no valid p/sp/np and no valid rua: DMARC not applied (RFC 9989 §4.10.1)"
    if rec.name == author:
        return p, "p", ""
    if sp is None and np is None:
        return p, "p", ""
    exists = _exists(author, facts)
    exists_needed.append(author)
    if exists is False:
        return (np, "np", "") if np is not None else (p, "p", "")
    return (sp, "sp", "") if sp is not None else (p, "p", "")


def _exists(domain: str, facts: Facts) -> bool | None:
    """RFC 9989 App. A.4: NXDOMAIN for the name means it does not exist."""
    answer = facts.answers.get(Question.txt(domain))
    if answer is None or answer.status == Status.TEMPERROR:
        return None
    return not (answer.status == Status.ABSENT and "NXDOMAIN" in answer.detail.upper())


@dataclass
class _Discovery:
    walk: Walk
    record: Record | None = None
    pending: set = field(default_factory=set)
    temperror: str = ""


def _discover(author: str, facts: Facts, need_org: bool) -> _Discovery:
    first = walk(author, facts, stop_after_first=not need_org)
    out = _Discovery(walk=first)
    if first.pending is not None:
        out.pending.add(first.pending)
    if first.temperror:
        out.temperror = first.temperror
    own = first.record_at(author)
    if own is not None:
        out.record = own
        return out
    if not first.complete:
        return out
    org = org_domain(first)
    rec = first.record_at(org) or next((r for r in first.found if r.psd == "y"), None)
    out.record = rec
    return out


def _candidates(author: str, signatures: tuple[SignatureResult, ...], require_pass: bool):
    for s in signatures:
        if s.kind != "dkim" or not s.domain or (require_pass and not s.passed):
            continue
        yield s


def questions(msg: RawMessage, facts: Facts, signatures: tuple[SignatureResult, ...] | None,
              dkim_domains: tuple[str, ...]) -> set[Question]:
    """The DMARC names needed next given ``facts``."""
    author, problem = author_domain(msg)
    if problem:
        return set()
    relaxed_needed = any(d != author and _shares_parent(d, author) for d in dkim_domains)
    disc = _discover(author, facts, need_org=False)
    wanted = set(disc.pending)
    if disc.record is None or disc.temperror:
        return wanted
    exists_needed: list = []
    _policy(disc.record, author, facts, exists_needed)
    for name in exists_needed:
        if Question.txt(name) not in facts.answers:
            wanted.add(Question.txt(name))
    if disc.record.tags.get("adkim", "r").strip().lower() == "s" or not relaxed_needed:
        return wanted
    full = walk(author, facts)
    if full.pending is not None:
        wanted.add(full.pending)
    for d in set(dkim_domains):
        if d != author and _shares_parent(d, author):
            w = walk(d, facts)
            if w.pending is not None:
                wanted.add(w.pending)
    return wanted


def evaluate(msg: RawMessage, facts: Facts, signatures: tuple[SignatureResult, ...]) -> DmarcResult:
    """The DMARC result for the message, given the DKIM results."""
    author, problem = author_domain(msg)
    if problem:
        result = "permerror" if ("From fields" in problem or "domains" in problem) else "none"
        return DmarcResult(result=result, reason=f"{problem}: DMARC not possible (RFC 9989 §5.3.1)")
    disc = _discover(author, facts, need_org=False)
    queries = disc.walk.queries
    if disc.record is None:
        if disc.temperror or disc.pending:
            pending = disc.walk.pending
            name = disc.temperror or (pending.qname if pending is not None else "?")
            return DmarcResult(result="temperror", domain=author, queries=queries,
                               reason=f"DNS temporary error for _dmarc.{name}" if disc.temperror
                               else f"{name} not resolved")
        note = "; ".join(disc.walk.notes)
        return DmarcResult(result="none", domain=author, queries=queries,
                           reason="no DMARC policy record" + (f" ({note})" if note else ""))
    rec = disc.record
    policy, tag, problem = _policy(rec, author, facts, [])
    tags = rec.tags
    testing = tags.get("t", "").strip().lower() == "y"
    pct = int(tags["pct"]) if tags.get("pct", "").strip().isdigit() else None
    adkim = "s" if tags.get("adkim", "r").strip().lower() == "s" else "r"
    base = dict(domain=author, policy_domain=rec.name, record=rec.text[:500], policy=policy,
                policy_tag=tag, testing=testing, pct=pct, adkim=adkim, queries=queries)
    if not policy:
        return DmarcResult(result="none", reason=problem, **base)
    full = walk(author, facts)
    org = org_domain(full) if full.complete else ""
    base["org_domain"] = org
    alignments = []
    for s in _candidates(author, signatures, require_pass=True):
        alignments.append(_align(s, author, org, adkim, full, facts))
    counted = [a for a in alignments if not a.reason.startswith("key in testing")]
    comment = f"p={policy}" + (f" ({tag})" if tag != "p" else "") + (" t=y" if testing else "")
    if problem:
        comment += f"; {problem}"
    for a in counted:
        if a.aligned:
            return DmarcResult(result="pass", alignment=tuple(alignments),
                               reason=f"{comment}; aligned DKIM d={a.domain} ({a.mode})", **base)
    if any(a.aligned is None for a in counted):
        return DmarcResult(result="temperror", alignment=tuple(alignments),
                           reason=f"{comment}; alignment undecided (DNS)", **base)
    why = "no passing DKIM signature" if not alignments else "no passing DKIM signature aligns"
    return DmarcResult(result="fail", alignment=tuple(alignments),
                       reason=f"{comment}; {why} (SPF not evaluated)", **base)


def _align(s: SignatureResult, author: str, org: str, adkim: str, full: Walk,
           facts: Facts) -> Alignment:
    mode = "strict" if adkim == "s" else "relaxed"
    if s.key_testing:
        return Alignment(s.domain, s.selector, mode, False, "", "key in testing mode (t=y): not counted")
    if s.domain == author:
        return Alignment(s.domain, s.selector, mode, True, org or author, "d= is the From domain")
    if mode == "strict":
        return Alignment(s.domain, s.selector, mode, False, "", "strict: d= is not the From domain")
    if not _shares_parent(s.domain, author):
        return Alignment(s.domain, s.selector, mode, False, "", "no common parent domain")
    if not full.complete:
        return Alignment(s.domain, s.selector, mode, None, "",
                         "From domain's Organizational Domain unknown (DNS)")
    w = walk(s.domain, facts)
    if not w.complete:
        return Alignment(s.domain, s.selector, mode, None, "",
                         "d= Organizational Domain unknown (DNS)")
    d_org = org_domain(w)
    aligned = d_org == org
    return Alignment(s.domain, s.selector, mode, aligned, d_org,
                     f"Organizational Domains {d_org} and {org}"
                     + (" match" if aligned else " differ"))
