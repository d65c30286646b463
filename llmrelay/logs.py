"""The local log of every chat exchange: one SQLite file (standard library ``sqlite3``).

Where: ``$LLMRELAY_LOGS`` if set, else ``$XDG_DATA_HOME/llmrelay/logs.db``, else
``~/.local/share/llmrelay/logs.db``. ``llmrelay logs off`` creates ``logs.db.off``
next to it (logging stays off while it exists); ``logs on`` removes it.

One row per exchange (table ``responses``): the prompt, system message, answer,
reasoning, tool calls, provider (its display name and its catalog name), the base
URL it was reached at (never a key), model, usage, duration, time to first token,
the error if the exchange failed, and the conversation id that ties the turns
of a conversation together. Full-text search uses SQLite FTS5 when the SQLite
build has it (``LIKE`` otherwise).

Writing is one short transaction after the answer is complete; a log that
cannot be written (locked, read-only, no space) is reported once by the caller
and never stops a chat.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = [
    "LOGS_ENV",
    "Log",
    "LogEntry",
    "logging_enabled",
    "logs_path",
    "new_conversation_id",
    "set_logging",
]

LOGS_ENV = "LLMRELAY_LOGS"
SCHEMA_VERSION = 2
BUSY_TIMEOUT = 0.5  # seconds a write waits for a lock held by another process before giving up

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id INTEGER PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    datetime_utc TEXT NOT NULL,
    provider TEXT,
    model TEXT,
    prompt TEXT NOT NULL,
    system TEXT,
    response TEXT NOT NULL DEFAULT '',
    reasoning TEXT,
    tool_calls TEXT,
    attachments TEXT,
    options TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    total_tokens INTEGER,
    duration_ms INTEGER,
    first_token_ms INTEGER,
    finish_reason TEXT,
    error TEXT,
    provider_id TEXT,
    api_base TEXT
);
CREATE INDEX IF NOT EXISTS responses_conversation ON responses (conversation_id, id);
"""
_FTS_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS responses_fts USING fts5(
    prompt, response, content='responses', content_rowid='id'
);
CREATE TRIGGER IF NOT EXISTS responses_fts_insert AFTER INSERT ON responses BEGIN
    INSERT INTO responses_fts (rowid, prompt, response) VALUES (new.id, new.prompt, new.response);
END;
CREATE TRIGGER IF NOT EXISTS responses_fts_delete AFTER DELETE ON responses BEGIN
    INSERT INTO responses_fts (responses_fts, rowid, prompt, response)
    VALUES ('delete', old.id, old.prompt, old.response);
END;
"""
_COLUMNS = (
    "conversation_id",
    "datetime_utc",
    "provider",
    "model",
    "prompt",
    "system",
    "response",
    "reasoning",
    "tool_calls",
    "attachments",
    "options",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "duration_ms",
    "first_token_ms",
    "finish_reason",
    "error",
    "provider_id",
    "api_base",
)
_ADDED_COLUMNS = {2: ("provider_id TEXT", "api_base TEXT")}  # schema version → columns it added
_JSON_COLUMNS = ("tool_calls", "attachments", "options")

LogEntry = dict[str, Any]
"""One exchange: the keys of ``_COLUMNS`` (JSON columns as Python values) plus ``id`` when read back."""


def logs_path() -> Path:
    """The log database's path (it may not exist yet)."""
    override = os.environ.get(LOGS_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME", "").strip()
    base = Path(data_home) if data_home and os.path.isabs(data_home) else Path.home() / ".local" / "share"
    return base / "llmrelay" / "logs.db"


def _off_marker(path: Path) -> Path:
    return path.with_name(path.name + ".off")


def logging_enabled(path: Path | None = None) -> bool:
    """False after ``llmrelay logs off`` (the marker file next to the database exists)."""
    return not _off_marker(path or logs_path()).exists()


def set_logging(enabled: bool, path: Path | None = None) -> None:
    """Turn logging on (remove the marker) or off (create it); raises OSError if that fails."""
    marker = _off_marker(path or logs_path())
    if enabled:
        marker.unlink(missing_ok=True)
    else:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()


def new_conversation_id() -> str:
    """A fresh conversation id: 32 hex digits."""
    return uuid.uuid4().hex


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _fts_query(text: str) -> str:
    """Each word as a quoted FTS5 string (all must match): user text never breaks the query syntax."""
    return " ".join('"' + word.replace('"', '""') + '"' for word in text.split())


class Log:
    """The log database at ``path`` (default :func:`logs_path`), opened per operation."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or logs_path()

    @contextmanager
    def _connect(self, write: bool) -> Iterator[sqlite3.Connection]:
        if write:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT)
        else:
            if not self.path.exists():
                raise FileNotFoundError(f"no log yet at {self.path}")
            connection = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT)
        connection.row_factory = sqlite3.Row
        with closing(connection):
            yield connection

    def _ensure_schema(self, connection: sqlite3.Connection) -> None:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version >= SCHEMA_VERSION:
            return
        if self._has_table(connection, "responses"):  # an older log: add the columns it lacks
            present = {row[1] for row in connection.execute("PRAGMA table_info(responses)")}
            for added in range(version + 1, SCHEMA_VERSION + 1):
                for column in _ADDED_COLUMNS.get(added, ()):
                    if column.split()[0] not in present:
                        connection.execute(f"ALTER TABLE responses ADD COLUMN {column}")
        connection.executescript(_SCHEMA)
        try:
            connection.executescript(_FTS_SCHEMA)
        except sqlite3.OperationalError:
            pass  # this SQLite has no FTS5: search falls back to LIKE
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def record(self, entry: LogEntry) -> int:
        """Write one exchange in one transaction; returns its row id. Raises sqlite3.Error / OSError."""
        values = [
            json.dumps(entry.get(name), ensure_ascii=False)
            if name in _JSON_COLUMNS and entry.get(name) is not None
            else entry.get(name)
            for name in _COLUMNS
        ]
        with self._connect(write=True) as connection:
            with connection:
                self._ensure_schema(connection)
                cursor = connection.execute(
                    f"INSERT INTO responses ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                    values,
                )
            return int(cursor.lastrowid or 0)

    def _has_table(self, connection: sqlite3.Connection, name: str) -> bool:
        row = connection.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone()
        return row is not None

    def entries(
        self,
        limit: int | None = 3,
        *,
        query: str | None = None,
        conversation: str | None = None,
        provider: str | None = None,
        model: str | None = None,
    ) -> list[LogEntry]:
        """The newest ``limit`` exchanges (None: all) matching the filters, oldest first."""
        where: list[str] = []
        params: list[Any] = []
        join = ""
        with self._connect(write=False) as connection:
            if not self._has_table(connection, "responses"):
                return []
            if query:
                if self._has_table(connection, "responses_fts"):
                    join = "JOIN responses_fts ON responses_fts.rowid = responses.id"
                    where.append("responses_fts MATCH ?")
                    params.append(_fts_query(query))
                else:
                    for word in query.split():
                        where.append("(responses.prompt LIKE ? OR responses.response LIKE ?)")
                        params.extend([f"%{word}%", f"%{word}%"])
            for column, value in (("conversation_id", conversation), ("provider", provider), ("model", model)):
                if value:
                    where.append(f"lower(responses.{column}) = lower(?)")
                    params.append(value)
            sql = f"SELECT responses.* FROM responses {join}"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY responses.id DESC"
            if limit is not None:
                sql += " LIMIT ?"
                params.append(limit)
            rows = connection.execute(sql, params).fetchall()
        return [_entry(row) for row in reversed(rows)]

    def last_conversation_id(self) -> str | None:
        """The conversation of the newest exchange, or None when the log is empty or missing."""
        try:
            with self._connect(write=False) as connection:
                if not self._has_table(connection, "responses"):
                    return None
                row = connection.execute("SELECT conversation_id FROM responses ORDER BY id DESC LIMIT 1").fetchone()
        except FileNotFoundError:
            return None
        return str(row[0]) if row else None

    def conversation(self, conversation_id: str) -> list[LogEntry]:
        """Every exchange of a conversation, failed and interrupted ones too (``error`` says so), oldest first;
        :func:`history` keeps the completed ones."""
        try:
            return self.entries(None, conversation=conversation_id)
        except FileNotFoundError:
            return []

    def usage(self) -> list[dict[str, Any]]:
        """Tokens per day (UTC), provider and model: ``day, provider, model, responses`` (answered exchanges),
        ``errors`` (failed or interrupted ones), ``prompt/completion/total_tokens``."""
        sql = (
            "SELECT substr(datetime_utc, 1, 10) AS day, provider, model,"
            " sum(error IS NULL) AS responses, sum(error IS NOT NULL) AS errors,"
            " coalesce(sum(prompt_tokens), 0) AS prompt_tokens,"
            " coalesce(sum(completion_tokens), 0) AS completion_tokens,"
            " coalesce(sum(total_tokens), 0) AS total_tokens"
            " FROM responses GROUP BY day, provider, model ORDER BY day, provider, model"
        )
        with self._connect(write=False) as connection:
            if not self._has_table(connection, "responses"):
                return []
            return [dict(row) for row in connection.execute(sql).fetchall()]


def _entry(row: sqlite3.Row) -> LogEntry:
    entry = dict(row)
    for name in _JSON_COLUMNS:
        if entry.get(name) is not None:
            try:
                entry[name] = json.loads(entry[name])
            except ValueError:
                pass
    return entry


def history(entries: Sequence[LogEntry], system: str | None = None) -> list[dict[str, Any]]:
    """Chat messages rebuilding a logged conversation: the system message (given, else the last logged), then
    the prompt and answer of each completed exchange (failed and interrupted ones are left out)."""
    entries = [entry for entry in entries if entry.get("error") is None]
    if system is None:
        system = next((entry["system"] for entry in reversed(entries) if entry.get("system")), None)
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for entry in entries:
        messages.append({"role": "user", "content": entry["prompt"]})
        messages.append({"role": "assistant", "content": entry["response"] or ""})
    return messages
