"""``relist report``: per list, counted per post, over a store that real mail built
(tests/explain_store.py).  The figures are checked against an independent
reading of the same SQLite file (SQLite's own JSON functions) and against what the
corpus cases are known to be."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from tests.explain_store import ROOT, _out, build

CONTRACT = {"posts", "signed_valid_on_arrival", "kept_valid", "resigned", "mitigated", "broken_by",
            "bounces_by_cause"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build(tmp_path_factory.mktemp("report"))


def report(conf, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "relist", "report", "-c", str(conf), *args],
                          capture_output=True, text=True, cwd=ROOT, check=check, timeout=120)


def report_json(conf, *args: str) -> dict:
    return json.loads(report(conf, "--json", *args).stdout)


def independent(db_path) -> dict[str, dict[str, int]]:
    """Per list, from SQL alone: egress posts that are not Mailman notices, and those
    in which a poster signature survived in every transaction, re-signed, mitigated."""
    db = sqlite3.connect(db_path)
    q = """
    WITH egress AS (
      SELECT t.list_address AS list, t.message_id AS mid, t.facts, t.steps FROM transactions t
      WHERE t.list_address IS NOT NULL AND json_extract(t.facts, '$.leg') IS NOT 'ingress'
        AND NOT EXISTS (SELECT 1 FROM json_each(t.steps) s WHERE json_extract(s.value, '$.step') = 'identify'
                        AND json_extract(s.value, '$.detail') LIKE '%a Mailman notice%')),
    per_tx AS (
      SELECT list, mid,
        EXISTS (SELECT 1 FROM json_each(json_extract(facts, '$.breakage')) b WHERE b.value LIKE '%: survived')
          AS kept,
        EXISTS (SELECT 1 FROM json_each(steps) s WHERE json_extract(s.value, '$.step') = 'dmarc-mitigation'
                AND json_extract(s.value, '$.action') = 'applied') AS mitigated,
        EXISTS (SELECT 1 FROM json_each(steps) s WHERE json_extract(s.value, '$.step') = 'mode'
                AND json_extract(s.value, '$.detail') LIKE 'resign%') AS resign
      FROM egress)
    SELECT list, COUNT(*), SUM(k), SUM(m), SUM(r) FROM
      (SELECT list, mid, MIN(kept) AS k, MAX(mitigated) AS m, MAX(resign) AS r FROM per_tx GROUP BY list, mid)
    GROUP BY list"""
    try:
        return {lst: {"posts": n, "kept_valid": k, "mitigated": m, "resigned": r}
                for lst, n, k, m, r in db.execute(q)}
    finally:
        db.close()


def test_json_counts_posts_not_transactions(store):
    doc = report_json(store["conf"])
    lists = doc["lists"]
    assert set(lists) == {"plain@lists.example.org", "decorated@lists.example.org", "dmarc@lists.example.org",
                          "verp@lists.example.org"}
    for entry in lists.values():
        assert CONTRACT <= set(entry)
    want = independent(store["db"])
    got = {a: {k: e[k] for k in ("posts", "kept_valid", "mitigated", "resigned")} for a, e in lists.items()}
    assert got == want
    plain, verp = lists["plain@lists.example.org"], lists["verp@lists.example.org"]
    # plain-01, -03, -05 (egress copy forged), -17 (unsigned), and the unsigned ESC post.
    # plain-17's first transaction deferred at DATA and sent again; m12 deferred at RCPT.
    assert plain["posts"] == 5 and plain["transactions"] == 9
    deferred = len(_out("plain-17-unsigned")[0][1]) + 1   # the deferred DATA's recipients, and m12
    assert plain["deferred"] == 1 and plain["deferred_recipients"] == deferred and plain["rejected"] == 0
    assert plain["signed_valid_on_arrival"] == 3
    assert plain["kept_valid"] == 2 and plain["kept_intact"] == 1 and plain["repaired"] == 1
    assert plain["broken_by"] == {"mailman (no ingress match)": 1}
    assert plain["bounces_by_cause"] == {"dmarc": 1}
    assert plain["top_receiver_domains"] == [["members.example", 1]]
    assert plain["top_poster_domains"] == [["poster.example", 1]]
    # VERP: one transaction per member, one post; the MTA refused the last one at DATA.
    assert verp["posts"] == 1 and verp["transactions"] == 4 and verp["members_reached"] == 3
    assert verp["rejected"] == 1 and verp["deferred"] == 0
    assert verp["broken_by"] == {"mailman": 1} and verp["resigned"] == 1 and verp["mitigated"] == 1
    decorated = lists["decorated@lists.example.org"]
    assert decorated["mitigations"] == {"From rewritten (p=reject)": 1}
    # Members reached: every recipient the sink MTA got a post for.
    sunk = sum(len(m.rcpt_tos) for m in store["sink"])
    assert sum(e["members_reached"] for e in lists.values()) == sunk
    assert all(e["deferred"] == 0 and e["rejected"] == 0
               for a, e in lists.items() if a.startswith(("dec", "dm")))


def test_list_and_since_filters(store, tmp_path):
    only = report_json(store["conf"], "--list", "verp@lists.example.org")
    assert list(only["lists"]) == ["verp@lists.example.org"]
    # Move the plain list's records and bounce ten days back, in a copy of the store.
    db_path = tmp_path / "relist.db"
    src, db = sqlite3.connect(store["db"]), sqlite3.connect(db_path)
    src.backup(db)   # the WAL's content too
    src.close()
    old = (datetime.now(UTC) - timedelta(days=10)).isoformat()
    db.execute("UPDATE transactions SET time = ? WHERE list_address = 'plain@lists.example.org'", (old,))
    db.execute("UPDATE bounces SET time = ?", (old,))
    db.commit()
    db.close()
    conf = tmp_path / "relist.toml"
    conf.write_text(f'[store]\npath = "{db_path}"\n')
    recent = report_json(conf, "--since", "7d")
    assert "plain@lists.example.org" not in recent["lists"] and recent["since"]
    assert recent["lists"]["verp@lists.example.org"]["posts"] == 1
    everything = report_json(conf, "--since", "30d")
    assert everything["lists"]["plain@lists.example.org"]["posts"] == 5
    assert everything["lists"]["plain@lists.example.org"]["bounces_by_cause"] == {"dmarc": 1}
    days = everything["lists"]["plain@lists.example.org"]["by_day"]
    assert list(days) == [old[:10]] and days[old[:10]]["posts"] == 5


def test_text_for_a_terminal(store):
    r = report(store["conf"])
    out = r.stdout
    assert out.startswith("relist report: 4 lists, 8 posts (whole store)")
    block = out.split("plain@lists.example.org", 1)[1].split("\n\n", 1)[0]
    assert "(preserve 5)" in block
    assert "deferred / rejected        1 / 0        transactions; 11 recipients deferred" in block
    assert "kept valid                     2   40%  1 intact, 1 repaired" in block
    assert "bounces                        1        dmarc 1" in block
    assert r.stderr == ""   # no progress bar when standard error is not a terminal


def test_empty_and_missing_stores(tmp_path):
    conf = tmp_path / "relist.toml"
    conf.write_text(f'[store]\npath = "{tmp_path / "none.db"}"\n')
    r = report(conf, check=False)
    assert r.returncode == 2 and "cannot read the store" in r.stderr
    from relist.edge.store import open_reader  # creates and migrates an empty store
    sqlite3.connect(tmp_path / "none.db").close()
    open_reader({"path": str(tmp_path / "none.db")}).close()
    assert report_json(conf) == {"lists": {}, "since": None}
    assert "no list mail recorded" in report(conf).stdout


def test_progress_bar_only_on_a_terminal_after_a_second():
    import io

    from relist.cli.report import Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True
    quiet, shown = Progress(io.StringIO(), after=0), Progress(Tty(), after=0)
    for p in (quiet, shown):
        p(50, 100, "transactions")
        p.close()
    assert quiet.stream.getvalue() == ""
    assert "[###############               ]  50% transactions" in shown.stream.getvalue()
    later = Progress(Tty(), after=3600)
    later(50, 100, "transactions")
    assert later.stream.getvalue() == ""


def test_fast_readers_agree_with_a_json_parser(store):
    """The report reads the JSON columns in place; on every stored row that must give
    what decoding them gives."""
    from relist.core.report import notes
    db = sqlite3.connect(store["db"])
    rows = db.execute("SELECT steps, facts FROM transactions").fetchall()
    db.close()
    assert len(rows) > 20
    for steps, facts in rows:
        assert notes.post_notes(steps) == notes._post_notes_slow(json.loads(steps))
        assert notes.breakage_of(facts) == list(json.loads(facts).get("breakage", []))
    # A text in another layout (keys reordered) takes the slow way, with the same result.
    steps = rows[-1][0]
    reordered = json.dumps([{"detail": n["detail"], "action": n["action"], "step": n["step"]}
                            for n in json.loads(steps)])
    assert notes.post_notes(reordered) == notes.post_notes(steps)
