"""A byte-faithful message: header fields as their original bytes, body as bytes.

Rule: nothing here re-serialises through the ``email`` package.  Parsing splits the
raw bytes into header fields (each field keeps its exact bytes, folding and line
endings included) and the body; ``to_bytes()`` is plain concatenation, so a message
that no step changed goes out byte-identical.  Edits are byte operations that return
a new ``RawMessage``; untouched fields keep their bytes.

The header is read the way the MTAs around relist read it (Postfix's cleanup, Exim,
and Python's ``email`` parser, hence Mailman): fields and their continuation lines up
to the empty line (RFC 5322 §2.1).  A line that is neither (no colon, a control or
8-bit byte in the name) ends the header: it is the body's first line and the
message has no separator (``defects`` says so); the signing steps write the missing
empty line (``signable``), as Postfix's cleanup would, only before relist signs
instead of after.  Lines that are not fields but are kept as they are: on top of
the header, an mbox ``From `` envelope line or a continuation line with no field
before it (a nameless field each; ``signable`` drops them), and a field with white
space before its colon (RFC 5322 §4.5.3 obsolete syntax, a field to Postfix, which
rewrites it to ``name:``, and to Mail::DKIM, an error to dkimpy; ``signable``
removes that white space as Postfix would).

Fields relist builds (``make_field``) never carry a line break that is not a fold, a
NUL or another control character, whatever text a step hands in (``clean_text``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from relist.core.dkim.canon import NAME_CHARS, BodyMemo, crlf_lines

__all__ = ["HeaderField", "RawMessage", "clean_text", "clean_value"]

_FIELD_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")  # RFC 5322 §3.6.8 ftext, plus WSP before ':'
_WSP_COLON = re.compile(rb"^([!-9;-~]+)[ \t]+:")   # the obsolete form (RFC 5322 §4.5.3)
# Control characters a built field never carries (HTAB is white space; folds are
# CRLF/LF + WSP, handled before): C0, DEL, and C1 (which UTF-8 would write as 8-bit).
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")
# What ``make_field`` must clean: a control byte, a CR or LF that is not part of a fold.
_BAD_BYTES = re.compile(rb"\r\n(?![ \t])|[\x00-\x08\x0b-\x1f\x7f]|\r(?!\n[ \t])|(?<!\r)\n(?![ \t])")
_FOLDS = re.compile(rb"(\r?\n(?=[ \t]))")
# Bytes that dkimpy's relaxed canonicalization strips at the ends of a value (Python's
# bytes.strip) and RFC 6376 §3.4.2's does not (only WSP): a bare CR, VT and FF.
_NOT_WSP = re.compile(rb"\r(?!\n)|[\x0b\x0c]")
_EOL_END = re.compile(rb"\r?\n\Z")


def clean_text(text: str) -> tuple[str, int]:
    """``text`` fit for a header field relist writes, and how many characters were
    changed: a control character (a line break, NUL, ESC...) becomes a space, an
    undecodable byte (a surrogate from ``surrogateescape``) U+FFFD."""
    count = 0
    if not text.isprintable():
        text, count = _CONTROL.subn(" ", text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        fixed = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        count += sum(a != b for a, b in zip(text, fixed)) or 1
        text = fixed
    return text, count


@dataclass(frozen=True, slots=True)
class HeaderField:
    """One header field: its exact bytes and its lower-cased name for lookups.

    ``name`` is empty for an mbox ``From `` line or a stray continuation line on top
    of the header (kept verbatim so that nothing is lost; see ``RawMessage.defects``).
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
        unfolded = _FOLDS.sub(b"", self.value)
        return unfolded.decode("utf-8", "surrogateescape").strip()


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A parsed message.  ``separator`` is the empty line between header and body
    (``b"\\r\\n"``, ``b"\\n"`` or ``b""`` when the message has no body part at all)."""

    fields: tuple[HeaderField, ...]
    separator: bytes
    body: bytes
    eol: bytes = b"\r\n"
    # the body's DKIM hashes (``body_memo``), handed on by the edits that keep the body
    _memo: BodyMemo | None = field(default=None, init=False, compare=False, repr=False)

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
            if m is None and not fields and current_start < 0 and (
                    line.startswith(b"From ") or line[:1] in (b" ", b"\t")):
                current_name = ""  # mbox "From " line or a stray continuation on top: kept,
                #                    never a field (``signable`` drops it)
            elif m is None:
                # Neither a field nor a continuation: the header ends here and this
                # line is the body's first (module doc); no separator in the input.
                return cls(tuple(fields), b"", raw[pos:], eol)
            else:
                current_name = m.group(1).decode("ascii").lower()
            current_start = pos
            pos = line_end
        if current_start >= 0:
            fields.append(HeaderField(raw[current_start:pos], current_name))
        return cls(tuple(fields), b"", b"", eol)

    @classmethod
    def of(cls, message: bytes | RawMessage) -> RawMessage:
        """``message`` parsed, or itself when it already is a ``RawMessage``."""
        return message if isinstance(message, RawMessage) else cls.parse(message)

    def to_bytes(self) -> bytes:
        return b"".join(f.raw for f in self.fields) + self.separator + self.body

    def header_bytes(self) -> bytes:
        """``to_bytes()`` up to the body: the fields and the empty line.  With ``body``,
        the message as two parts, written or hashed without joining a large post."""
        return b"".join(f.raw for f in self.fields) + self.separator

    @property
    def size(self) -> int:
        """``len(to_bytes())``, without making the bytes."""
        return sum(len(f.raw) for f in self.fields) + len(self.separator) + len(self.body)

    def is_ascii(self) -> bool:
        """``to_bytes().isascii()``, without making the bytes (a large post is not copied)."""
        return self.body.isascii() and self.separator.isascii() and all(f.raw.isascii() for f in self.fields)

    def body_memo(self) -> BodyMemo | None:
        """The body's DKIM hashes, computed once for this body whoever asks (the
        verifier, the guard, the signer: relist.core.dkim.canon.BodyMemo); None when
        the message has no empty line after its header (a DKIM parse may then find
        another body).  Kept by the edits below that change header fields only."""
        if not self.separator:
            return None
        memo = self._memo
        if memo is None:
            memo = BodyMemo(crlf_lines(self.body))
            object.__setattr__(self, "_memo", memo)
        return memo

    def dkim_split(self) -> tuple[list[tuple[bytes, bytes]], bytes, bool] | None:
        """What ``relist.core.dkim.canon.parse(self.to_bytes())`` gives, taken from the
        fields as split here without making the bytes: (headers, body, unfolded: no field
        has a continuation line); or None unless that is certainly the same.  It is
        when there is a CRLF empty line after the header (so the body is the same), every
        CR and LF in the header part is part of a CRLF (a field's bytes are then its
        lines, continuations included, each ending CRLF), and every field's name (up to
        its first colon) is non-empty and made of the characters ``parse`` accepts (no
        mbox ``From `` line, no malformed line, no space before ':').  The verifier and
        the signer both start from it."""
        if self.separator != b"\r\n":
            return None
        memo = self.body_memo()
        if memo is None:    # (never: a CRLF separator has a memo)
            return None
        fields = self.fields
        head = b"".join([f.raw for f in fields])
        crlf = head.count(b"\r\n")
        if crlf != head.count(b"\r") or crlf != head.count(b"\n"):
            return None
        parts = [f.raw.partition(b":") for f in fields]
        names = [p[0] for p in parts]
        if b"" in names or b"".join(names).translate(None, NAME_CHARS):
            return None
        return [(n, v) for n, _, v in parts], memo.body, crlf == len(parts)

    def _edit(self, **changes) -> RawMessage:
        """``replace(self, **changes)``, keeping the body memo when the body and the
        empty line before it stay."""
        new = RawMessage(changes.pop("fields", self.fields), changes.pop("separator", self.separator),
                         changes.pop("body", self.body), changes.pop("eol", self.eol))
        if changes:
            raise TypeError(f"RawMessage has no field {next(iter(changes))!r}")
        if self._memo is not None and new.body is self.body and new.separator == self.separator:
            object.__setattr__(new, "_memo", self._memo)
        return new

    # -- lookups -----------------------------------------------------------------

    @property
    def defects(self) -> tuple[str, ...]:
        """Header lines that are not well-formed fields, described for the record."""
        out = []
        for f in self.fields:
            if not f.name:
                out.append("not a field, before the first field: %r" % f.raw[:60])
            elif _WSP_COLON.match(f.raw):
                out.append("white space before the colon (obsolete syntax): %r" % f.raw[:60])
        if not self.separator and self.body:
            out.append("no empty line after the header: the body starts at %r" % self.body[:60])
        return tuple(out)

    def signable(self) -> tuple[RawMessage, tuple[str, ...]]:
        """This message as every DKIM implementation (and Postfix) reads it the same
        way, and what was changed for that (nothing: the message itself, ``()``).

        * a line before the first field (an mbox ``From `` line, a stray continuation
          line) is dropped: dkimpy refuses a message with one, Postfix would make the
          whole message body;
        * white space before a field's colon is removed: the same field (RFC 5322
          §4.5.3), the same relaxed canonical form; Postfix rewrites it so, dkimpy
          refuses it;
        * the missing empty line before the body is written (Postfix would write it
          after relist signed), and the last field gets its line ending;
        * the body's last line gets the line ending SMTP gives it anyway: over an
          unterminated last line that ends in white space, dkimpy's relaxed body
          keeps the white space and RFC 6376's does not;
        * a bare CR, VT or FF in a field whose value it starts or ends becomes a
          space: dkimpy's relaxed canonicalization (and relist's signer, which
          matches it) strips them there, RFC 6376 and Mail::DKIM do not.
        """
        changes: list[str] = []
        fields: list[HeaderField] = []
        for f in self.fields:
            if not f.name:
                changes.append("dropped %r (not a field, before the first field)" % f.raw[:40])
                continue
            m = _WSP_COLON.match(f.raw)
            if m is not None:
                changes.append(f"removed the white space before the colon of {f.name}")
                f = HeaderField(m.group(1) + f.raw[m.end() - 1:], f.name)
            if _NOT_WSP.search(f.raw) and _edges_differ(f.raw):
                colon = f.raw.index(b":") + 1
                end = _EOL_END.search(f.raw)
                stop = end.start() if end else len(f.raw)
                value, count = _NOT_WSP.subn(b" ", f.raw[colon:stop])
                changes.append(f"{count} bare CR/VT/FF in {f.name} made spaces (verifiers "
                               "disagree on them at the ends of a value)")
                f = HeaderField(f.raw[:colon] + value + f.raw[stop:], f.name)
            fields.append(f)
        separator, body = self.separator, self.body
        if not separator and body:
            separator = self.eol
            changes.append("wrote the empty line the header lacked (the body starts at %r)"
                           % body[:40])
        if body and not body.endswith(b"\n"):
            body += self.eol
            changes.append("ended the body's last line (SMTP does: a signature over it "
                           "unterminated would not verify after the hop)")
        if not changes:
            return self, ()
        return replace(self, fields=_closed(tuple(fields), self.eol), separator=separator,
                       body=body), tuple(changes)

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
            value = value.encode("utf-8", "surrogateescape")
        value = clean_value(value)[0]
        value = value.replace(b"\r\n", b"\n").replace(b"\n", self.eol)
        return HeaderField(name.encode("ascii") + b": " + value + self.eol, name.lower())

    def prepend(self, *fields: HeaderField) -> RawMessage:
        return self._edit(fields=tuple(fields) + self.fields)

    def append(self, *fields: HeaderField) -> RawMessage:
        """``fields`` at the end of the header (the empty line the header lacked before
        a body is written: after a field relist adds, the body must start clearly)."""
        return self._edit(fields=_closed(self.fields, self.eol) + tuple(fields),
                          separator=self.separator or (self.eol if self.body else b""))

    def remove(self, name: str) -> RawMessage:
        name = name.lower()
        return self._edit(fields=tuple(f for f in self.fields if f.name != name))

    def remove_where(self, predicate) -> RawMessage:
        return self._edit(fields=tuple(f for f in self.fields if not predicate(f)))

    def replace_field(self, name: str, field: HeaderField) -> RawMessage:
        """Replace the first field called ``name`` in place (append when absent) and
        drop any further fields of that name (and write a missing empty line before
        the body, as ``append``)."""
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
            return self._edit(fields=tuple(out)).append(field)
        return self._edit(fields=tuple(out), separator=self.separator or (self.eol if self.body else b""))

    def with_body(self, body: bytes, *, crlf: bool = False, appended: int = 0) -> RawMessage:
        """This message with ``body``.  ``crlf``: the caller knows that every line end
        in ``body`` is CRLF (it appended CRLF lines to a body known so, ``crlf_known``):
        its DKIM hashes and the SMTP writer then skip looking for a bare LF, two scans
        of the body each.  ``appended`` (with ``crlf``): ``body`` is this body, which
        ends with a line end, followed by that many octets of lines: the DKIM hashes
        already made of this body are carried on to it (``BodyMemo.appended``), not
        made again over the whole."""
        sep = self.separator or self.eol
        new = RawMessage(_closed(self.fields, self.eol), sep, body, self.eol)
        if crlf:
            memo = self._memo
            if (appended and memo is not None and memo.body is self.body and self.separator
                    and self.body.endswith(b"\n") and len(body) == len(self.body) + appended):
                memo = memo.appended(body, appended)
            else:
                memo = BodyMemo(body)
            object.__setattr__(new, "_memo", memo)
        return new

    def with_fields(self, fields) -> RawMessage:
        """This message with these header fields; the body, and its memo, kept."""
        return self._edit(fields=tuple(fields))

    def crlf_known(self) -> bool:
        """True when the body is known to have no bare LF (its body memo, made, found
        none; or ``with_body(crlf=True)``); False: not known either way."""
        memo = self._memo
        return memo is not None and memo.body is self.body


def _edges_differ(raw: bytes) -> bool:
    """A field's relaxed value (RFC 6376 §3.4.2) differs between stripping WSP only
    and stripping ASCII white space (dkimpy's ``strip()``)."""
    value = _FOLDS.sub(b"", raw[raw.index(b":") + 1:])
    value = _EOL_END.sub(b"", value)
    value = re.sub(rb"[ \t]+", b" ", value)
    return value.strip() != value.strip(b" \t")


def _closed(fields: tuple[HeaderField, ...], eol: bytes) -> tuple[HeaderField, ...]:
    """``fields`` with a line ending at the end of the last one (a message that ends
    inside its header may lack it): what follows must not run into that line."""
    if fields and not fields[-1].raw.endswith(b"\n"):
        return fields[:-1] + (replace(fields[-1], raw=fields[-1].raw + eol),)
    return fields


def clean_value(value: bytes, keep_8bit: bool = False) -> tuple[bytes, int]:
    """Value bytes fit for a field relist builds, and how many were changed: folds
    (CRLF or LF, then WSP) kept, every other CR, LF or control byte made a space;
    ``keep_8bit`` False: invalid UTF-8 becomes U+FFFD (True: 8-bit bytes are copied
    as they are, for a value copied from the poster's field)."""
    if not _BAD_BYTES.search(value) and (keep_8bit or value.isascii()):
        return value, 0
    parts = _FOLDS.split(value)
    out, count = [], 0
    for i, part in enumerate(parts):
        if i % 2 == 0:
            if keep_8bit:
                part, n = _BAD_BYTES.subn(b" ", part)
            else:
                text, n = clean_text(part.decode("utf-8", "surrogateescape"))
                part = text.encode("utf-8")
            count += n
        out.append(part)
    return b"".join(out), count
