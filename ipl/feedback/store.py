"""Adoption feedback (paper Sec. 5.5): every draft and what the seller finally did with it.

A real database through SQLAlchemy: a SQLite file in the run directory by default
(``<run>/feedback.db``), any SQLAlchemy URL by config (PostgreSQL in production). The schema
is created and migrated by this module: ``ipl_schema`` holds the version, :data:`MIGRATIONS`
the steps from one version to the next, applied in order in one transaction each (an older
database is brought up to date on open; a newer one than this code knows is refused).

* ``drafts``: one row per draft answered (``draft_id``, time, endpoint, language, category,
  the generated description, the attributes with their status, the index version).
* ``feedback``: what the seller published (or that they abandoned the listing): the final
  text, the attributes they confirmed, one row per submission (the latest one counts).

Writes are committed before the caller answers: an accepted record survives a restart.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Optional

SCHEMA_VERSION = 2


class UnknownDraft(KeyError):
    pass


def feedback_url(cfg) -> str:
    """The database of a ServeConfig: ``feedback.url``, else ``sqlite:///<run>/feedback.db``."""
    return cfg.feedback.url or f"sqlite:///{(Path(cfg.run.dir) / 'feedback.db').resolve()}"


def _v1(conn) -> None:
    from sqlalchemy import text

    # the two dialects' spellings of an auto-increment key and a double (SQLite here, PostgreSQL in production)
    pg = conn.dialect.name == "postgresql"
    key = "SERIAL PRIMARY KEY" if pg else "INTEGER PRIMARY KEY AUTOINCREMENT"
    real = "DOUBLE PRECISION" if pg else "FLOAT"
    conn.execute(text(f"""CREATE TABLE IF NOT EXISTS drafts (
        draft_id VARCHAR(64) PRIMARY KEY, created_at {real} NOT NULL, endpoint VARCHAR(16) NOT NULL,
        language VARCHAR(8), category VARCHAR(64), description TEXT, attributes TEXT, index_version VARCHAR(64))"""))
    conn.execute(text(f"""CREATE TABLE IF NOT EXISTS feedback (
        id {key}, draft_id VARCHAR(64) NOT NULL REFERENCES drafts(draft_id),
        created_at {real} NOT NULL, outcome VARCHAR(16) NOT NULL, published_text TEXT, confirmed TEXT)"""))


def _v2(conn) -> None:
    """Indexes for the report's scans (added after v1 shipped: the migration path is exercised)."""
    from sqlalchemy import text

    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_feedback_draft ON feedback (draft_id)"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_drafts_created ON drafts (created_at)"))


MIGRATIONS = {1: _v1, 2: _v2}  # version -> the step that makes it from version - 1


def _engine(sql_url: str):
    """The engine for the URL (the migrations spell their DDL for its dialect)."""
    from sqlalchemy import create_engine

    return create_engine(sql_url, future=True, pool_pre_ping=True)


def migrate(engine) -> int:
    """Bring the database to :data:`SCHEMA_VERSION`; returns the version it was at."""
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS ipl_schema (version INTEGER NOT NULL)"))
        row = conn.execute(text("SELECT version FROM ipl_schema")).fetchone()
        if row is None:
            conn.execute(text("INSERT INTO ipl_schema (version) VALUES (0)"))
            found = 0
        else:
            found = int(row[0])
    if found > SCHEMA_VERSION:
        raise RuntimeError(f"feedback database schema version {found} is newer than this code's {SCHEMA_VERSION}: "
                           "upgrade IPL before writing to it")
    for version in range(found + 1, SCHEMA_VERSION + 1):
        with engine.begin() as conn:
            MIGRATIONS[version](conn)
            conn.execute(text("UPDATE ipl_schema SET version = :v"), {"v": version})
    return found


class FeedbackStore:
    """Drafts and feedback in one database (thread-safe: one engine, short transactions)."""

    def __init__(self, url: str):
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        self.url = url
        self.engine = _engine(url)
        if self.engine.dialect.name == "sqlite":
            from sqlalchemy import event

            @event.listens_for(self.engine, "connect")
            def _sqlite_pragmas(dbapi, _record):  # durable, and readable while a writer works
                cur = dbapi.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=FULL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()
        self.migrated_from = migrate(self.engine)
        self._lock = threading.Lock()

    def add_draft(self, draft_id: str, endpoint: str, language: Optional[str], category: Optional[str],
                  description: Optional[str], attributes: list, index_version: Optional[str]) -> None:
        from sqlalchemy import text

        with self._lock, self.engine.begin() as conn:
            conn.execute(text("INSERT INTO drafts (draft_id, created_at, endpoint, language, category, description, "
                              "attributes, index_version) VALUES (:d, :t, :e, :l, :c, :desc, :a, :v)"),
                         {"d": draft_id, "t": time.time(), "e": endpoint, "l": language, "c": category,
                          "desc": description, "a": json.dumps(attributes, ensure_ascii=False), "v": index_version})

    def add_feedback(self, draft_id: str, outcome: str, published_text: Optional[str],
                     confirmed: dict[str, str]) -> int:
        """The feedback row's id; :class:`UnknownDraft` (nothing written) for a draft never answered."""
        from sqlalchemy import text

        with self._lock, self.engine.begin() as conn:
            if conn.execute(text("SELECT 1 FROM drafts WHERE draft_id = :d"), {"d": draft_id}).fetchone() is None:
                raise UnknownDraft(draft_id)
            conn.execute(text("INSERT INTO feedback (draft_id, created_at, outcome, published_text, confirmed) "
                              "VALUES (:d, :t, :o, :p, :c)"),
                         {"d": draft_id, "t": time.time(), "o": outcome, "p": published_text,
                          "c": json.dumps(confirmed, ensure_ascii=False)})
            return int(conn.execute(text("SELECT MAX(id) FROM feedback WHERE draft_id = :d"),
                                    {"d": draft_id}).scalar())

    def rows(self) -> list[dict[str, Any]]:
        """Every draft with its latest feedback (None when the seller sent none)."""
        from sqlalchemy import text

        with self.engine.connect() as conn:
            drafts = conn.execute(text("SELECT draft_id, created_at, endpoint, language, category, description, "
                                       "attributes, index_version FROM drafts ORDER BY created_at")).mappings().all()
            latest = conn.execute(text("SELECT f.draft_id, f.outcome, f.published_text, f.confirmed, f.created_at "
                                       "FROM feedback f JOIN (SELECT draft_id, MAX(id) AS id FROM feedback GROUP BY "
                                       "draft_id) m ON f.id = m.id")).mappings().all()
        by_draft = {r["draft_id"]: dict(r) for r in latest}
        out = []
        for d in drafts:
            row = dict(d)
            row["attributes"] = json.loads(row["attributes"] or "[]")
            fb = by_draft.get(row["draft_id"])
            if fb is not None:
                fb["confirmed"] = json.loads(fb["confirmed"] or "{}")
            row["feedback"] = fb
            out.append(row)
        return out

    def close(self) -> None:
        self.engine.dispose()
