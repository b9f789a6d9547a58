"""Signing step rate vs raw OpenSSL RSA-2048 sign rate, in the same run (not part of pytest).

Prints signatures per second for:

* raw: RSA-2048 PKCS#1 v1.5 with SHA-256 through ``cryptography`` (OpenSSL), the same
  call ``SigningKey.sign`` makes, over a 700-byte input (about the size of a DKIM
  header hash input), with the key object already loaded.  This is the fair "raw
  OpenSSL" baseline: it is exactly the private-key operation plus the SHA-256 that
  every signature needs, and it runs in this process under the same load as the rest
  (``openssl speed rsa2048`` would measure another process, with no hashing);
* the ``sign`` step (``relist.core.steps.dkim_sign.apply``) on a 4 KiB post with one RSA
  selector: what the relay runs per message (the pipeline's parsed message taken as
  it is, h=, canonical headers, body hash, fold, sign, the new field prepended, the
  audit note).  The target is this step >= 80 % of raw;
* ``sign_dkim`` alone on the message bytes (so with a parse; rsa-sha256 and
  ed25519-sha256), the ``sign`` step with RSA and
  Ed25519 both configured, ``seal_arc`` and the ``arc-seal`` step on the signed
  message, and dkimpy's own ``dkim.sign`` for reference.

Each rate is the best of ``--rounds`` interleaved rounds (so load from other processes
hits all alike); ``--runs`` repeats the whole measurement (fresh keys) and the medians
are printed.  Exit status 1 when the median step ratio is below 80 %.

    python bench/bench_sign.py [--seconds 2] [--rounds 8] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dkim  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa  # noqa: E402

from relist.core.verify import Verdict  # noqa: E402
from relist.core.message import RawMessage  # noqa: E402
from relist.core.model import Action, Context, Envelope, Known, Work  # noqa: E402
from relist.core.policy import ListPolicy, RelayPolicy  # noqa: E402
from relist.core.sign import SigningKey, private_pem, seal_arc, sign_dkim  # noqa: E402
from relist.core.steps import arc_seal as arc_step, dkim_sign as sign_step  # noqa: E402

NO_VERDICT = Verdict()   # a post that arrived with no ARC chain: the seal says cv=none


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
    footer = (b"-- \r\nDev mailing list -- dev@lists.example.org\r\n"
              b"To unsubscribe send an email to dev-leave@lists.example.org\r\n")
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


def step_setup(msg: bytes, rsa_key: SigningKey, ed_key: SigningKey, now: datetime):
    """Work and Context for the sign / arc-seal steps as the pipeline hands them over:
    a parsed message, the list's policy, the keys loaded once (by path) in ``ctx.keys``."""
    lp = ListPolicy(address="dev@lists.example.org", configured=True, selector="s",
                    private_key="/k/rsa.key")
    lp_both = replace(lp, ed25519_selector="e", ed25519_private_key="/k/ed.key")
    keys = {"/k/rsa.key": rsa_key, "/k/ed.key": ed_key}
    ctx = Context(envelope=Envelope("dev-bounces@lists.example.org", ("bob@example.com",)),
                  policy=RelayPolicy(hostname="lists.example.org", authserv_id="lists.example.org",
                                     lists=(lp,)),
                  now=now, relist_id="bench", keys=keys)
    work = Work(RawMessage.parse(msg), Known(list_policy=lp))
    work_both = Work(RawMessage.parse(msg), Known(list_policy=lp_both))
    return work, work_both, ctx


def measure(seconds: float, rounds: int) -> dict:
    msg = message_4k()
    now = datetime.now(timezone.utc)
    rsa_priv = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key = SigningKey("rsa-sha256", rsa_priv)
    ed = SigningKey("ed25519-sha256", ed25519.Ed25519PrivateKey.generate())
    header_input = b"x" * 700   # about what a DKIM header hash input is
    signed = sign_dkim(msg, domain="lists.example.org", selector="s", key=key, now=now) + msg
    work, work_both, ctx = step_setup(msg, key, ed, now)
    signed_work = sign_step.apply(work, ctx)
    assert signed_work.notes[-1].action == Action.APPLIED, signed_work.notes[-1]
    signed_work = replace(signed_work, known=replace(signed_work.known, verdict=NO_VERDICT))
    assert arc_step.apply(signed_work, ctx).notes[-1].action == Action.APPLIED
    r = rates({
        "raw": lambda: rsa_priv.sign(header_input, padding.PKCS1v15(), hashes.SHA256()),
        "step": lambda: sign_step.apply(work, ctx),
        "dkim_rsa": lambda: sign_dkim(msg, domain="lists.example.org", selector="s", key=key, now=now),
        "raw_ed": lambda: ed.private.sign(header_input[:32]),
        "dkim_ed": lambda: sign_dkim(msg, domain="lists.example.org", selector="e", key=ed, now=now),
        "step_both": lambda: sign_step.apply(work_both, ctx),
        "seal_arc": lambda: seal_arc(signed, domain="lists.example.org", selector="s", key=key,
                                     authserv_id="lists.example.org", cv="none", results="arc=none",
                                     now=now),
        "arc_step": lambda: arc_step.apply(signed_work, ctx),
    }, seconds, rounds)
    r["dkimpy"] = _rate(lambda: dkim.sign(msg, b"s", b"lists.example.org", private_pem(key),
                                          canonicalize=(b"relaxed", b"relaxed")), min(seconds / 2, 1.0))
    return r


def ratios(r: dict) -> dict:
    """Each rate against the raw operations it contains (ARC: two RSA signatures)."""
    return {
        "step": r["step"] / r["raw"],
        "dkim_rsa": r["dkim_rsa"] / r["raw"],
        "dkim_ed": r["dkim_ed"] / r["raw_ed"],
        "step_both": r["step_both"] * (1 / r["raw"] + 1 / r["raw_ed"]),
        "seal_arc": 2 * r["seal_arc"] / r["raw"],
        "arc_step": 2 * r["arc_step"] / r["raw"],
    }


LINES = [   # key, label, what the ratio is against
    ("raw", "raw OpenSSL RSA-2048 sign", ""),
    ("step", "sign step, rsa-sha256 (4 KiB)", "of raw  (target >= 80 %)"),
    ("dkim_rsa", "sign_dkim rsa-sha256 alone", "of raw"),
    ("raw_ed", "raw Ed25519 sign", ""),
    ("dkim_ed", "sign_dkim ed25519 alone", "of raw Ed25519"),
    ("step_both", "sign step, rsa + ed25519", "of raw RSA + raw Ed25519"),
    ("seal_arc", "seal_arc (2 RSA signatures)", "of raw per signature"),
    ("arc_step", "arc-seal step (2 RSA signatures)", "of raw per signature"),
    ("dkimpy", "dkimpy dkim.sign (reference)", ""),
]


def report(rate: dict, ratio: dict) -> None:
    print(f"message size                      : {len(message_4k())} bytes")
    for key, label, against in LINES:
        line = f"{label:34s}: {rate[key]:8.0f} /s"
        if key in ratio:
            line += f"  = {100 * ratio[key]:5.1f} % {against}"
        print(line)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0, help="measuring time per figure and run")
    ap.add_argument("--rounds", type=int, default=8, help="interleaved rounds per run (best is kept)")
    ap.add_argument("--runs", type=int, default=3, help="runs; medians are reported")
    args = ap.parse_args()
    rates_, ratios_ = [], []
    for i in range(args.runs):
        r = measure(args.seconds, args.rounds)
        rates_.append(r)
        ratios_.append(ratios(r))
        print(f"run {i + 1}: raw {r['raw']:.0f}/s, sign step {r['step']:.0f}/s = "
              f"{100 * ratios_[-1]['step']:.1f} %; sign_dkim {100 * ratios_[-1]['dkim_rsa']:.1f} %;"
              f" arc-seal step {100 * ratios_[-1]['arc_step']:.1f} %", flush=True)
    print(f"median of {args.runs} runs (rates and ratios each their own median):")
    report({k: statistics.median(r[k] for r in rates_) for k in rates_[0]},
           {k: statistics.median(r[k] for r in ratios_) for k in ratios_[0]})
    return 0 if statistics.median(r["step"] for r in ratios_) >= 0.8 else 1


if __name__ == "__main__":
    sys.exit(main())
