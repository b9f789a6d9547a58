"""The verification tests' own signer (tests/verify_support.py) makes signatures an
independent verifier (dkimpy) accepts, and that fail when the body changes."""

from __future__ import annotations

import dkim
import pytest

from tests.verify_support import MESSAGE, dnsfunc_for, ed_key, facts, public_record, rsa_key, sign


@pytest.mark.parametrize("key", ["rsa", "ed25519"])
def test_helper_signatures_verify_with_dkimpy(key):
    k = rsa_key() if key == "rsa" else ed_key()
    signed = sign(MESSAGE, k, t=None)
    f = facts({"sel._domainkey.example.com": public_record(k)})
    assert dkim.DKIM(signed).verify(dnsfunc=dnsfunc_for(f))
    with pytest.raises(dkim.ValidationError, match="body hash mismatch"):
        dkim.DKIM(signed.replace(b"this is", b"this was")).verify(dnsfunc=dnsfunc_for(f))
