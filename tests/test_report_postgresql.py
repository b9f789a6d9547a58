"""``relist report`` and ``relist explain`` read a PostgreSQL store as they read SQLite:
the same mail through the same legs into each backend gives the same report and the
same story (their SQL is portable; tests/pgserver.py starts the server)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.explain_store import ROOT, build


def run(conf, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "relist", *args, "-c", str(conf), "--json"],
                         capture_output=True, text=True, cwd=ROOT, check=True, timeout=120)
    return json.loads(out.stdout)


def comparable(story: dict) -> dict:
    """A story without what differs from run to run (relist ids, times)."""
    return {"steps": [(s["step"], s["action"]) for s in story["steps"]], "breakage": story["breakage"],
            "arrival": [(a["domain"], a["selector"], a["result"], a["reason"]) for a in story["arrival"]],
            "dmarc": story["dmarc"], "mitigation": story["mitigation"], "list": story["list"],
            "replies": sorted(r for t in story["transactions"] for r in t["replies"].items()),
            "bounces": [(b["cause"], b["recipient"]) for b in story["bounces"]],
            "match": {k: v for k, v in story["ingress_match"].items()
                      if k not in ("ingress_copy", "first_difference")},
            "records": len(story["relist_ids"])}


def test_postgresql_and_sqlite_tell_the_same(tmp_path, pg_url):
    (tmp_path / "pg").mkdir()
    (tmp_path / "lite").mkdir()
    pg = build(tmp_path / "pg", store_url=pg_url)
    lite = build(tmp_path / "lite")
    assert run(pg["conf"], "report") == run(lite["conf"], "report")
    for mid in ("<plain-01@poster.example>", "<decorated-01@poster.example>", "<plain-05@poster.example>",
                "verp-01@poster.example"):
        assert (comparable(run(pg["conf"], "explain", mid))
                == comparable(run(lite["conf"], "explain", mid))), mid
    assert run(pg["conf"], "explain", "<plain-05@poster.example>")["ingress_match"]["first_difference"]
