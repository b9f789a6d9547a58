"""The values that flow through the core: immutable, typed, no IO.

``Envelope`` and ``Context`` come in from the edges; each step takes a ``Work``
(the message plus what is known about it) and returns a new one; the pipeline ends
with an ``Outcome``: the bytes to relay (or none), the ``Record`` to store and the
``Reply`` to give when relist refuses the message itself.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

from relist.core.facts import Facts
from relist.core.message import RawMessage
from relist.core.policy import ListPolicy, RelayPolicy

if TYPE_CHECKING:
    from relist.core.sign.signature import Handoff

__all__ = [
    "Action", "Context", "Envelope", "Findings", "Known", "Outcome", "Record", "Reply",
    "StepNote", "Work", "replace",
]


def _native(cls: type) -> bool:
    """Whether ``cls`` is a class mypyc compiled, whose objects only its ``__init__`` makes."""
    try:
        object.__new__(cls)
    except TypeError:
        return True
    return False


@functools.cache
def _replacer(cls: type):
    """A function ``(obj, changes) -> copy of obj with changes`` for a frozen dataclass
    whose fields are all ``__init__`` parameters and that has no ``__post_init__``,
    compiled once per class (as ``dataclasses`` compiles ``__init__``); None for any
    other class, which ``dataclasses.replace`` then handles."""
    fs = fields(cls)
    if hasattr(cls, "__post_init__") or any(not f.init for f in fs):
        return None
    if _native(cls):   # compiled (relist.core_build): built through its own __init__, in C
        lines = ["def replacer(obj, changes):", "    pop = changes.pop",
                 "    new = cls(" + ", ".join(f"pop({f.name!r}) if {f.name!r} in changes else obj.{f.name}"
                                            for f in fs) + ")"]
    else:
        lines = ["def replacer(obj, changes):", "    new = new_object(cls)", "    pop = changes.pop"]
        for f in fs:
            n = f.name
            lines.append(f"    set_attr(new, {n!r}, pop({n!r}) if {n!r} in changes else obj.{n})")
    lines += ["    if changes:",
              "        raise TypeError(f'{cls.__name__} has no field {next(iter(changes))!r}')",
              "    return new"]
    scope = {"cls": cls, "new_object": object.__new__, "set_attr": object.__setattr__}
    exec("\n".join(lines), scope)   # noqa: S102 - field names of relist's own classes
    return scope["replacer"]


def replace(obj, /, **changes):
    """``dataclasses.replace`` for the core's frozen values, at a third of its cost: the
    new object gets each field directly instead of through ``replace``'s look-ups and
    the generated ``__init__`` (a few of these per step, every post)."""
    replacer = _replacer(type(obj))
    if replacer is None:
        return dataclasses.replace(obj, **changes)
    return replacer(obj, changes)


@dataclass(frozen=True, slots=True)
class Envelope:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    mail_options: tuple[str, ...] = ()
    client_ip: str = ""
    client_helo: str = ""
    # RFC 3848 protocol type relist received this transaction over (the Received
    # field's "with"): "ESMTP" (egress leg, from Mailman) or "LMTP" (ingress leg).
    protocol: str = "ESMTP"


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMTP reply: basic code, enhanced status code (RFC 3463) and text."""

    code: int
    enhanced: str
    text: str

    @property
    def transient(self) -> bool:
        return 400 <= self.code < 500

    def line(self) -> str:
        """The reply as SMTP lines joined by CRLF (no final CRLF)."""
        enh = f"{self.enhanced} " if self.enhanced else ""
        if "\n" not in self.text:     # nearly every reply: one line
            return f"{self.code} {enh}{self.text}"
        lines = self.text.split("\n")
        last = len(lines) - 1
        return "\r\n".join(
            f"{self.code}{'-' if i < last else ' '}{enh}{text}" for i, text in enumerate(lines)
        )

    def __str__(self) -> str:
        return self.line().replace("\r\n", " / ")


class Action(enum.StrEnum):
    """What a step did."""

    APPLIED = "applied"   # changed the message
    RECORDED = "recorded"  # learned something, bytes unchanged
    SKIPPED = "skipped"   # chose not to act (with a reason)


@dataclass(frozen=True, slots=True)
class StepNote:
    """One line of the audit trail: step name, what it did and why."""

    step: str
    action: Action
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"step": self.step, "action": str(self.action), "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Findings:
    """Named facts a transaction records (the store's ``facts`` column), typed: steps
    set them (``Known.found``), the edge adds its own (``Record.found``) and reads
    fields, never strings.  Only fields that differ from their default are stored."""

    leg: str = ""                        # "ingress" on the ingress leg (steps/ingress_list)
    needs_8bitmime: bool | None = None   # downgrade: 8-bit bytes left (None: not looked)
    repairs: tuple[str, ...] = ()        # repair: what it undid
    breakage: tuple[str, ...] = ()       # attribution: "d/s: step that broke it" | "d/s: survived"
    internal_error: str = ""             # a step or the edge hit a bug (relist.core.safety)
    bounce: str = ""                     # a bounce transaction: the action taken (mailman|owner)
    deliver_rcpts: tuple[str, ...] = ()  # the edge delivers to these instead (bounce re-route)
    mail_reissued: str = ""              # the edge re-issued MAIL upstream with this parameter
    reroute_refused: str = ""            # the bounce re-route refused for good (who: what: reply);
                                         # the bounce went as addressed instead

    def items(self) -> tuple[tuple[str, Any], ...]:
        """(name, value) for every field that is set, in declaration order."""
        return tuple((f.name, getattr(self, f.name)) for f in fields(self)
                     if getattr(self, f.name) != f.default)


@dataclass(frozen=True, slots=True)
class Known:
    """What the pipeline has learned about the message so far.

    Each step adds to it by returning a new ``Known`` (``dataclasses.replace``);
    nothing is mutated.  Later steps read what earlier ones found.
    """

    message_id: str = ""
    list_address: str | None = None
    list_source: str = ""          # "list-id", "envelope" or "" when unknown
    list_policy: ListPolicy | None = None
    notice: str = ""               # Mailman's own notice: the From role ("request", "confirm"...);
                                   # "" for a post
    verdict: Any = None            # relist.core.verify results: what verification found
    ingress_copy: Any = None       # egress: the post as the ingress leg saw it (RawMessage)
    mode_chosen: str = ""          # "preserve" | "resign" for this post (step mode); "" before
    # Poster signatures valid on arrival that still verify on the current bytes (their b=
    # values; relist.core.guard), and the message they were last checked on; None: not yet.
    intact: tuple[str, ...] | None = None
    intact_on: Any = None
    breakage: tuple[tuple[str, str], ...] = ()   # ("d/s", first step that broke it | "survived")
    handoff: Handoff | None = None   # the sign step's prepared message, for arc-seal's prepare()
    findings: Findings = Findings()   # named facts recorded with the transaction

    def found(self, **facts: Any) -> Known:
        """A Known with these findings set (``Findings`` field names)."""
        return replace(self, findings=replace(self.findings, **facts))

    @property
    def extra(self) -> tuple[tuple[str, Any], ...]:
        return self.findings.items()


@dataclass(frozen=True, slots=True)
class Work:
    message: RawMessage
    known: Known = field(default_factory=Known)
    notes: tuple[StepNote, ...] = ()

    def note(self, step: str, action: Action, detail: str = "", *, message: RawMessage | None = None,
             known: Known | None = None) -> Work:
        """Return a new Work with a note appended and fields (message, known) replaced.
        (Built directly: ``dataclasses.replace`` was a tenth of the core's Python time.)"""
        return Work(self.message if message is None else message, self.known if known is None else known,
                    self.notes + (StepNote(step, action, detail),))

    def learn(self, **facts) -> Known:
        return replace(self.known, **facts)


@dataclass(frozen=True, slots=True)
class Context:
    """Everything a step may consult besides the message.  Built by the edge."""

    envelope: Envelope
    policy: RelayPolicy
    now: datetime
    relist_id: str
    facts: Facts = field(default_factory=Facts)
    keys: Any = None   # signing keys by path (relist.edge.key_files); opaque to steps that do not sign
    ingress: tuple = ()   # egress leg: the ingress copies with this Message-ID (core.ingress)
    upstream_8bitmime: bool = True   # the upstream MTA offers 8BITMIME (RFC 6152); False: downgrade


@dataclass(frozen=True, slots=True)
class Record:
    """The immutable account of one transaction, as stored."""

    relist_id: str
    time: datetime
    envelope: Envelope
    message_id: str
    list_address: str | None
    size_in: int
    size_out: int
    steps: tuple[StepNote, ...]
    reply: Reply | None = None   # relist's own refusal, if any
    verdict: Any = None          # verification results (see Known.verdict)
    findings: Findings = Findings()
    # A bounce on the ingress leg: its ``bounces`` rows (relist.edge.store.rows), stored
    # with the transaction; their action is ``findings.bounce`` as the transaction ended.
    bounces: tuple[tuple, ...] = ()

    def found(self, **facts: Any) -> Record:
        """A Record with these findings set (``Findings`` field names)."""
        return replace(self, findings=replace(self.findings, **facts))

    @property
    def extra(self) -> tuple[tuple[str, Any], ...]:
        """The findings that are set, as (name, value) pairs (the store's ``facts``)."""
        return self.findings.items()

    def steps_applied(self) -> list[str]:
        return [n.step for n in self.steps if n.action == Action.APPLIED]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the core decided: ``output``, the message to relay, is None when relist
    refuses (see ``reply``).  The edge writes it as its header and its body, so a
    large post is never joined into one more copy; ``message`` joins it (tests, tools)."""

    output: RawMessage | None
    record: Record
    reply: Reply | None

    @property
    def message(self) -> bytes | None:
        """The bytes to relay, joined anew on each call (the edge writes ``output``)."""
        return None if self.output is None else self.output.to_bytes()
