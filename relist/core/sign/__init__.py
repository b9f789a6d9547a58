"""Signing late: DKIM signatures and ARC seals over the final message bytes.

Pure functions: message bytes, a ``SigningKey`` and ``now`` in; header-field bytes out
(to prepend; the message itself is never re-serialised).  Key files are read by
``relist.edge.key_files``.

* ``sign_dkim``  - one DKIM-Signature field (RFC 6376, RFC 8463).
* ``seal_arc``   - the next ARC set, with the caller's own chain status (RFC 8617).
* ``SigningKey`` - a loaded private key; ``load_private_key`` parses PEM bytes.
* ``prepare``    - a message parsed once for several signatures (``Prepared``): both
  functions above take it instead of the bytes.
"""

from relist.core.sign.arc_sealer import Seal, seal_arc
from relist.core.sign.dkim_signer import DEFAULT_SIGN_HEADERS, oversigned, sign_dkim
from relist.core.sign.signing_keys import (
    BadKey, KeyStatus, RecordCheck, SigningKey, check_record, dns_record, load_private_key,
    parse_record, private_pem, zone_line,
)
from relist.core.sign.signature import Prepared, SignError, prepare

__all__ = [
    "BadKey", "DEFAULT_SIGN_HEADERS", "KeyStatus", "Prepared", "RecordCheck", "Seal",
    "SignError", "SigningKey", "check_record", "dns_record", "load_private_key", "oversigned",
    "parse_record", "prepare", "private_pem", "seal_arc", "sign_dkim", "zone_line",
]
