"""DNS as facts: the core asks ``Question``s, the edge answers with ``Answer``s.

An answer is three-valued: FOUND (with the TXT strings), ABSENT (NXDOMAIN or
NODATA) or TEMPERROR (timeout, SERVFAIL, ...).  The core never resolves anything
itself; a step that needs a name the edge did not answer treats it as TEMPERROR,
which is the honest reading ("we could not find out").
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = ["Answer", "Facts", "Question", "Status"]


class Status(enum.StrEnum):
    FOUND = "found"
    ABSENT = "absent"
    TEMPERROR = "temperror"


@dataclass(frozen=True, slots=True)
class Question:
    qname: str
    rdtype: str = "TXT"

    @classmethod
    def txt(cls, name: str) -> Question:
        return cls(name.lower().rstrip("."), "TXT")


@dataclass(frozen=True, slots=True)
class Answer:
    status: Status
    # For TXT: one entry per record, each the concatenation of its strings (RFC 7208
    # §3.3 / RFC 6376 §3.6.2.2: a record split into several strings is joined).
    records: tuple[bytes, ...] = ()
    detail: str = ""   # why, for TEMPERROR ("timeout", "SERVFAIL") and ABSENT ("NXDOMAIN")


_UNANSWERED = Answer(Status.TEMPERROR, (), "not resolved")


@dataclass(frozen=True, slots=True)
class Facts:
    answers: dict[Question, Answer] = field(default_factory=dict)
    # The answer to a question not in ``answers``: not resolved yet (the edge asks the
    # DNS), or, for a closed world such as a test suite's zone, NXDOMAIN.
    otherwise: Answer = _UNANSWERED

    def get(self, question: Question) -> Answer:
        return self.answers.get(question, self.otherwise)

    def txt(self, name: str) -> Answer:
        return self.get(Question.txt(name))

    def merged(self, other: Facts) -> Facts:
        return Facts({**self.answers, **other.answers}, self.otherwise)

    def __hash__(self) -> int:  # dicts are unhashable; Facts is compared by identity
        return id(self)
