"""``relist demo``: the README's first command, run end to end on loopback."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

from relist import demo

ROOT = demo.DEFAULT_FIXTURES.parent.parent


def test_demo_replays_the_corpus_and_a_receiver_verifies_everything(tmp_path):
    out = io.StringIO()
    kept = tmp_path / "kept"
    assert demo.run(out=out, keep=str(kept)) == 0
    text = out.getvalue()
    posts = len(demo.load_posts(demo.DEFAULT_FIXTURES))
    corpus = len(demo.load_corpus(demo.DEFAULT_FIXTURES))
    assert f"{posts} reached Mailman, 0 refused" in text
    assert f"sink received {corpus} messages; 0 transaction(s) not accepted" in text
    tally = {m[1].strip(): (int(m[2]), int(m[3]))
             for m in re.finditer(r"^    (.+?)\s+(\d+)/(\d+) pass$", text, re.MULTILINE)}
    rsa = tally["list DKIM rsa-sha256 (d=lists.example.org)"]
    ed = tally["list DKIM ed25519-sha256 (d=lists.example.org)"]
    assert rsa == (corpus, corpus) and ed == (corpus, corpus)
    assert tally["ARC chain (cv=pass)"] == (corpus, corpus)
    kept_sigs, total = tally["poster signatures kept (preserve/auto lists)"]
    assert total > 0 and kept_sigs == total
    # Short: no per-transaction detail without --verbose.
    assert len(text.splitlines()) < 40 and "repair           applied" not in text

    # The summary table per list, counted per post, agrees with `relist report` on the kept store.
    conf = kept / "relist.toml"
    assert f"relist explain -c {conf}" in text and f"relist report -c {conf}" in text
    table = text.split("per list, counted per post", 1)[1].splitlines()[1:6]
    heads = re.split(r"\s{2,}", table[0].strip())
    assert heads == list(demo.SUMMARY_HEADS)
    rows = {r.split()[0]: r for r in table[1:]}
    assert set(rows) == {"plain@lists.example.org", "decorated@lists.example.org", "dmarc@lists.example.org",
                         "verp@lists.example.org"}
    report = json.loads(subprocess.run([sys.executable, "-m", "relist", "report", "-c", str(conf), "--json"],
                                       capture_output=True, text=True, check=True, cwd=ROOT).stdout)["lists"]
    for address, row in rows.items():
        e = report[address]
        numbers = re.findall(r"\s(\d+)(?=\s)", row)[:6]
        assert numbers == [str(e[k]) for k in ("posts", "signed_valid_on_arrival", "kept_intact", "repaired",
                                               "resigned", "mitigated")], row
    plain = report["plain@lists.example.org"]
    assert rows["plain@lists.example.org"].split()[1] == "preserve"
    assert plain["repaired"] > 0 and plain["kept_valid"] == plain["kept_intact"] + plain["repaired"]
    assert "mailman" not in plain["broken_by"]   # the preserve list repaired what Mailman broke
    assert rows["dmarc@lists.example.org"].split()[1] == "auto"
    assert report["decorated@lists.example.org"]["broken_by"].get("mailman", 0) > 0
    assert (kept / "demo-rsa.key").stat().st_mode & 0o077 == 0

    # The kept store answers `relist explain`: the repair the preserve list made, with its proof.
    story = subprocess.run([sys.executable, "-m", "relist", "explain", "-c", str(conf),
                            "<plain-03@poster.example>"],
                           capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert "repair           applied   body: poster's bytes restored" in story


def test_verbose_prints_each_transaction(tmp_path):
    out = io.StringIO()
    assert demo.run(fixtures=str(tmp_path), out=out, verbose=True) == 0
    text = out.getvalue()
    assert "using the built-in sample post" in text
    assert "sink received 1 messages; 0 transaction(s) not accepted" in text
    assert "list DKIM rsa-sha256 (d=lists.example.org)   1/1 pass" in text
    assert "builtin/out-01" in text and re.search(r"^    sign +applied +rsa-sha256", text, re.MULTILINE)
    assert "run `relist demo --keep DIR` to keep the store" in text
    assert re.search(r"^    plain@lists.example.org +preserve +1 ", text, re.MULTILINE)
