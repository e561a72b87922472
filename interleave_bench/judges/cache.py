"""A SQLite judgment cache that makes reruns free.

WAL journal and a busy timeout: several processes can write at once. Writes made inside an event
loop are gathered and committed in one transaction at the next loop turn (a 2,000-call run with
one transaction per reply spends more CPU in SQLite commits than in HTTP); outside a loop every
write commits at once. A process killed with SIGKILL loses at most the replies of the loop turn it
was in, never the file. Only replies that arrived are cached (a transport failure is retried on
the next run); an unparseable reply is cached too, because at temperature 0 the judge would say
the same again. A file that is not a readable SQLite database is a ``JudgmentCacheError`` naming
the file and the way out, never a traceback.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import sqlite3
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from ..benchmarks.problems import DataError
from .request import JudgeReply

SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY,
    judge TEXT NOT NULL,
    protocol TEXT NOT NULL,
    text TEXT NOT NULL,
    usage TEXT NOT NULL,
    cost REAL NOT NULL,
    created REAL NOT NULL
)
"""
INSERT = (
    "INSERT OR IGNORE INTO replies (key, judge, protocol, text, usage, cost, created) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


class JudgmentCacheError(DataError):
    """The cache file cannot be used (corrupt, not SQLite, unopenable). A DataError, so every
    command that reads data reports it as one line and exits 1."""


def _cache_error(path: Path, e: sqlite3.Error) -> JudgmentCacheError:
    """The one-line error for ``e`` on ``path``: how to recover depends on what went wrong."""
    if isinstance(e, sqlite3.OperationalError):  # locked, unopenable, read-only: not the content
        return JudgmentCacheError(f"{path}: cannot use the judgment cache ({e})")
    return JudgmentCacheError(
        f"{path}: corrupt judgment cache ({e}); delete this file to re-judge (a rerun sends "
        "those judge requests again; the folder's other files are kept)"
    )


def _flush_at_exit(ref: weakref.ref[JudgmentCache]) -> None:
    cache = ref()
    if cache is not None:
        # already reported to the command that used it: no traceback at exit
        with contextlib.suppress(JudgmentCacheError):
            cache.flush()


class JudgmentCache:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = self._connect()
        self._pending: dict[str, tuple[Any, ...]] = {}  # written at the next loop turn
        self._flush_loop: asyncio.AbstractEventLoop | None = None
        self._failed: JudgmentCacheError | None = None  # a flush in a loop callback failed
        atexit.register(_flush_at_exit, weakref.ref(self))

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(
                self.path, timeout=60, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as e:
            raise _cache_error(self.path, e) from None
        try:
            db.execute("PRAGMA busy_timeout=60000")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(SCHEMA)
        except sqlite3.Error as e:
            db.close()
            raise _cache_error(self.path, e) from None
        return db

    def _live(self) -> sqlite3.Connection:
        """The connection, opened again if ``close`` ended it (an engine closed and reused)."""
        if self._db is None:
            self._db = self._connect()
        return self._db

    def get(self, key: str) -> JudgeReply | None:
        if self._failed is not None:
            raise self._failed
        with self._lock:
            row = self._pending.get(key)
            if row is not None:
                row = row[3:6]
            else:
                try:
                    row = (
                        self._live()
                        .execute("SELECT text, usage, cost FROM replies WHERE key = ?", (key,))
                        .fetchone()
                    )
                except sqlite3.DatabaseError as e:  # a page went bad after the file opened
                    raise _cache_error(self.path, e) from None
        if row is None:
            return None
        return JudgeReply(
            "ok", text=row[0], usage=json.loads(row[1]), cost=float(row[2]), cached=True
        )

    def put(self, key: str, reply: JudgeReply, *, judge: str, protocol: str) -> None:
        if reply.status != "ok" or reply.text is None:
            return
        row = (key, judge, protocol, reply.text, json.dumps(reply.usage), reply.cost, time.time())
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            self._pending.setdefault(key, row)  # first write wins, as INSERT OR IGNORE does
            if loop is not None and self._flush_loop is loop:
                return  # a flush is already scheduled on this loop
            self._flush_loop = loop
        if loop is None:
            self.flush()
        else:
            loop.call_soon(self._flush_in_loop)

    def _flush_in_loop(self) -> None:
        """``flush`` as a loop callback: a failure there would only be logged by the loop, so it
        is kept and raised by the next ``get``/``flush`` (the engine flushes when it closes)."""
        try:
            self.flush()
        except JudgmentCacheError as e:
            self._failed = e

    def flush(self) -> None:
        """Commit pending writes in one transaction (the engine calls it on close, too)."""
        if self._failed is not None:
            raise self._failed
        with self._lock:
            self._flush_loop = None
            if not self._pending:
                return
            rows, self._pending = list(self._pending.values()), {}
            try:
                db = self._live()
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as e:
                self._pending.update((r[0], r) for r in rows)
                raise _cache_error(self.path, e) from None
            try:
                db.executemany(INSERT, rows)
                db.execute("COMMIT")
            except BaseException as e:
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):  # the error below says why
                        db.execute("ROLLBACK")
                self._pending.update((r[0], r) for r in rows)
                if isinstance(e, sqlite3.DatabaseError):
                    raise _cache_error(self.path, e) from None
                raise

    def __len__(self) -> int:
        self.flush()
        with self._lock:
            try:
                return int(self._live().execute("SELECT COUNT(*) FROM replies").fetchone()[0])
            except sqlite3.DatabaseError as e:
                raise _cache_error(self.path, e) from None

    def close(self) -> None:
        """Flush and close the connection (a later use opens it again). A run closes it when it
        ends, so nothing of it outlives the run in a process that goes on (tests, notebooks)."""
        try:
            self.flush()
        finally:
            with self._lock:
                if self._db is not None:
                    self._db.close()
                    self._db = None
