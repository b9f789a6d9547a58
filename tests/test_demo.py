"""``relist demo``: the README's first command, run end to end on loopback."""

from __future__ import annotations

import io
import re
import sqlite3

from relist import demo


def test_demo_replays_the_corpus_and_a_receiver_verifies_everything(tmp_path):
    out = io.StringIO()
    assert demo.run(out=out, keep=str(tmp_path / "kept")) == 0
    text = out.getvalue()
    posts = len(demo.load_posts(demo.DEFAULT_FIXTURES))
    corpus = len(demo.load_corpus(demo.DEFAULT_FIXTURES))
    assert f"{posts} reached Mailman, 0 refused" in text
    assert f"sink received {corpus} messages; 0 transaction(s) not accepted" in text
    tally = {m[1].strip(): (int(m[2]), int(m[3])) for m in re.finditer(r"^    (.+?)\s+(\d+)/(\d+) pass$", text, re.M)}
    rsa = tally["list DKIM rsa-sha256 (d=lists.example.org)"]
    ed = tally["list DKIM ed25519-sha256 (d=lists.example.org)"]
    assert rsa == (corpus, corpus) and ed == (corpus, corpus)
    assert tally["ARC chain (cv=pass)"] == (corpus, corpus)
    kept, total = tally["poster signatures kept (preserve/auto lists)"]
    assert total > 0 and kept == total
    # The preserve list repaired what Mailman broke, and said so per message.
    assert "repair           applied   body: poster's bytes restored" in text

    # docs/diagnostics.md's queries, on the store the demo kept.
    db = sqlite3.connect(tmp_path / "kept" / "relist.db")
    per_list = db.execute("select list_address, b.value, count(*) from transactions, "
                          "json_each(json_extract(facts, '$.breakage')) b group by 1, 2").fetchall()
    assert ("plain@lists.example.org", "poster.example/s1: survived") in {r[:2] for r in per_list}
    assert all(not v.endswith(": mailman") for lst, v, _ in per_list if lst == "plain@lists.example.org")
    modes = db.execute("select json_extract(s.value, '$.detail') from transactions, json_each(transactions.steps) s "
                       "where list_address = 'dmarc@lists.example.org' and json_extract(s.value, '$.step') = 'mode'"
                       ).fetchall()
    assert modes and all(m[0].startswith(("resign (auto:", "preserve (auto:")) for m in modes)
    assert (tmp_path / "kept" / "demo-rsa.key").stat().st_mode & 0o077 == 0


def test_demo_without_a_corpus_uses_the_builtin_post(tmp_path):
    out = io.StringIO()
    assert demo.run(fixtures=str(tmp_path), out=out) == 0
    text = out.getvalue()
    assert "using the built-in sample post" in text
    assert "sink received 1 messages; 0 transaction(s) not accepted" in text
    assert "list DKIM rsa-sha256 (d=lists.example.org)   1/1 pass" in text

