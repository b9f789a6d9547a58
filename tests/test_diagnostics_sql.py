"""docs/diagnostics.md's SQL appendix runs against a store that real mail built
(tests/explain_store.py), so its queries follow the schema: each one runs, and
each returns rows unless the text before it says it "may be none"."""

from __future__ import annotations

import re
import sqlite3

import pytest

from tests.explain_store import ROOT, build

DOC = ROOT / "docs" / "diagnostics.md"


def appendix_queries() -> list[tuple[str, bool]]:
    """(query, may be empty) for each ```sql block of the appendix."""
    text = DOC.read_text()
    appendix = text.split("## Appendix: the store in SQL", 1)[1]
    out = []
    for m in re.finditer(r"(?s)((?:[^`]|`(?!``))*)```sql\n(.*?)```", appendix):
        before, sql = m.group(1), m.group(2)
        out.append((sql.strip(), "may be none" in before.strip().rsplit("\n\n", 1)[-1]))
    return out


QUERIES = appendix_queries()


def test_the_appendix_has_its_queries():
    assert len(QUERIES) >= 10
    assert sum(not empty for _, empty in QUERIES) >= 8


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    store = build(tmp_path_factory.mktemp("sql"))
    conn = sqlite3.connect(store["db"])
    yield conn
    conn.close()


@pytest.mark.parametrize("sql,may_be_empty", QUERIES, ids=[f"q{i}" for i in range(len(QUERIES))])
def test_query_runs_on_a_real_store(db, sql, may_be_empty):
    rows = db.execute(sql).fetchall()
    assert may_be_empty or rows, sql
