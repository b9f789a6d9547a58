"""Tag=value lists: relist.core.dkim.tags, under the name the verifier's modules import."""

from relist.core.dkim.tags import TagError, b_chars, parse_tags, strip_ws, valid_domain

__all__ = ["TagError", "b_chars", "parse_tags", "strip_ws", "valid_domain"]
