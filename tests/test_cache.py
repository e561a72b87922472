"""The SQLite judgment cache: reruns free, several writer processes, and kill -9 safety."""

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from interleave_bench.benchmarks.problems import DataError
from interleave_bench.judges.cache import JudgmentCache, JudgmentCacheError
from interleave_bench.judges.request import JudgeReply, JudgeRequest, Part, cache_key

WRITER = r"""
import sys
from interleave_bench.judges.cache import JudgmentCache
from interleave_bench.judges.request import JudgeReply
cache = JudgmentCache(sys.argv[1])
tag, n = sys.argv[2], int(sys.argv[3])
for i in range(n):
    cache.put(f"{tag}-{i}", JudgeReply("ok", text=f"reply {tag} {i}" * 20, usage={"prompt_tokens": i}),
              judge="j", protocol="p")
    if sys.argv[4:] == ["announce"] and i == 50:
        print("halfway", flush=True)
"""


def test_get_put_roundtrip_and_only_ok_cached(tmp_path):
    cache = JudgmentCache(tmp_path / "c.sqlite")
    cache.put(
        "a",
        JudgeReply("ok", text="### Score\n5", usage={"prompt_tokens": 3}, cost=0.1),
        judge="j",
        protocol="p",
    )
    cache.put("b", JudgeReply("error", error="500"), judge="j", protocol="p")
    hit = cache.get("a")
    assert hit.cached and hit.text == "### Score\n5" and hit.usage == {"prompt_tokens": 3}
    assert cache.get("b") is None and len(cache) == 1
    mode = sqlite3.connect(tmp_path / "c.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_key_covers_model_protocol_template_content_and_sampling():
    r = JudgeRequest((Part.of_text("q"), Part.of_image("data:image/png;base64,AAAA")))
    base = cache_key("gpt-4o", "mmie", "t1", r)
    assert base == cache_key("gpt-4o", "mmie", "t1", r)
    others = {
        cache_key("gpt-4o-mini", "mmie", "t1", r),
        cache_key("gpt-4o", "opening", "t1", r),
        cache_key("gpt-4o", "mmie", "t2", r),
        cache_key("gpt-4o", "mmie", "t1", JudgeRequest((Part.of_text("q!"),) + r.parts[1:])),
        cache_key(
            "gpt-4o",
            "mmie",
            "t1",
            JudgeRequest((r.parts[0], Part.of_image("data:image/png;base64,AAAB"))),
        ),
        cache_key("gpt-4o", "mmie", "t1", JudgeRequest(r.parts, temperature=0.7)),
        cache_key("gpt-4o", "mmie", "t1", JudgeRequest(r.parts, seed=1)),
    }
    assert base not in others and len(others) == 7


def test_several_writer_processes(tmp_path):
    path = tmp_path / "c.sqlite"
    JudgmentCache(path).close()
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"w{k}", "150"])
        for k in range(3)
    ]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    cache = JudgmentCache(path)
    assert len(cache) == 450
    assert cache.get("w2-149").text.startswith("reply w2 149")


def test_kill_9_leaves_a_consistent_file(tmp_path):
    path = tmp_path / "c.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), "k", "100000", "announce"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "halfway"
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = db.execute("SELECT key, text FROM replies").fetchall()
    assert len(rows) > 50
    assert all(text == f"reply k {key.split('-')[1]}" * 20 for key, text in rows)
    cache = JudgmentCache(path)  # reopens and keeps writing after the crash
    cache.put("after", JudgeReply("ok", text="x"), judge="j", protocol="p")
    assert cache.get("after").text == "x"


def test_garbage_file_is_a_data_error_naming_the_file(tmp_path):
    path = tmp_path / "judgments.sqlite"
    garbage = bytes(range(256)) * 16
    path.write_bytes(garbage)
    with pytest.raises(DataError) as e:  # every command reports a DataError as one line
        JudgmentCache(path)
    assert isinstance(e.value, JudgmentCacheError)
    assert str(e.value).startswith(f"{path}: corrupt judgment cache (file is not a database)")
    assert "delete this file to re-judge" in str(e.value)
    assert path.read_bytes() == garbage


def damaged_after_open(tmp_path):
    """A cache whose pages past the first were overwritten after it was opened (a disk fault)."""
    path = tmp_path / "c.sqlite"
    cache = JudgmentCache(path)
    for i in range(200):
        cache.put(f"k{i}", JudgeReply("ok", text="x" * 500), judge="j", protocol="p")
    cache.close()
    cache = JudgmentCache(path)
    data = bytearray(path.read_bytes())
    data[4096:] = b"\xab" * (len(data) - 4096)
    path.write_bytes(bytes(data))
    return cache


def test_damage_found_while_reading_or_writing_is_the_same_error(tmp_path):
    cache = damaged_after_open(tmp_path)
    with pytest.raises(JudgmentCacheError, match="corrupt judgment cache"):
        cache.get("k5")
    with pytest.raises(JudgmentCacheError, match="corrupt judgment cache"):
        cache.put("new", JudgeReply("ok", text="y"), judge="j", protocol="p")


def test_damage_found_by_a_flush_in_the_loop_is_raised_by_the_next_call(tmp_path):
    """The flush scheduled on the event loop cannot raise to anyone: its error waits for the
    next ``get`` or ``flush`` instead of being logged and lost."""
    cache = damaged_after_open(tmp_path)

    async def write():
        cache.put("new", JudgeReply("ok", text="y"), judge="j", protocol="p")
        await asyncio.sleep(0)  # the scheduled flush runs here

    asyncio.run(write())
    with pytest.raises(JudgmentCacheError, match="corrupt judgment cache"):
        cache.get("anything")
    with pytest.raises(JudgmentCacheError):
        cache.flush()
