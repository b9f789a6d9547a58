"""``relist demo``: the README's first command, run end to end on loopback."""

from __future__ import annotations

import io
import re

from relist import demo


def test_demo_replays_the_corpus_and_a_receiver_verifies_everything():
    out = io.StringIO()
    assert demo.run(out=out) == 0
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


def test_demo_without_a_corpus_uses_the_builtin_post(tmp_path):
    out = io.StringIO()
    assert demo.run(fixtures=str(tmp_path), out=out) == 0
    text = out.getvalue()
    assert "using the built-in sample post" in text
    assert "sink received 1 messages; 0 transaction(s) not accepted" in text
    assert "list DKIM rsa-sha256 (d=lists.example.org)   1/1 pass" in text
