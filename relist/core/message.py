"""A byte-faithful message: header fields as their original bytes, body as bytes.

Rule: nothing here re-serialises through the ``email`` package.  Parsing splits the
raw bytes into header fields (each field keeps its exact bytes, folding and line
endings included) and the body; ``to_bytes()`` is plain concatenation, so a message
that no step changed goes out byte-identical.  Edits are byte operations that return
a new ``RawMessage``; untouched fields keep their bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

__all__ = ["HeaderField", "RawMessage"]

_FIELD_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")  # RFC 5322 §3.6.8 ftext, plus WSP before ':'


@dataclass(frozen=True, slots=True)
class HeaderField:
    """One header field: its exact bytes and its lower-cased name for lookups.

    ``name`` is empty for a line that is not a well-formed field (kept verbatim so
    that nothing is lost; see ``RawMessage.defects``).
    """

    raw: bytes
    name: str

    @property
    def value(self) -> bytes:
        """The bytes after the colon, with the trailing line ending removed."""
        colon = self.raw.find(b":")
        return self.raw[colon + 1:].rstrip(b"\r\n") if colon >= 0 else b""

    def text(self) -> str:
        """The unfolded value as text (non-UTF-8 bytes kept as surrogates)."""
        unfolded = re.sub(rb"\r?\n(?=[ \t])", b"", self.value)
        return unfolded.decode("utf-8", "surrogateescape").strip()


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A parsed message.  ``separator`` is the empty line between header and body
    (``b"\\r\\n"``, ``b"\\n"`` or ``b""`` when the message has no body part at all)."""

    fields: tuple[HeaderField, ...]
    separator: bytes
    body: bytes
    eol: bytes = b"\r\n"

    # -- parsing -----------------------------------------------------------------

    @classmethod
    def parse(cls, raw: bytes) -> RawMessage:
        """Split ``raw`` into fields and body without changing a byte."""
        eol = b"\r\n" if b"\r\n" in raw[:4096] or not raw else b"\n"
        fields: list[HeaderField] = []
        pos, n = 0, len(raw)
        current_start = -1
        current_name = ""
        while pos < n:
            end = raw.find(b"\n", pos)
            line_end = n if end < 0 else end + 1
            line = raw[pos:line_end]
            if line in (b"\r\n", b"\n"):
                if current_start >= 0:
                    fields.append(HeaderField(raw[current_start:pos], current_name))
                return cls(tuple(fields), line, raw[line_end:], eol)
            if line[:1] in (b" ", b"\t") and current_start >= 0:
                pos = line_end  # continuation of the current field
                continue
            if current_start >= 0:
                fields.append(HeaderField(raw[current_start:pos], current_name))
            m = _FIELD_NAME.match(line)
            if m is None and not fields and current_start < 0 and line.startswith(b"From "):
                current_name = ""  # mbox "From " envelope line: kept, never a field
            elif m is None:
                current_name = ""
            else:
                current_name = m.group(1).decode("ascii").lower()
            current_start = pos
            pos = line_end
        if current_start >= 0:
            fields.append(HeaderField(raw[current_start:pos], current_name))
        return cls(tuple(fields), b"", b"", eol)

    def to_bytes(self) -> bytes:
        return b"".join(f.raw for f in self.fields) + self.separator + self.body

    # -- lookups -----------------------------------------------------------------

    @property
    def defects(self) -> tuple[str, ...]:
        """Header lines that are not well-formed fields, described for the record."""
        out = []
        for f in self.fields:
            if not f.name:
                out.append("malformed header line: %r" % f.raw[:60])
        return tuple(out)

    def get_all(self, name: str) -> tuple[HeaderField, ...]:
        name = name.lower()
        return tuple(f for f in self.fields if f.name == name)

    def get(self, name: str) -> HeaderField | None:
        name = name.lower()
        for f in self.fields:
            if f.name == name:
                return f
        return None

    def header_text(self, name: str) -> str | None:
        f = self.get(name)
        return None if f is None else f.text()

    # -- edits (each returns a new message) ---------------------------------------

    def make_field(self, name: str, value: str | bytes) -> HeaderField:
        """Build a field ``Name: value`` ending with this message's line ending.

        ``value`` may contain folds written as ``\\r\\n\\t``; they are converted to the
        message's line ending.
        """
        if isinstance(value, str):
            value = value.encode("utf-8")
        value = value.replace(b"\r\n", b"\n").replace(b"\n", self.eol)
        return HeaderField(name.encode("ascii") + b": " + value + self.eol, name.lower())

    def prepend(self, *fields: HeaderField) -> RawMessage:
        return replace(self, fields=tuple(fields) + self.fields)

    def append(self, *fields: HeaderField) -> RawMessage:
        return replace(self, fields=self.fields + tuple(fields))

    def remove(self, name: str) -> RawMessage:
        name = name.lower()
        return replace(self, fields=tuple(f for f in self.fields if f.name != name))

    def remove_where(self, predicate) -> RawMessage:
        return replace(self, fields=tuple(f for f in self.fields if not predicate(f)))

    def replace_field(self, name: str, field: HeaderField) -> RawMessage:
        """Replace the first field called ``name`` in place (append when absent) and
        drop any further fields of that name."""
        name = name.lower()
        out: list[HeaderField] = []
        done = False
        for f in self.fields:
            if f.name == name:
                if not done:
                    out.append(field)
                    done = True
                continue
            out.append(f)
        if not done:
            out.append(field)
        return replace(self, fields=tuple(out))

    def with_body(self, body: bytes) -> RawMessage:
        sep = self.separator or self.eol
        return replace(self, body=body, separator=sep)
