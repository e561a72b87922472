"""Taking in an untrusted submission: a run folder or a .tar.gz/.tgz/.tar/.zip of one.

Archives go through ``benchmarks.archives.extract`` (no entry escapes the folder, no links, bytes
counted as written); folders are walked without following links. Only data files are accepted:
anything that could be code or a pickle is refused by name and by content, and nothing in a
submission is ever imported, unpickled or run. Every problem is collected, not just the first.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..benchmarks.archives import extract
from ..benchmarks.problems import DataError

_DATA_SUFFIXES = {
    ".json",
    ".jsonl",
    ".png",
    ".jpg",
    ".jpeg",
    ".webp",
    ".gif",
    ".bmp",
    ".html",
    ".txt",
    ".md",
    ".tmp",
}
_OTHER_NAMES = re.compile(
    r"^(done(\.rank\d+)?|\.lock(\.rank\d+)?|.*\.sqlite(-wal|-shm|-journal)?)$"
)
_PICKLE_SUFFIXES = {".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".joblib", ".npy", ".npz", ".bin"}
_MARKER = re.compile(r"^\.ibench-extracted-.*\.json$")


@dataclass(frozen=True)
class Limits:
    """Caps on what a submission may hold; an archive bomb stops at ``max_total`` bytes."""

    max_archive: int = 512 * 1024**2
    max_total: int = 2 * 1024**3
    max_entry: int = 512 * 1024**2
    max_files: int = 200_000
    max_json: int = 16 * 1024**2
    max_jsonl: int = 1024**3


DEFAULT_LIMITS = Limits()


def is_archive(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and name.endswith((".zip", ".tar", ".tar.gz", ".tgz"))


def _looks_like_pickle(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def check_tree(root: Path, limits: Limits) -> list[str]:
    """Every refused file under ``root``: links, special files, code or pickles, unknown types,
    and totals over the limits. Paths in messages are relative to ``root``."""
    problems: list[str] = []
    total = files = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for d in list(dirnames):
            if (here / d).is_symlink():
                problems.append(f"{(here / d).relative_to(root)}: symbolic links are refused")
                dirnames.remove(d)
        for name in filenames:
            p = here / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                problems.append(f"{rel}: symbolic links are refused")
                continue
            if not p.is_file():
                problems.append(f"{rel}: not a regular file")
                continue
            if here == root and _MARKER.match(name):
                continue  # written by our own extractor
            files += 1
            total += p.stat().st_size
            suffix = p.suffix.lower()
            if suffix in _PICKLE_SUFFIXES or _looks_like_pickle(p):
                problems.append(
                    f"{rel}: pickle or binary model files are refused (a submission holds data "
                    "only: JSON, JSONL and images)"
                )
            elif suffix not in _DATA_SUFFIXES and not _OTHER_NAMES.match(name):
                problems.append(
                    f"{rel}: file type not accepted (code and unknown files are refused; allowed: "
                    f"{', '.join(sorted(_DATA_SUFFIXES))}, *.sqlite, done markers, run-folder locks)"
                )
    if files > limits.max_files:
        problems.append(f"submission holds {files} files; the limit is {limits.max_files}")
    if total > limits.max_total:
        problems.append(f"submission holds {total} bytes; the limit is {limits.max_total}")
    return problems


def find_run_root(root: Path) -> Path | None:
    """The folder holding ``manifest.json``: the top, or its single top-level folder."""
    if (root / "manifest.json").is_file():
        return root
    subdirs = [p for p in root.iterdir() if p.is_dir() and not p.is_symlink()]
    others = [p for p in root.iterdir() if p.is_file() and not _MARKER.match(p.name)]
    if len(subdirs) == 1 and not others and (subdirs[0] / "manifest.json").is_file():
        return subdirs[0]
    return None


@contextmanager
def open_submission(
    path: Path, limits: Limits = DEFAULT_LIMITS
) -> Iterator[tuple[Path | None, list[str]]]:
    """Yield (run folder or None, problems). An archive is extracted into a temporary folder that
    is removed afterwards; a folder is used in place (and only read)."""
    path = Path(path)
    if not path.exists():
        yield None, [f"{path}: no such file or folder"]
        return
    if path.is_dir():
        problems = check_tree(path, limits)
        root = find_run_root(path)
        if root is None:
            problems.append(f"{path}: no manifest.json (not a run folder made by ibench)")
        yield root, problems
        return
    if not is_archive(path):
        yield None, [f"{path}: expected a run folder or a .tar.gz/.tgz/.tar/.zip archive of one"]
        return
    size = path.stat().st_size
    if size > limits.max_archive:
        yield None, [f"{path.name}: archive is {size} bytes; the limit is {limits.max_archive}"]
        return
    with tempfile.TemporaryDirectory(prefix="ibench-submission-") as tmp:
        dest = Path(tmp) / "x"
        problems: list[str] = []
        try:
            report = extract(
                path,
                dest,
                max_total=limits.max_total,
                max_entry=limits.max_entry,
                max_entries=limits.max_files,
            )
        except DataError as e:
            yield None, [f"archive rejected: {e}"]
            return
        for p in report.problems:
            problems.append(f"archive entry {p.field!r} {p.message}")
        problems += check_tree(dest, limits)
        root = find_run_root(dest)
        if root is None:
            problems.append(
                f"{path.name}: no manifest.json at the top of the archive or in its single "
                "top-level folder"
            )
        yield root, problems
