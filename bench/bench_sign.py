"""Signing step rate vs raw OpenSSL RSA-2048 sign rate, in the same run (not part of pytest).

    python bench/bench_sign.py [--seconds 2]

Prints signatures per second for: raw RSA-2048 PKCS#1 v1.5 (cryptography/OpenSSL) over
a header-sized input, ``sign_dkim`` (rsa-sha256 and ed25519-sha256) on a 4 KiB
message, ``seal_arc`` on the DKIM-signed message, and dkimpy's own ``dkim.sign`` for
reference.  Target: ``sign_dkim`` rsa >= 80 % of raw RSA.
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dkim  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa  # noqa: E402

from relist.core.sign import SigningKey, private_pem, seal_arc, sign_dkim  # noqa: E402


def message_4k() -> bytes:
    """A 4096-byte plain-text list post with a Mailman-style footer ("-- " line)."""
    head = (b"Received: from mx.example.net by lists.example.org; Sun, 1 Mar 2026 11:59:00 +0000\r\n"
            b"From: Alice Example <alice@example.net>\r\nTo: dev@lists.example.org\r\n"
            b"Subject: [dev] a benchmark message\r\nDate: Sun, 1 Mar 2026 11:58:00 +0000\r\n"
            b"Message-ID: <bench@example.net>\r\nList-Id: <dev.lists.example.org>\r\n"
            b"List-Unsubscribe: <https://lists.example.org/u/dev>\r\n"
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
    line = b"The quick brown fox jumps over the lazy dog; list traffic body text.\r\n"
    footer = b"-- \r\nDev mailing list -- dev@lists.example.org\r\nTo unsubscribe send an email to dev-leave@lists.example.org\r\n"
    body = line * ((4096 - len(head) - len(footer)) // len(line) + 1)
    return head + body[:4096 - len(head) - len(footer) - 2] + b"\r\n" + footer


def _rate(fn, seconds: float) -> float:
    fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - start)


def rates(fns: dict, seconds: float, rounds: int = 5) -> dict:
    """Best-of-``rounds`` rate for each function, the functions interleaved per round so
    that load from other processes hits them alike."""
    best = dict.fromkeys(fns, 0.0)
    for _ in range(rounds):
        for name, fn in fns.items():
            best[name] = max(best[name], _rate(fn, seconds / rounds))
    return best


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    msg = message_4k()
    now = datetime.now(timezone.utc)
    rsa_priv = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key = SigningKey("rsa-sha256", rsa_priv)
    ed = SigningKey("ed25519-sha256", ed25519.Ed25519PrivateKey.generate())
    header_input = b"x" * 700   # about what a DKIM header hash input is
    signed = sign_dkim(msg, domain="lists.example.org", selector="s", key=key, now=now) + msg
    pem = private_pem(key)

    r = rates({
        "raw": lambda: rsa_priv.sign(header_input, padding.PKCS1v15(), hashes.SHA256()),
        "step": lambda: sign_dkim(msg, domain="lists.example.org", selector="s", key=key, now=now),
        "raw_ed": lambda: ed.private.sign(header_input[:32]),
        "step_ed": lambda: sign_dkim(msg, domain="lists.example.org", selector="e", key=ed, now=now),
        "arc": lambda: seal_arc(signed, domain="lists.example.org", selector="s", key=key,
                                authserv_id="lists.example.org", cv="none", results="arc=none", now=now),
    }, args.seconds)
    raw, step, raw_ed, step_ed, arc = r["raw"], r["step"], r["raw_ed"], r["step_ed"], r["arc"]
    ref = _rate(lambda: dkim.sign(msg, b"s", b"lists.example.org", pem,
                                  canonicalize=(b"relaxed", b"relaxed")), 1.0)
    print(f"message size                 : {len(msg)} bytes")
    print(f"raw OpenSSL RSA-2048 sign    : {raw:8.0f} /s")
    print(f"sign_dkim rsa-sha256 (4 KiB) : {step:8.0f} /s  = {100 * step / raw:5.1f} % of raw  (target >= 80 %)")
    print(f"raw Ed25519 sign             : {raw_ed:8.0f} /s")
    print(f"sign_dkim ed25519 (4 KiB)    : {step_ed:8.0f} /s  = {100 * step_ed / raw_ed:5.1f} % of raw Ed25519")
    print(f"seal_arc (2 RSA signatures)  : {arc:8.0f} /s  = {100 * 2 * arc / raw:5.1f} % of raw per signature")
    print(f"dkimpy dkim.sign (reference) : {ref:8.0f} /s")
    return 0 if step >= 0.8 * raw else 1


if __name__ == "__main__":
    sys.exit(main())
