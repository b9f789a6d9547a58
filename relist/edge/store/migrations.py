"""The store's schema: one migration history for SQLite and PostgreSQL.

``MIGRATIONS[i]`` takes a database from version ``i`` to ``i + 1``.  Never edit a
released migration: append.  The statements are written in SQLite's dialect, which is
also what an older relist wrote into its SQLite files; ``statements(i, "postgresql")``
gives the same migration for PostgreSQL by mapping the few column types that differ
(``_PG_TYPES``: BYTEA for BLOB, BIGINT for INTEGER so that a hostile ``l=`` or size
never overflows, DOUBLE PRECISION for REAL, whose PostgreSQL namesake is 4 bytes and
would round a Unix time to minutes, and a BIGINT identity for the bounces id).

Where the version is kept: SQLite's ``PRAGMA user_version``; PostgreSQL's one-row
table ``relist_schema``.  Migrating takes a lock, so that several relist processes
(or hosts) starting together migrate once: SQLite ``BEGIN IMMEDIATE``, PostgreSQL an
advisory lock held for the migrating transaction (DDL is transactional there).
"""

from __future__ import annotations

import re

__all__ = ["COLUMNS", "KEYS", "LOCK_EXPIRE", "LOCK_MIGRATE", "MIGRATIONS", "SchemaTooNew", "statements"]

MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1: transactions
    """
    CREATE TABLE transactions (
        relist_id     TEXT PRIMARY KEY,
        time          TEXT NOT NULL,            -- ISO 8601, UTC
        client_ip     TEXT NOT NULL,
        client_helo   TEXT NOT NULL,
        mail_from     TEXT NOT NULL,
        rcpt_tos      TEXT NOT NULL,            -- JSON list
        message_id    TEXT NOT NULL,
        list_address  TEXT,
        size_in       INTEGER NOT NULL,
        size_out      INTEGER NOT NULL,
        steps         TEXT NOT NULL,            -- JSON list of {step, action, detail}
        facts         TEXT NOT NULL DEFAULT '{}', -- JSON: what the steps learned
        relist_reply  TEXT,                     -- relist's own refusal, if any
        upstream      TEXT NOT NULL DEFAULT '{}', -- JSON {recipient: "code enhanced text"} + "DATA"
        reply         TEXT NOT NULL DEFAULT '', -- the final reply given to the client
        duration_ms   REAL NOT NULL DEFAULT 0
    );
    CREATE INDEX transactions_message_id ON transactions(message_id);
    CREATE INDEX transactions_list_time ON transactions(list_address, time);
    """,
    # 1 -> 2: what verification found (relist.core.verify.Verdict), one row per
    # signature (DKIM, DomainKeys, ARC AMS and AS) and one per message for DMARC/ARC.
    """
    CREATE TABLE signatures (
        relist_id        TEXT NOT NULL,
        idx              INTEGER NOT NULL,      -- order within the message's verdict
        kind             TEXT NOT NULL,         -- dkim | dk | arc (AMS) | arc-seal
        domain           TEXT NOT NULL,
        selector         TEXT NOT NULL,
        algorithm        TEXT NOT NULL,
        canonicalization TEXT NOT NULL,
        headers          TEXT NOT NULL,         -- h= joined with ':'
        body_length      INTEGER,               -- l=
        key_bits         INTEGER,
        result           TEXT NOT NULL,         -- RFC 8601 result word
        reason           TEXT NOT NULL,
        body_hash_ok     INTEGER,               -- 1, 0 or NULL (not computed)
        header_hash_ok   INTEGER,
        instance         INTEGER,               -- ARC i=
        PRIMARY KEY (relist_id, idx)
    );
    CREATE INDEX signatures_domain ON signatures(domain, result);
    CREATE TABLE verdicts (
        relist_id       TEXT PRIMARY KEY,
        from_domain     TEXT NOT NULL,
        dmarc_result    TEXT NOT NULL,
        dmarc_policy    TEXT NOT NULL,          -- none | quarantine | reject | ''
        dmarc_testing   INTEGER NOT NULL,       -- t=y
        dmarc_domain    TEXT NOT NULL,          -- where the record was found
        dmarc_record    TEXT NOT NULL,
        dmarc_alignment TEXT NOT NULL,          -- JSON list of alignment details
        dmarc_reason    TEXT NOT NULL,
        arc_cv          TEXT NOT NULL,
        arc_oldest_pass INTEGER,
        arc_reason      TEXT NOT NULL
    );
    CREATE INDEX verdicts_dmarc ON verdicts(from_domain, dmarc_result)
    """,
    # 2 -> 3: the ingress leg's copies of posts, for the egress path to recognise and
    # repair them (relist.core.ingress); deleted after [ingress] retention_days.
    """
    CREATE TABLE ingress_posts (
        relist_id     TEXT PRIMARY KEY,
        time          TEXT NOT NULL,
        expires       REAL NOT NULL,            -- Unix time
        message_id    TEXT NOT NULL,
        fingerprint   TEXT NOT NULL,
        raw           BLOB NOT NULL             -- zlib-compressed post as received
    );
    CREATE INDEX ingress_posts_message_id ON ingress_posts(message_id);
    CREATE INDEX ingress_posts_expires ON ingress_posts(expires);
    """,
    # 3 -> 4: bounces for a list's bounce address (issue 13), one row per failed
    # recipient, tied to the egress transaction of the bounced post when known.
    """
    CREATE TABLE bounces (
        id            INTEGER PRIMARY KEY,
        time          TEXT NOT NULL,            -- ISO 8601, UTC
        list_address  TEXT NOT NULL,
        recipient     TEXT NOT NULL,            -- the member whose delivery failed
        cause         TEXT NOT NULL,            -- dmarc | dkim | spf | auth | mailbox | spam | other
        permanent     INTEGER NOT NULL,
        status        TEXT NOT NULL,            -- enhanced status code, '' when none
        diagnostic    TEXT NOT NULL,
        rule          TEXT NOT NULL,            -- relist.core.bounce.rules row that decided
        message_id    TEXT NOT NULL,            -- of the returned post
        relist_id     TEXT,                     -- egress transaction of the post, NULL: unknown
        poster_domain TEXT NOT NULL,
        action        TEXT NOT NULL,            -- mailman | owner
        remote_mta    TEXT NOT NULL,
        bounce_id     TEXT NOT NULL             -- the ingress transaction of the bounce
    );
    CREATE INDEX bounces_list_time ON bounces(list_address, time);
    CREATE INDEX bounces_relist_id ON bounces(relist_id);
    """,
    # 4 -> 5: `relist report` and retention read transactions by time across lists
    # (transactions_list_time only serves one list at a time).
    """
    CREATE INDEX transactions_time ON transactions(time);
    """,
)

# Column order of each table's rows (relist.edge.store.rows builds them in this order),
# and the key an upsert ("INSERT OR REPLACE") replaces on.  bounces: every column but
# the id, which the database assigns; bounce rows are only ever inserted.
COLUMNS: dict[str, tuple[str, ...]] = {
    "transactions": ("relist_id", "time", "client_ip", "client_helo", "mail_from", "rcpt_tos", "message_id",
                     "list_address", "size_in", "size_out", "steps", "facts", "relist_reply", "upstream",
                     "reply", "duration_ms"),
    "signatures": ("relist_id", "idx", "kind", "domain", "selector", "algorithm", "canonicalization",
                   "headers", "body_length", "key_bits", "result", "reason", "body_hash_ok", "header_hash_ok",
                   "instance"),
    "verdicts": ("relist_id", "from_domain", "dmarc_result", "dmarc_policy", "dmarc_testing", "dmarc_domain",
                 "dmarc_record", "dmarc_alignment", "dmarc_reason", "arc_cv", "arc_oldest_pass",
                 "arc_reason"),
    "ingress_posts": ("relist_id", "time", "expires", "message_id", "fingerprint", "raw"),
    "bounces": ("time", "list_address", "recipient", "cause", "permanent", "status", "diagnostic", "rule",
                "message_id", "relist_id", "poster_domain", "action", "remote_mta", "bounce_id"),
}
KEYS: dict[str, tuple[str, ...]] = {
    "transactions": ("relist_id",),
    "signatures": ("relist_id", "idx"),
    "verdicts": ("relist_id",),
    "ingress_posts": ("relist_id",),
}

# PostgreSQL advisory lock keys (64-bit, "relist" in the high bytes): the migrations,
# and the retention expiry that one instance at a time runs.
LOCK_MIGRATE = 0x72656C6973740001
LOCK_EXPIRE = 0x72656C6973740002

# SQLite type -> PostgreSQL type, in this order (the module doc says why).
_PG_TYPES = (
    (re.compile(r"\bINTEGER PRIMARY KEY\b"), "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b"), "BYTEA"),
)
_COMMENT = re.compile(r"--[^\n]*")


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer relist: this one refuses to touch it."""

    def __init__(self, version: int):
        super().__init__(f"database schema version {version} is newer than this relist "
                         f"({len(MIGRATIONS)}); refusing to touch it")


def statements(version: int, dialect: str) -> list[str]:
    """The statements of ``MIGRATIONS[version]`` for ``dialect`` ("sqlite" or "postgresql")."""
    out = []
    for statement in MIGRATIONS[version].split(";"):
        if not statement.strip():
            continue
        if dialect == "postgresql":
            statement = _COMMENT.sub("", statement)
            for pattern, replacement in _PG_TYPES:
                statement = pattern.sub(replacement, statement)
        out.append(statement)
    return out
