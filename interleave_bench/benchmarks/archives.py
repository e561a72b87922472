"""Safe extraction of the tar and zip archives benchmarks ship their images in.

Entries that would land outside the destination (absolute names, ``..``, zip-slip), links, device
files and anything past the size limits are refused and reported, never written. Bytes are counted
as they are written, so a lying header cannot smuggle in a bomb. A marker file records a finished
extraction, so a rerun skips it and an interrupted one starts over.
"""

from __future__ import annotations

import json
import os
import stat
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .paths import DataRoot
from .problems import DataError, Problem

MAX_TOTAL_BYTES = 64 * 1024**3
MAX_ENTRY_BYTES = 256 * 1024**2
MAX_ENTRIES = 2_000_000
_CHUNK = 1 << 20


@dataclass
class ExtractReport:
    archive: str
    written: int = 0
    skipped: bool = False
    problems: list[Problem] = field(default_factory=list)


class _Budget:
    def __init__(self, name: str, max_total: int, max_entry: int) -> None:
        self.name, self.max_total, self.max_entry, self.total = name, max_total, max_entry, 0

    def copy(self, src, dest: Path, entry: str) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        n = 0
        try:
            with open(tmp, "wb") as out:
                while chunk := src.read(_CHUNK):
                    n += len(chunk)
                    self.total += len(chunk)
                    if n > self.max_entry:
                        raise DataError(
                            f"{self.name}: entry {entry!r} is larger than "
                            f"{self.max_entry} bytes (archive bomb?)"
                        )
                    if self.total > self.max_total:
                        raise DataError(
                            f"{self.name}: more than {self.max_total} bytes "
                            "uncompressed (archive bomb?)"
                        )
                    out.write(chunk)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)


def _target(dest: Path, name: str) -> tuple[Path | None, str | None]:
    rel, reason = DataRoot.normalise(name)
    if rel is None:
        return None, reason.replace("image path", "entry") if reason else "bad entry name"
    target = dest / rel
    real_dest = os.path.realpath(dest)
    if (
        not os.path.realpath(target.parent).startswith(real_dest.rstrip(os.sep) + os.sep)
        and os.path.realpath(target.parent) != real_dest
    ):
        return None, "entry would be written through a symlink outside the destination"
    if target.is_symlink():
        return None, "entry would overwrite a symbolic link"
    return target, None


def _marker(dest: Path, archive: Path) -> Path:
    return dest / f".ibench-extracted-{archive.name}.json"


def _stamp(archive: Path) -> dict[str, int]:
    st = archive.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def extract(
    archive: Path,
    dest: Path,
    *,
    max_total: int = MAX_TOTAL_BYTES,
    max_entry: int = MAX_ENTRY_BYTES,
    max_entries: int = MAX_ENTRIES,
) -> ExtractReport:
    """Extract ``archive`` (.zip, .tar, .tar.gz, .tgz) into ``dest`` safely."""
    report = ExtractReport(archive.name)
    marker = _marker(dest, archive)
    try:
        if marker.exists() and json.loads(marker.read_text()) == _stamp(archive):
            report.skipped = True
            return report
    except (OSError, ValueError):
        pass
    dest.mkdir(parents=True, exist_ok=True)
    budget = _Budget(archive.name, max_total, max_entry)

    def refuse(entry: str, why: str) -> None:
        report.problems.append(Problem(archive.name, entry, f"refused: {why}"))

    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                if len(infos) > max_entries:
                    raise DataError(f"{archive}: {len(infos)} entries exceeds {max_entries}")
                for info in infos:
                    mode = info.external_attr >> 16
                    if info.is_dir():
                        continue
                    if stat.S_ISLNK(mode):
                        refuse(info.filename, "symbolic link")
                        continue
                    target, why = _target(dest, info.filename)
                    if target is None:
                        refuse(info.filename, why or "bad name")
                        continue
                    with zf.open(info) as src:
                        budget.copy(src, target, info.filename)
                    report.written += 1
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive, "r:*") as tf:
                count = 0
                for member in tf:
                    count += 1
                    if count > max_entries:
                        raise DataError(f"{archive}: more than {max_entries} entries")
                    if member.isdir():
                        continue
                    if not member.isfile():
                        refuse(member.name, "link or special file")
                        continue
                    target, why = _target(dest, member.name)
                    if target is None:
                        refuse(member.name, why or "bad name")
                        continue
                    src = tf.extractfile(member)
                    if src is None:
                        refuse(member.name, "unreadable entry")
                        continue
                    with src:
                        budget.copy(src, target, member.name)
                    report.written += 1
        else:
            raise DataError(f"{archive}: not a zip or tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        if isinstance(e, OSError) and e.errno is not None and not isinstance(e, EOFError):
            raise DataError(f"{archive}: cannot extract ({e.strerror or e})") from None
        raise DataError(f"{archive}: corrupt or truncated archive ({e})") from None
    marker.write_text(json.dumps(_stamp(archive)))
    return report
