"""A SQLite judgment cache that makes reruns free.

WAL journal, one short transaction per write, a busy timeout: several processes can write at once,
and a process killed with SIGKILL loses at most the reply it was writing, never the file. Only
replies that arrived are cached (a transport failure is retried on the next run); an unparseable
reply is cached too, because at temperature 0 the judge would say the same again.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

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

    def get(self, key: str) -> JudgeReply | None:
        with self._lock:
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
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO replies (key, judge, protocol, text, usage, cost, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    judge,
                    protocol,
                    reply.text,
                    json.dumps(reply.usage),
                    reply.cost,
                    time.time(),
                ),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
