"""The one DKIM core shared by the signer (relist.core.sign), the verifier
(relist.core.verify) and the guard: tag lists (``tags``) and the message parse, header
selection and canonicalization (``canon``), in the manner of dkimpy's small
``canonicalization.py``.  Pure functions over bytes; dkimpy stays the reference in the
tests (tests/test_canon*.py)."""

__all__: list[str] = []
