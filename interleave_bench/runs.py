"""Run folders: append-only record files that survive ``kill -9``, the manifest that keeps two
different commands from ever writing into the same folder, and the lock that keeps two processes
from writing into it at once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shlex
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from .benchmarks.problems import DataError
from .benchmarks.readers import MAX_JSON_DEPTH, load_json
from .version import __version__

try:
    import fcntl
except ImportError:  # Windows (not a target): runs there are not locked
    fcntl = None  # type: ignore[assignment]

P = ParamSpec("P")
R = TypeVar("R")


class RunFolderError(ValueError):
    """The output folder belongs to a different command or configuration, is in use by another
    process, or holds a record file damaged in the middle."""


class TornRecordWarning(UserWarning):
    """The last line of a record file was cut short (its writer was killed) and is dropped."""


def _decode(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(record, None), or (None, why the line is not a record)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, f"not UTF-8 at byte {e.start + 1}"
    try:
        rec = load_json(text, "line")
    except DataError:
        return None, f"JSON nested more than {MAX_JSON_DEPTH} levels deep"
    except ValueError as e:
        return None, f"not JSON ({getattr(e, 'msg', e)} at column {getattr(e, 'colno', '?')})"
    if not isinstance(rec, dict):
        return None, "not a JSON object"
    return rec, None


def parse_jsonl(path: Path, data: bytes) -> tuple[list[dict[str, Any]], tuple[int, int] | None]:
    """Records of a JSON Lines file's bytes, and (byte offset, line number) of a torn last line.

    Only the last non-blank line can be torn by a kill mid-write: no newline after it, bytes cut
    inside a UTF-8 character, or JSON cut short. A bad line anywhere else means the file was
    damaged some other way, and silently skipping it would hide lost records, so it is an error.
    """
    lines: list[tuple[int, int, bytes, bool]] = []  # (line number, offset, bytes, has newline)
    pos = 0
    for number, raw in enumerate(data.split(b"\n"), 1):
        start, pos = pos, pos + len(raw) + 1
        if raw.strip():
            lines.append((number, start, raw, pos <= len(data)))
    records: list[dict[str, Any]] = []
    for i, (number, start, raw, complete) in enumerate(lines):
        rec, why = _decode(raw)
        if i == len(lines) - 1 and (why or not complete):
            return records, (start, number)
        if rec is None:
            raise RunFolderError(
                f"{path}, line {number}: {why}; the file is damaged before its last line, so "
                "it was not cut by a kill. Fix or delete that line to resume (a deleted record "
                "is redone), or use a new --out folder"
            )
        records.append(rec)
    return records, None


def _warn_torn(path: Path, line: int, action: str) -> None:
    warnings.warn(
        f"{path}, line {line}: cut short by a process killed mid-write; {action}",
        TornRecordWarning,
        stacklevel=3,
    )


class JsonlLog:
    """Append-only JSON Lines file. Every record is flushed as written; on open, a torn last line
    (the process died mid-write) is cut off so the file stays valid."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()
        self._f = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for appends

    def _repair(self) -> None:
        if not self.path.exists():
            return
        _, torn = parse_jsonl(self.path, self.path.read_bytes())
        if torn is not None:
            _warn_torn(self.path, torn[1], "removed it (that record is redone)")
            with open(self.path, "r+b") as f:
                f.truncate(torn[0])

    def append(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a JSON Lines file; a torn last line is skipped with a warning, a bad line
    elsewhere is a ``RunFolderError`` naming the file and line."""
    if not path.exists():
        return
    records, torn = parse_jsonl(path, path.read_bytes())
    if torn is not None:
        _warn_torn(path, torn[1], "ignored it")
    yield from records


def _holder(path: Path) -> str:
    """Who holds a lock, from what its holder wrote into the lock file."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return f"pid {info['pid']} on {info['host']} ({info['command']}, started {info['started']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextmanager
def folder_lock(out: Path, command: str, rank: int = 0, world: int = 1) -> Iterator[None]:
    """Hold ``out`` for this process until the block ends; refuse at once if another holds it.

    An OS lock (``flock``) on ``out/.lock``, so the kernel drops it when its holder dies: a lock
    left by a killed process never blocks a rerun. The ranks of one distributed run share
    ``.lock`` and each holds its own ``.lock.rank<N>`` (they write separate files).
    """
    out.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    wanted = [(out / ".lock", world == 1)]
    if world > 1:
        wanted.append((out / f".lock.rank{rank}", True))
    held: list[tuple[int, bool]] = []
    try:
        for path, exclusive in wanted:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise RunFolderError(
                    f"{out} is in use by {_holder(path)}; wait for it to finish or use another "
                    "--out folder"
                ) from None
            held.append((fd, exclusive))
        argv = sys.argv[1:]  # the CLI's own words when run as `ibench <command> ...`
        said = shlex.join(argv) if argv[:1] == [command] else command
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": f"ibench {said}"[:160],
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        for fd, exclusive in held:
            if exclusive or rank == 0:
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(info).encode("utf-8"), 0)
        yield
    finally:
        for fd, exclusive in reversed(held):
            if exclusive:
                os.ftruncate(fd, 0)  # names no holder once free
            os.close(fd)  # releases the flock


def locks_run_folder(
    command: str,
) -> Callable[[Callable[Concatenate[Any, P], R]], Callable[Concatenate[Any, P], R]]:
    """Run a function whose first argument has ``.out`` while holding that folder's lock."""

    def wrap(fn: Callable[Concatenate[Any, P], R]) -> Callable[Concatenate[Any, P], R]:
        @functools.wraps(fn)
        def locked(opts: Any, *args: P.args, **kwargs: P.kwargs) -> R:
            with folder_lock(opts.out, command):
                return fn(opts, *args, **kwargs)

        return locked

    return wrap


def git_hash() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def identity_hash(identity: dict[str, Any]) -> str:
    blob = json.dumps(identity, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def claim_folder(
    out: Path, command: str, identity: dict[str, Any], extra: dict[str, Any]
) -> dict[str, Any]:
    """Create or reopen ``out`` for ``command`` with this identity; refuse a mismatch."""
    old = check_folder(out, command, identity)
    if old is not None:
        return old
    out.mkdir(parents=True, exist_ok=True)
    path = out / "manifest.json"
    digest = identity_hash(identity)
    manifest = {
        "command": command,
        "identity": identity,
        "identity_sha256": digest,
        "interleave_bench": __version__,
        "python": sys.version.split()[0],
        "git": git_hash(),
        "argv": sys.argv[1:],
        **extra,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return manifest


def check_folder(out: Path, command: str, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest of ``out`` if it holds this command with this identity, None if it holds no
    run yet; a mismatch is refused. Writes nothing, so a command can check before its inputs
    load and claim the folder only once the run really starts (a failed start leaves no
    manifest that would refuse the corrected command)."""
    path = out / "manifest.json"
    digest = identity_hash(identity)
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            raise RunFolderError(f"{path}: unreadable manifest; use a new --out folder") from None
        if old.get("command") != command:
            raise RunFolderError(
                f"{out} holds a `{old.get('command')}` run; `{command}` will not mix its files "
                "into it. Use a new --out folder."
            )
        if old.get("identity_sha256") != digest:
            changed = sorted(
                k
                for k in set(identity) | set(old.get("identity", {}))
                if identity.get(k) != old.get("identity", {}).get(k)
            )
            raise RunFolderError(
                f"{out} was started with different settings ({', '.join(changed)}); resuming "
                "would mix two runs. Use a new --out folder or the original settings."
            )
        return old
    return None


class RunFolder:
    """One run's folder, the only writer of its files for ``eval`` and ``score`` alike: the lock,
    the manifest (identity check on reuse), append-only record logs, strict or lenient reads and
    ``results.json`` in the one results schema (``types.RunResults``)."""

    def __init__(self, out: Path, command: str) -> None:
        self.out = Path(out)
        self.command = command

    def lock(self, rank: int = 0, world: int = 1) -> Any:
        """Hold the folder for this process (see ``folder_lock``)."""
        return folder_lock(self.out, self.command, rank, world)

    def claim(self, identity: dict[str, Any], extra: dict[str, Any] | None = None) -> dict:
        """Create or reopen the folder for this command and identity; refuse a mismatch."""
        return claim_folder(self.out, self.command, identity, extra or {})

    def check(self, identity: dict[str, Any]) -> dict[str, Any] | None:
        """Refuse a folder holding another run, writing nothing (see ``check_folder``)."""
        return check_folder(self.out, self.command, identity)

    def log(self, name: str) -> JsonlLog:
        """An append-only log ``name`` (torn last line cut off on open); close it after."""
        return JsonlLog(self.out / name)

    def read(self, name: str, *, strict: bool = False) -> list[dict[str, Any]]:
        """Records of ``name`` (none if absent). Lenient: a torn last line is skipped with a
        warning. Strict: it is a ``RunFolderError`` (for readers that must see every record)."""
        path = self.out / name
        if not strict:
            return list(read_jsonl(path))
        if not path.exists():
            return []
        records, torn = parse_jsonl(path, path.read_bytes())
        if torn is not None:
            raise RunFolderError(
                f"{path}, line {torn[1]}: cut short by a process killed mid-write; rerun the "
                "command that wrote it to complete the folder"
            )
        return records

    def write_json(self, name: str, value: Any) -> None:
        """``name`` replaced whole at once: a reader sees the old file or the new one."""
        tmp = self.out / f".{name}.tmp"
        tmp.write_text(json.dumps(value, indent=2, default=str, ensure_ascii=False) + "\n")
        os.replace(tmp, self.out / name)

    def write_jsonl(self, name: str, records: list[dict[str, Any]]) -> None:
        """``name`` rewritten whole at once (merging rank files into the canonical one)."""
        tmp = self.out / f".{name}.tmp"
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        os.replace(tmp, self.out / name)

    def write_results(self, results: Any) -> None:
        """``results.json`` from a ``types.RunResults``."""
        self.write_json("results.json", results.to_dict())

    def read_results(self) -> Any:
        """``results.json`` as ``types.RunResults`` (any shape this project ever wrote)."""
        from .types import RunResults

        path = self.out / "results.json"
        return RunResults.from_dict(load_json(path.read_text(encoding="utf-8"), path.name))

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self.write_json("manifest.json", manifest)


def dist_info() -> tuple[int, int]:
    """(rank, world size) from torchrun / accelerate environment variables."""
    try:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 0, 1
