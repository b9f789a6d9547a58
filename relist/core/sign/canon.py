"""The signer's name for relist.core.dkim.canon (the one DKIM parse, selection and
canonicalization); relist.core.sign.signature and older tests import it from here."""

from relist.core.dkim.canon import (  # noqa: F401 - re-exported
    _CRLF_FIELDS, Canon, Header, MessageFormatError, index, parse, select, selected,
)
from relist.core.dkim.canon import crlf_lines as crlf_body

__all__ = ["Canon", "Header", "MessageFormatError", "crlf_body", "index", "parse", "select", "selected"]
