"""Run the core over every message the repository holds and print one line per message
and configuration: the output's SHA-256 and the steps' notes.  ``tests/test_compiled_same.py``
runs it over the Python sources and over the compiled core and compares the lines.

    RELIST_CORE=python .venv/bin/python -m tests.compiled_same > sources.txt
    RELIST_CORE=compiled .venv/bin/python -m tests.compiled_same > compiled.txt

Fixed inputs only: the TEST ONLY list keys, the corpus's DNS data (any other name does
not exist), a fixed time and relist id, so that two runs print the same lines.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path

import relist
from relist.core import pipeline
from relist.core.model import Context, Envelope
from tests.helpers import ROOT, SHARED
from tests.modes_support import facts_for
from tests.test_golden import NOW, list_keys, zone
from tests.test_hostile import CONFIGS, MAIL_FROM, policy


def messages() -> list[Path]:
    """Every message file: the hostile corpus, the fixtures (the Mailman corpus, the
    bounces, the golden outputs), and the Mail::DKIM corpus when ../shared is there."""
    found = sorted((ROOT / "tests" / "data").rglob("*.eml")) + sorted((ROOT / "fixtures").rglob("*.eml"))
    corpus = SHARED / "conformance"
    if corpus.is_dir():
        found += sorted(p for p in corpus.rglob("*.txt") if p.parent.name == "corpus")
    return found


def mutations(raw: bytes, seed: str) -> list[bytes]:
    """Two damaged copies of ``raw``, the same in every run (seeded by ``seed``): bytes
    overwritten with random ones (8-bit, NUL, CR, LF, colons), and a line dropped with
    another repeated."""
    rng = random.Random(seed)
    flipped = bytearray(raw)
    for _ in range(max(1, len(raw) // 200)):
        flipped[rng.randrange(len(raw))] = rng.choice(b"\x00\r\n:;= \t\x80\xff\xc3\xa9=?")
    rows = raw.split(b"\n")
    i, j = rng.randrange(len(rows)), rng.randrange(len(rows))
    shuffled = rows[:i] + rows[i + 1:]
    shuffled.insert(j, rows[j])
    return [bytes(flipped), b"\n".join(shuffled)]


def lines():
    keys = list_keys()
    for path in messages():
        original = path.read_bytes()
        cases = [("", original, (*CONFIGS, "plain"))]
        if original:
            damaged = mutations(original, path.name)
            cases += [(f"~{k}", raw, ("resign", "auto")) for k, raw in enumerate(damaged)]
        for variant, raw, configs in cases:
            yield from _lines(path, variant, raw, configs, keys)


def _lines(path, variant, raw, configs, keys):
    for config in configs:
        pol = policy(config)
        ctx = Context(Envelope(MAIL_FROM, ("m@example.com",)), pol, NOW, "SAME00000001",
                      facts_for(raw, pol, zone()), keys=keys)
        out = pipeline.process(raw, ctx)
        body = out.message or b""
        notes = [[n.step, n.action.value, n.detail] for n in out.record.steps]
        reply = [out.reply.code, out.reply.enhanced, out.reply.text] if out.reply is not None else None
        name = path.relative_to(ROOT if path.is_relative_to(ROOT) else SHARED)
        yield json.dumps([f"{name}{variant}", config, hashlib.sha256(body).hexdigest(), reply, notes])


def main() -> int:
    print(json.dumps({"core": relist.BUILD.running}))
    for line in lines():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
