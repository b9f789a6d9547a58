"""Sign once per post through the relay: Mailman's 10-recipient batches of one post
get one signature, read back from the SQLite store; ``sign_once = false`` turns it off."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from relist.core.sign.signing_keys import dns_record
from relist.edge.key_files import generate, write_private_key
from relist.sandbox.dnsserver import split_txt
from tests.helpers import client

LIST = "dev@lists.example.org"
POST = (b"From: Poster <poster@poster.example>\r\nTo: dev@lists.example.org\r\n"
        b"Subject: batches\r\nMessage-ID: <batch-1@poster.example>\r\n"
        b"List-Id: <dev.lists.example.org>\r\n\r\nOne post, many recipients.\r\n")


def steps_of(db, relist_count):
    con = sqlite3.connect(db)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = con.execute("SELECT steps FROM transactions ORDER BY rowid").fetchall()
        if len(rows) >= relist_count:
            return [[n["step"] for n in json.loads(r[0])] for r in rows]
        time.sleep(0.05)
    raise AssertionError(f"store has {len(rows)} rows, expected {relist_count}")


@pytest.mark.parametrize("sign_once", [True, False])
def test_batches_of_one_post(tmp_path, relist_factory, sink, dns_server, sign_once):
    key = generate("rsa")
    path = write_private_key(tmp_path / "s1.key", key)
    dns_server.set("s1._domainkey.lists.example.org", [split_txt(dns_record(key))])
    srv = relist_factory({"server": {"sign_once": sign_once},
                          "lists": {LIST: {"mode": "resign", "selector": "s1", "private_key": str(path)}}})
    c = client(srv.port)
    for batch in range(3):
        c.sendmail("dev-bounces@lists.example.org", [f"m{batch}-{i}@example.com" for i in range(10)], POST)
    c.quit()
    assert len(sink.messages) == 3
    sigs = {m.data.split(b"DKIM-Signature:", 1)[1].split(b"\r\n", 1)[0] for m in sink.messages}
    steps = steps_of(tmp_path / "relist.db", 3)
    if sign_once:
        # One DKIM-Signature for the post: the later batches reuse the first result.
        assert len(sigs) == 1
        # The record of a reused result says so (after the first one's notes).
        assert "sign-cache" not in steps[0] and all(s[-1] == "sign-cache" for s in steps[1:])
    else:
        assert all("sign" in s and "sign-cache" not in s for s in steps)
