"""Golden tests over the real Mailman 3 corpus (fixtures/mailman), and byte fidelity.

Every corpus transaction (``relist.demo.load_corpus``) goes through the pure core
(``relist.core.pipeline.process``) with a fixed ``Context``: fixed time and relist id,
DNS facts from ``fixtures/mailman/dns.json`` (plus the list's public keys), the TEST ONLY
list keys in ``fixtures/golden/keys/``, and one of two fixed configurations:

* ``resign``:   footer, subject prefix (Mailman's, or "[{list_name}] "), Sender, List-*
  fields (keep Mailman's), two X-Mailman-Rule-* fields removed, the default DMARC
  mitigation, rsa-sha256 + ed25519-sha256 signatures and an ARC seal;
* ``preserve``: the same settings in preserve mode, with the post as the ingress leg saw
  it (the case's ``post.eml``) so that ``repair`` runs, as tests/test_repair.py does.

Golden: the output bytes (b=/bh= of relist's own DKIM-Signature, ARC-Seal and
ARC-Message-Signature masked) and the record (steps, verdict, mode, extra, reply) must
equal ``fixtures/golden/<mode>/<case>/out-NN.{eml,json}``; a mismatch prints a unified
diff.  Masking hides no broken signature: every unmasked output is verified with
relist's own verifier (DKIM and ARC) against the same DNS data.

Byte fidelity: every input header field that no step reported touching is in the output
byte for byte (folding included) and in the same relative order; the body is
byte-identical unless a body-changing step applied; and what a touching step says it
keeps (the Subject's bytes after the prefix, the post's body around a footer or inside a
wrap, the From bytes in X-Original-From) is kept.  "Touched" comes from the notes of the
steps that applied (``TOUCHES``), never from comparing output with input.  The same
check runs under other list settings (``VARIANTS``) and over the ingress leg.

Regenerate the golden files (after a deliberate change; review the git diff):

    .venv/bin/python -m tests.test_golden --regen
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import sys
from dataclasses import replace
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import pytest

from relist.core import pipeline
from relist.core.verify import verify_message
from relist.core.ingress import IngressCopy
from relist.core.message import RawMessage
from relist.core.model import Action, Context, Envelope, Outcome
from relist.core.policy import ListPolicy, RelayPolicy
from relist.core.sign import dns_record, load_private_key
from relist.demo import load_corpus
from tests.modes_support import facts_for

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fixtures" / "mailman"
GOLDEN = ROOT / "fixtures" / "golden"
KEYS = GOLDEN / "keys"
RSA_FILE = "TEST-ONLY-lists.example.org.rsa.pem"
ED_FILE = "TEST-ONLY-lists.example.org.ed25519.pem"

NOW = datetime(2024, 5, 2, 12, 0, 0, tzinfo=timezone.utc)   # the posts' t= are 1 May 2024
RELIST_ID = "GOLDEN0000000001"
DOMAIN = "lists.example.org"
RSA_SELECTOR, ED_SELECTOR = "golden-rsa", "golden-ed"
MODES = ("resign", "preserve")

# The lists' settings in both configurations (see ``relay_policy``); ``mode`` is the
# configuration's name.
SETTINGS = dict(
    footer="-- \n{list_name} mailing list\n{list_address}\n",
    add_sender=True,
    list_headers="keep",
    remove_headers=("X-Mailman-Rule-Hits", "X-Mailman-Rule-Misses"),
    selector=RSA_SELECTOR, private_key=f"golden-keys/{RSA_FILE}",
    ed25519_selector=ED_SELECTOR, ed25519_private_key=f"golden-keys/{ED_FILE}",
    arc_seal=True,
)


# -- the fixed context ----------------------------------------------------------------------

@lru_cache(maxsize=None)
def corpus():
    return {tx.name: tx for tx in load_corpus(CORPUS)} if (CORPUS / "cases").is_dir() else {}


@lru_cache(maxsize=None)
def list_keys():
    """The TEST ONLY list keys, by the path the policy names (``Context.keys``)."""
    return {f"golden-keys/{name}": load_private_key((KEYS / name).read_bytes(), name)
            for name in (RSA_FILE, ED_FILE)}


@lru_cache(maxsize=None)
def zone() -> dict[str, str]:
    """dns.json (one string per name) plus the list's public keys."""
    dns = json.loads((CORPUS / "dns.json").read_text())
    assert all(len(v) == 1 for v in dns.values()), "facts_for takes one TXT string per name"
    keys = list_keys()
    return {**{name: values[0] for name, values in dns.items()},
            f"{RSA_SELECTOR}._domainkey.{DOMAIN}": dns_record(keys[SETTINGS["private_key"]]),
            f"{ED_SELECTOR}._domainkey.{DOMAIN}": dns_record(keys[SETTINGS["ed25519_private_key"]])}


@lru_cache(maxsize=None)
def relay_policy(mode: str, **changes) -> RelayPolicy:
    """Each corpus list configured in relist as in Mailman (display name, subject prefix,
    "[{list_name}] " where Mailman has none), plus ``SETTINGS``."""
    mailman = json.loads((CORPUS / "lists.json").read_text())
    lists = tuple(ListPolicy(address=a, configured=True, mode=mode, **{
        "display_name": m["display_name"], "subject_prefix": m["subject_prefix"] or "[{list_name}] ",
        **SETTINGS, **changes}) for a, m in sorted(mailman.items()))
    return RelayPolicy(hostname="relist.golden", authserv_id="relist.golden", lists=lists)


def post_of(name: str) -> bytes | None:
    """The post as the ingress leg saw it (cases only; notices have none)."""
    post = CORPUS / "cases" / name.split("/")[0] / "post.eml"
    return post.read_bytes() if post.exists() else None


def context(name: str, mode: str, pol: RelayPolicy | None = None) -> Context:
    tx = corpus()[name]
    pol = pol or relay_policy(mode)
    meta = json.loads(next(CORPUS.glob(f"*/{name}.json")).read_text())   # cases/ or notices/
    facts = facts_for(tx.data, pol, zone())
    ingress = ()
    post = post_of(name) if mode == "preserve" else None
    if post is not None:      # the ingress copy's names too (the edge asks for both)
        facts = facts.merged(facts_for(post, pol, zone()))
        ingress = (IngressCopy("GOLDEN-INGRESS", post),)
    env = Envelope(tx.mail_from, tuple(tx.rcpt_tos), tuple(meta.get("mail_options", ())),
                   "127.0.0.1", meta.get("ehlo", ""))
    return Context(env, pol, NOW, RELIST_ID, facts, keys=list_keys(), ingress=ingress)


def run(name: str, mode: str, pol: RelayPolicy | None = None) -> Outcome:
    return pipeline.process(corpus()[name].data, context(name, mode, pol))


@lru_cache(maxsize=None)
def outcome(name: str, mode: str) -> Outcome:
    return run(name, mode)


# -- masking and the record -----------------------------------------------------------------

_SIGNED = ("dkim-signature", "arc-seal", "arc-message-signature")
_TAG = re.compile(rb"(^|;)([ \t\r\n]*)(bh?)([ \t\r\n]*)=[^;]*")
_D = re.compile(rb"(?:^|;)[ \t\r\n]*d[ \t\r\n]*=[ \t\r\n]*([^; \t\r\n]*)")


def mask(raw: bytes) -> bytes:
    """``raw`` with the b= and bh= values of relist's own signatures (d= the list's domain)
    replaced by ``<masked>``; every other byte as it was."""
    msg = RawMessage.parse(raw)
    fields = []
    for f in msg.fields:
        d = _D.search(f.value) if f.name in _SIGNED else None
        if d is not None and d.group(1).lower() == DOMAIN.encode():
            colon = f.raw.index(b":")
            eol = f.raw[len(f.raw.rstrip(b"\r\n")):]
            value = _TAG.sub(rb"\1\2\3\4=<masked>", f.raw[colon + 1:len(f.raw) - len(eol)])
            f = replace(f, raw=f.raw[:colon + 1] + value + eol)
        fields.append(f)
    return replace(msg, fields=tuple(fields)).to_bytes()


def _plain(value):
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def record_of(out: Outcome) -> dict:
    r = out.record
    mode = next((n.detail.split(" ", 1)[0] for n in r.steps
                 if n.step == "mode" and n.action == Action.RECORDED), "")
    return {
        "relist_id": r.relist_id,
        "message_id": r.message_id,
        "list_address": r.list_address,
        "size_in": r.size_in,
        "size_out": r.size_out,
        "mode": mode,
        "verdict": r.verdict.summary() if r.verdict is not None else None,
        "steps": [n.as_dict() for n in r.steps],
        "extra": {k: _plain(v) for k, v in r.extra},
        "reply": str(r.reply) if r.reply is not None else None,
    }


def dump(record: dict) -> str:
    return json.dumps(record, indent=1) + "\n"


def golden_paths(name: str, mode: str) -> tuple[Path, Path]:
    base = GOLDEN / mode / name
    return base.with_suffix(".eml"), base.with_suffix(".json")


def actual(out: Outcome) -> tuple[bytes, str]:
    return (mask(out.message) if out.message is not None else b""), dump(record_of(out))


def diff(expected: bytes | str, got: bytes | str, label: str) -> str:
    """A unified diff (empty when equal); bytes shown with CR made visible."""
    def lines(x):
        text = x.decode("utf-8", "backslashreplace") if isinstance(x, bytes) else x
        return text.replace("\r\n", "\\r\n").splitlines(keepends=True)
    if expected == got:
        return ""
    return "".join(difflib.unified_diff(lines(expected), lines(got), f"expected {label}",
                                        f"actual {label}", n=2))


def compare(name: str, mode: str, out: Outcome) -> str:
    """Every difference between ``out`` and the golden files, as diffs ("" when none)."""
    eml, rec = golden_paths(name, mode)
    if not eml.exists() or not rec.exists():
        return f"golden file missing: {eml.relative_to(ROOT)}; run python -m tests.test_golden --regen"
    got_eml, got_rec = actual(out)
    return diff(eml.read_bytes(), got_eml, f"{mode}/{name}.eml") + \
        diff(rec.read_text(), got_rec, f"{mode}/{name}.json")


def regen() -> int:
    """Rewrite every golden file from what the core does now (keys are kept)."""
    count = 0
    for mode in MODES:
        shutil.rmtree(GOLDEN / mode, ignore_errors=True)    # no stale files
        for name in corpus():
            eml, rec = golden_paths(name, mode)
            eml.parent.mkdir(parents=True, exist_ok=True)
            got_eml, got_rec = actual(outcome(name, mode))
            eml.write_bytes(got_eml)
            rec.write_text(got_rec)
            count += 1
    print(f"wrote {count} golden outputs ({2 * count} files) under {GOLDEN.relative_to(ROOT)}")
    return 0


# -- the golden tests -------------------------------------------------------------------------

def cases():
    if not corpus():
        return [pytest.param(None, marks=pytest.mark.skip(
            reason=f"Mailman corpus absent ({CORPUS / 'cases'}): run fixtures/mailman/capture.py"))]
    return [pytest.param(name, id=name) for name in corpus()]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", cases())
def test_output_and_record_match_golden(name, mode):
    problems = compare(name, mode, outcome(name, mode))
    if problems:
        pytest.fail(f"{mode}/{name} differs from fixtures/golden (if the change is deliberate: "
                    f"python -m tests.test_golden --regen, and review the diff)\n{problems}",
                    pytrace=False)


def test_golden_comparison_sees_a_changed_footer():
    name = "decorated-01-plain-text/out-01"
    assert not compare(name, "resign", outcome(name, "resign"))
    changed = run(name, "resign", relay_policy("resign", footer="-- \n{list_name}: another footer\n"))
    problems = compare(name, "resign", changed)
    assert "+Decorated: another footer\\r" in problems
    assert '- "size_out":' in problems            # the record differs too


def test_every_corpus_transaction_has_golden_files_and_no_stale_ones():
    expected = {golden_paths(n, m)[i].relative_to(GOLDEN) for n in corpus() for m in MODES for i in (0, 1)}
    present = {p.relative_to(GOLDEN) for m in MODES for p in (GOLDEN / m).rglob("*") if p.is_file()}
    assert len(expected) == 4 * len(corpus()) and present == expected


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", cases())
def test_relist_signatures_verify_unmasked(name, mode):
    out = outcome(name, mode)
    assert out.message is not None, out.reply
    pol = relay_policy(mode)
    facts = facts_for(out.message, pol, zone())
    verdict = verify_message(RawMessage.parse(out.message), facts, NOW)
    mine = [(s.algorithm, str(s.result)) for s in verdict.dkim if s.domain == DOMAIN]
    assert mine == [("rsa-sha256", "pass"), ("ed25519-sha256", "pass")], verdict.summary()
    assert verdict.arc.cv == "pass", verdict.arc.reason
    top = max(verdict.arc.sets, key=lambda s: s.instance)
    assert (top.ams.domain, str(top.ams.result), str(top.seal.result)) == (DOMAIN, "pass", "pass")


def test_signature_check_fails_on_a_changed_byte():
    name = "plain-01-plain-text/out-01"
    out = outcome(name, "resign").message.replace(b"\r\n\r\n", b"\r\n\r\nX", 1)
    facts = facts_for(out, relay_policy("resign"), zone())
    verdict = verify_message(RawMessage.parse(out), facts, NOW)
    assert [str(s.result) for s in verdict.dkim if s.domain == DOMAIN] == ["fail", "fail"]
    assert verdict.arc.cv == "fail"


# -- byte fidelity ----------------------------------------------------------------------------

_REPAIRED = re.compile(r"(?:^|; )([!-9;-~]+): (?:poster's bytes restored|dropped \d+ added by Mailman)")
_REMOVED = re.compile(r"([!-9;-~]+) \(\d+\)")
LIST_FIELDS = ("list-id", "list-help", "list-unsubscribe", "list-subscribe", "list-post",
               "list-owner", "list-archive", "list-unsubscribe-post")


def _footer(detail: str):
    names = set()
    if "wrapped" in detail:
        names |= {"content-*", "mime-version"}
    if "charset" in detail:
        names |= {"content-type", "mime-version"}
    if "-> quoted-printable" in detail:
        names |= {"content-transfer-encoding", "mime-version"}
    return names, True


# What a wrapped post's outer header copies (dmarc_mitigation's docstring: "Subject/To/Cc/
# Date/Message-ID/threading/List-* and the trace fields copied"): every other field goes.
WRAP_COPIES = ("subject", "to", "cc", "date", "message-id", "in-reply-to", "references", "list-*",
               "received", "authentication-results", "arc-seal", "arc-message-signature",
               "arc-authentication-results")


def _mitigation(detail: str):
    names = {"from", "x-original-from"}
    if "wrapped as message/rfc822" in detail:
        names |= {"wrap", "mime-version", "content-*"}
    names |= {"reply-to"} if "added to Reply-To" in detail else set()
    names |= {"cc"} if "added to Cc" in detail else set()
    return names, "wrap" in names


def _repair(detail: str):
    return {m.lower() for m in _REPAIRED.findall(detail)} - {"body"}, "body: poster's bytes" in detail


# step name -> detail -> (header field names the step may have replaced, moved or removed,
# whether it may have changed the body).  Only steps whose note says "applied" count; a step
# that applies and is not here fails the test (a new step must say what it touches).
TOUCHES = {
    "repair": _repair,
    "remove-headers": lambda d: ({n.lower() for n in _REMOVED.findall(d)}, False),
    "subject-prefix": lambda d: ({"subject"}, False),
    "footer": _footer,
    "list-headers": lambda d: (set(LIST_FIELDS) if d.startswith("replaced") else set(), False),
    "sender": lambda d: ({"sender"}, False),
    "reply-to": lambda d: ({"reply-to"}, False),
    "strip": lambda d: ({"dkim-signature", "domainkey-signature"}, False),
    "downgrade": lambda d: ({"content-transfer-encoding", "mime-version"}, True),
    "dmarc-mitigation": _mitigation,
    "trace": lambda d: (set(), False),
    "authres": lambda d: ({"authentication-results"} if "removed" in d else set(), False),
    "sign": lambda d: (set(), False),
    "arc-seal": lambda d: (set(), False),
}


def touched(notes, but: str = "") -> tuple[set[str], bool]:
    """(names, body changed) from the notes of the steps that applied (except ``but``)."""
    names, body = set(), False
    for n in notes:
        if n.action != Action.APPLIED or n.step == but:
            continue
        assert n.step in TOUCHES, f"step {n.step!r} applied; TOUCHES does not say what it may change"
        more, changes_body = TOUCHES[n.step](n.detail)
        names |= more
        body = body or changes_body
    return names, body


def _is_touched(name: str, names: set[str]) -> bool:
    if name in names or any(n.endswith("*") and name.startswith(n[:-1]) for n in names):
        return True
    return "wrap" in names and not any(name == n or (n.endswith("*") and name.startswith(n[:-1]))
                                       for n in WRAP_COPIES)


def fidelity_problems(raw: bytes, out: Outcome) -> list[str]:
    """What breaks the byte-fidelity promise for ``raw`` -> ``out`` ([] when nothing)."""
    names, body_changed = touched(out.record.steps)
    src, dst = RawMessage.parse(raw), RawMessage.parse(out.message)
    kept = [f for f in src.fields if not _is_touched(f.name, names)]
    problems = []
    # Same bytes and same relative order: ``kept`` is a subsequence of the output's fields.
    i = 0
    for f in dst.fields:
        if i < len(kept) and f.raw == kept[i].raw:
            i += 1
    if i < len(kept):
        missing = kept[i]
        twins = [f.raw for f in dst.get_all(missing.name)] if missing.name else []
        problems.append(f"untouched field not kept byte-identical and in order: {missing.raw!r}; "
                        f"output has {twins!r}")
    if not body_changed and (dst.body, dst.separator) != (src.body, src.separator):
        problems.append("body changed although no body-changing step applied")
    return problems + kept_claims(src, dst, out.record.steps, names)


def _only_inserted(old: bytes, new: bytes) -> bool:
    """``new`` is ``old`` with one run of bytes inserted (or appended)."""
    head = len(os.path.commonprefix([old, new]))
    tail = len(os.path.commonprefix([old[::-1], new[::-1]]))
    return len(new) >= len(old) and head + tail >= len(old)


def kept_claims(src: RawMessage, dst: RawMessage, notes, names: set[str]) -> list[str]:
    """What the touching steps say they keep (their docstrings): the Subject's value bytes
    after the prefix, the body's bytes around an appended footer or inside a wrapped one.
    Judged only when no other step changed the same bytes."""
    applied = {n.step: n.detail for n in notes if n.action == Action.APPLIED}
    problems = []
    others = "wrap" in names or "repair" in applied
    detail = applied.get("subject-prefix", "")
    if re.fullmatch(r"prefix '[^']*' added(; .*)?", detail) and not others:
        value = src.get("subject").raw.split(b":", 1)[1].lstrip(b" \t")
        value = value.lstrip(b"\r\n").lstrip(b" \t")
        if not dst.get("subject").raw.endswith(value):
            problems.append(f"subject-prefix: the Subject's bytes are not kept after the prefix: "
                            f"{src.get('subject').raw!r} -> {dst.get('subject').raw!r}")
    detail = applied.get("footer", "")
    if detail and not others and "downgrade" not in applied and "->" not in detail \
            and "(base64," not in detail:
        ok = src.body in dst.body if "wrapped" in detail else _only_inserted(src.body, dst.body)
        if not ok:
            problems.append(f"footer ({detail}): the post's body bytes are not kept")
    detail = applied.get("dmarc-mitigation", "")
    target = re.search(r"original From added to (Reply-To|Cc)", detail)
    if target and not others:
        # X-Original-From keeps the From value's bytes; Reply-To/Cc keep theirs and gain it.
        original = src.get("from").value.strip(b" \t")
        if dst.get("x-original-from").value.strip(b" \t") != original:
            problems.append(f"dmarc-mitigation: X-Original-From is not the From value's bytes: "
                            f"{dst.get('x-original-from').raw!r}")
        now = dst.get(target.group(1)).value
        for value in [f.value.strip(b" \t") for f in src.get_all(target.group(1))] + [original]:
            if value not in now:
                problems.append(f"dmarc-mitigation: {target.group(1)} lost {value!r}: {now!r}")
    if "wrapped as message/rfc822" in detail and "repair" not in applied:
        # The attached post is the message as it was before wrapping, byte for byte.
        before, body_changed = touched(notes, but="dmarc-mitigation")
        for f in src.fields:
            if not _is_touched(f.name, before) and f.raw not in dst.body:
                problems.append(f"dmarc-mitigation: {f.raw!r} not in the wrapped post")
        if not body_changed and src.body not in dst.body:
            problems.append("dmarc-mitigation: the post's body is not in the wrapped post")
    return problems


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", cases())
def test_untouched_fields_and_body_are_byte_identical(name, mode):
    out = outcome(name, mode)
    problems = fidelity_problems(corpus()[name].data, out)
    assert not problems, "\n".join(problems + [f"{n.step} {n.action}: {n.detail}" for n in out.record.steps])


# Other list settings, so that every transformation's byte promise is judged on the corpus
# (no golden files: the same check as above, over each configuration).
VARIANTS = {
    "list-headers-replace": dict(list_headers="replace", unsubscribe_url="https://lists.example.org/u"),
    "reply-to-list": dict(reply_to="list"),
    "wrap-always": dict(dmarc_mitigation="wrap", dmarc_trigger="always"),
    "downgrade-8bit": dict(downgrade_8bit=True),
    "strip-broken-non-ascii": dict(strip="broken", display_name="Liste Café",
                                   footer="-- \n{list_name} ✓\n", subject_prefix="[{list_name}] "),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_byte_fidelity_under_other_list_settings(variant, mode):
    if not corpus():
        pytest.skip("Mailman corpus absent")
    pol = relay_policy(mode, **VARIANTS[variant])
    problems = {}
    for name, tx in corpus().items():
        out = run(name, mode, pol)
        assert out.message is not None, (name, out.reply)
        found = fidelity_problems(tx.data, out)
        if found:
            problems[name] = found
    assert not problems, "\n".join(f"{n}: {p}" for n, p in problems.items())


def posts():
    return [pytest.param(p, id=p.parent.name) for p in sorted((CORPUS / "cases").glob("*/post.eml"))] \
        or cases()


@pytest.mark.parametrize("post", posts())
def test_ingress_leg_keeps_every_post_field_and_the_body(post):
    raw = post.read_bytes()
    pol = relay_policy("preserve")
    ctx = Context(Envelope("alice@poster.example", ("plain@lists.example.org",)), pol, NOW, RELIST_ID,
                  facts_for(raw, pol, zone()))
    out = pipeline.process(raw, ctx, pipeline.INGRESS_STEPS)
    assert not fidelity_problems(raw, out)


def test_fidelity_check_sees_a_refolded_field_a_changed_body_and_a_rewritten_subject():
    name = "plain-05-cc/out-01"
    raw, out = corpus()[name].data, outcome(name, "preserve")     # footer skipped: body kept
    assert fidelity_problems(raw, out) == []
    refolded = out.message.replace(b"Message-ID: <", b"Message-ID:\r\n <", 1)
    assert refolded != out.message
    problems = fidelity_problems(raw, replace(out, output=RawMessage.parse(refolded)))
    assert len(problems) == 1 and "Message-ID" in problems[0]
    assert fidelity_problems(raw, replace(out, output=RawMessage.parse(out.message + b"x"))) == [
        "body changed although no body-changing step applied"]
    out = outcome(name, "resign")                                 # prefix and footer added
    assert fidelity_problems(raw, out) == []
    requoted = out.message.replace(b"Subject: [Plain] Post with Cc", b"Subject: [Plain] \"Post with Cc\"")
    assert requoted != out.message
    problems = fidelity_problems(raw, replace(out, output=RawMessage.parse(requoted)))
    assert len(problems) == 1 and problems[0].startswith("subject-prefix: the Subject's bytes")


if __name__ == "__main__":
    if sys.argv[1:] != ["--regen"]:
        sys.exit("usage: python -m tests.test_golden --regen   (rewrites fixtures/golden/{resign,preserve})")
    sys.exit(regen())
