"""A SQLite judgment cache that makes reruns free.

WAL journal and a busy timeout: several processes can write at once. Writes made inside an event
loop are gathered and committed in one transaction at the next loop turn (a 2,000-call run with
one transaction per reply spends more CPU in SQLite commits than in HTTP); outside a loop every
write commits at once. A process killed with SIGKILL loses at most the replies of the loop turn it
was in, never the file. Only replies that arrived are cached (a transport failure is retried on
the next run); an unparseable reply is cached too, because at temperature 0 the judge would say
the same again.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import sqlite3
import threading
import time
import weakref
from pathlib import Path
from typing import Any

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


def _flush_at_exit(ref: weakref.ref[JudgmentCache]) -> None:
    cache = ref()
    if cache is not None:
        cache.flush()


class JudgmentCache:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, timeout=60, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA busy_timeout=60000")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(SCHEMA)
        self._pending: dict[str, tuple[Any, ...]] = {}  # written at the next loop turn
        self._flush_loop: asyncio.AbstractEventLoop | None = None
        atexit.register(_flush_at_exit, weakref.ref(self))

    def get(self, key: str) -> JudgeReply | None:
        with self._lock:
            row = self._pending.get(key)
            if row is not None:
                row = row[3:6]
            else:
                row = self._db.execute(
                    "SELECT text, usage, cost FROM replies WHERE key = ?", (key,)
                ).fetchone()
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
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Commit pending writes in one transaction (the engine calls it on close, too)."""
        with self._lock:
            self._flush_loop = None
            if not self._pending:
                return
            rows, self._pending = list(self._pending.values()), {}
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(INSERT, rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                self._pending.update((r[0], r) for r in rows)
                raise
            self._db.execute("COMMIT")

    def __len__(self) -> int:
        self.flush()
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._db.close()
