"""Safe extraction of the tar and zip archives benchmarks ship their images in.

Entries that would land outside the destination (absolute names, ``..``, zip-slip), links, device
files and anything past the size limits are refused and reported, never written. Bytes are counted
as they are written, so a lying header cannot smuggle in a bomb.

Every file is written into a staging folder the extractor has just created (``mkdtemp`` inside the
destination), opened with ``O_CREAT|O_EXCL|O_NOFOLLOW``, so nothing that already lies in the data
folder (a planted symlink, a stale temp file) is ever written through or reused. Only a finished
extraction is moved into place, through directory handles opened without following links; a
folder that did not exist appears in one rename. A marker holding the archive's size and sha256 is
written last: a folder without it is extracted again, one with it is skipped.

``images_only`` (benchmark image archives) admits image files alone: an entry such as the data
file or ``.ibench-source.json`` is a problem by name and never lands in the data folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .paths import DataRoot
from .problems import DataError, Problem

# the provenance marker of a data folder (source, revision), written by download and archive import
SOURCE_FILE = ".ibench-source.json"
MAX_TOTAL_BYTES = 64 * 1024**3
MAX_ENTRY_BYTES = 256 * 1024**2
MAX_ENTRIES = 2_000_000
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
RESERVED_PREFIX = ".ibench-"
_CHUNK = 1 << 20
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | getattr(os, "O_BINARY", 0)
_JUNK = ("__MACOSX/",)  # macOS resource forks: never written, not worth a problem


@dataclass
class ExtractReport:
    archive: str
    written: int = 0
    skipped: bool = False
    problems: list[Problem] = field(default_factory=list)


# --------------------------------------------------------------------------- link-free file ops


def _open_dir(top: int, parts: list[str], create: bool) -> int:
    """A handle on ``top/parts...``, never following a link; missing folders are made if asked."""
    fd = os.dup(top)
    try:
        for part in parts:
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, dir_fd=fd)
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_file(folder: Path, name: str, data: bytes) -> None:
    """Write ``folder/name`` as a new file and rename it into place: a symlink already there is
    replaced, never written through, and no existing temp name is reused."""
    folder.mkdir(parents=True, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f"{RESERVED_PREFIX}tmp-", dir=folder)
    try:
        tmp = os.path.join(staging, "file")
        with os.fdopen(os.open(tmp, _NEW_FILE, 0o666), "wb") as out:
            out.write(data)
        dfd = os.open(folder, _DIR_FLAGS)
        try:
            os.replace(tmp, name, dst_dir_fd=dfd)
        finally:
            os.close(dfd)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --------------------------------------------------------------------------- staging


class _Stage:
    """Writes entries into a fresh staging folder, counting bytes against the bomb limits."""

    def __init__(self, name: str, fd: int, max_total: int, max_entry: int) -> None:
        self.name, self.fd, self.max_total, self.max_entry = name, fd, max_total, max_entry
        self.total = 0

    def create(self, rel: str) -> int:
        """A new file for ``rel``; OSError when another entry already took the name."""
        *dirs, base = rel.split("/")
        parent = _open_dir(self.fd, dirs, create=True)
        try:
            return os.open(base, _NEW_FILE, 0o666, dir_fd=parent)
        finally:
            os.close(parent)

    def copy(self, src: IO[bytes], out_fd: int, entry: str) -> None:
        n = 0
        with os.fdopen(out_fd, "wb") as out:
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
                        f"{self.name}: more than {self.max_total} bytes uncompressed (archive bomb?)"
                    )
                out.write(chunk)


def _admit(name: str, images_only: bool) -> tuple[str | None, str | None]:
    """(relative path, None) for an entry that may be written, or (None, why it is refused)."""
    rel, reason = DataRoot.normalise(name)
    if rel is None:
        return None, reason.replace("image path", "entry") if reason else "bad entry name"
    parts = rel.split("/")
    if any(p.startswith(RESERVED_PREFIX) for p in parts):
        return None, "name is reserved for interleave-bench's own files"
    if images_only:
        if any(p.startswith(".") for p in parts):
            return None, "hidden file in an image archive"
        if os.path.splitext(parts[-1])[1].lower() not in IMAGE_SUFFIXES:
            return None, "not an image file (image archives may only add images)"
    return rel, None


def _merge(src: int, dst: int, prefix: str, archive: str, problems: list[Problem]) -> None:
    """Move everything under ``src`` into ``dst``; a symlink or clash in ``dst`` is a problem."""
    for name in sorted(os.listdir(src)):
        rel = f"{prefix}{name}"
        s = os.stat(name, dir_fd=src, follow_symlinks=False)
        try:
            d = os.stat(name, dir_fd=dst, follow_symlinks=False)
        except FileNotFoundError:
            os.rename(name, name, src_dir_fd=src, dst_dir_fd=dst)
            continue
        if stat.S_ISLNK(d.st_mode):
            problems.append(
                Problem(archive, rel, "refused: it is a symlink in the destination; not written")
            )
        elif stat.S_ISDIR(s.st_mode) and stat.S_ISDIR(d.st_mode):
            sfd, dfd = os.open(name, _DIR_FLAGS, dir_fd=src), os.open(name, _DIR_FLAGS, dir_fd=dst)
            try:
                _merge(sfd, dfd, f"{rel}/", archive, problems)
            finally:
                os.close(sfd)
                os.close(dfd)
        elif stat.S_ISREG(s.st_mode) and stat.S_ISREG(d.st_mode):
            os.replace(name, name, src_dir_fd=src, dst_dir_fd=dst)
        else:
            problems.append(
                Problem(archive, rel, "refused: clashes with a different kind of file there")
            )


# --------------------------------------------------------------------------- marker


def _marker_name(archive: Path) -> str:
    return f"{RESERVED_PREFIX}extracted-{archive.name}.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _is_done(dest: Path, archive: Path) -> bool:
    """Whether a marker (a plain file, not a link) records this very archive."""
    try:
        fd = os.open(dest / _marker_name(archive), os.O_RDONLY | _NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            meta = json.loads(f.read(4096))
        st = archive.stat()
        if meta.get("size") != st.st_size:
            return False
        return meta.get("mtime_ns") == st.st_mtime_ns or meta.get("sha256") == _sha256(archive)
    except (OSError, ValueError, AttributeError):
        return False


# --------------------------------------------------------------------------- extraction


def _entries(archive: Path, max_entries: int):
    """Yield ``(name, kind, opener)`` per entry; kind is 'file', 'dir' or why it is refused."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            if len(infos) > max_entries:
                raise DataError(f"{archive}: {len(infos)} entries exceeds {max_entries}")
            for info in infos:
                if info.is_dir():
                    yield info.filename, "dir", None
                elif stat.S_ISLNK(info.external_attr >> 16):
                    yield info.filename, "symbolic link", None
                else:
                    yield info.filename, "file", lambda info=info: zf.open(info)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive, "r:*") as tf:
            for count, member in enumerate(tf, 1):
                if count > max_entries:
                    raise DataError(f"{archive}: more than {max_entries} entries")
                if member.isdir():
                    yield member.name, "dir", None
                elif not member.isfile():
                    yield member.name, "link or special file", None
                else:
                    yield member.name, "file", lambda member=member: tf.extractfile(member)
    else:
        raise DataError(f"{archive}: not a zip or tar archive")


def extract(
    archive: Path,
    dest: Path,
    *,
    max_total: int | None = None,
    max_entry: int | None = None,
    max_entries: int | None = None,
    images_only: bool = False,
) -> ExtractReport:
    """Extract ``archive`` (.zip, .tar, .tar.gz, .tgz) into ``dest`` safely (see the module)."""
    report = ExtractReport(archive.name)
    if dest.is_symlink():
        report.problems.append(
            Problem(archive.name, str(dest), "refused: the destination folder is a symlink")
        )
        return report
    if _is_done(dest, archive):
        report.skipped = True
        return report
    try:
        dest.mkdir(parents=True, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f"{RESERVED_PREFIX}staging-", dir=dest)
    except OSError as e:
        raise DataError(
            f"{dest}: cannot create a folder to extract into ({e.strerror or e})"
        ) from None
    sfd = os.open(staging, _DIR_FLAGS)
    stage = _Stage(
        archive.name,
        sfd,
        MAX_TOTAL_BYTES if max_total is None else max_total,
        MAX_ENTRY_BYTES if max_entry is None else max_entry,
    )

    def refuse(entry: str, why: str) -> None:
        report.problems.append(Problem(archive.name, entry, f"refused: {why}"))

    try:
        for name, kind, opener in _entries(
            archive, MAX_ENTRIES if max_entries is None else max_entries
        ):
            if kind == "dir" or name.startswith(_JUNK) or name.rsplit("/", 1)[-1] == ".DS_Store":
                continue
            if kind != "file" or opener is None:
                refuse(name, kind)
                continue
            rel, why = _admit(name, images_only)
            if rel is None:
                refuse(name, why or "bad name")
                continue
            try:
                out = stage.create(rel)
            except OSError:
                refuse(name, "clashes with another entry of the same name")
                continue
            try:
                src = opener()
            except (RuntimeError, NotImplementedError) as e:  # encrypted, unknown compression
                src = None
                why = f"unreadable entry ({e})"
            if src is None:
                os.close(out)
                refuse(name, why or "unreadable entry")
                continue
            with src:
                stage.copy(src, out, name)
            report.written += 1
        dfd = os.open(dest, _DIR_FLAGS)
        try:
            _merge(sfd, dfd, "", archive.name, report.problems)
        finally:
            os.close(dfd)
        st = archive.stat()
        marker = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": _sha256(archive)}
        write_file(dest, _marker_name(archive), json.dumps(marker).encode())
    except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, OSError) as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise DataError(f"{archive}: cannot extract ({e.strerror or e})") from None
        raise DataError(f"{archive}: corrupt or truncated archive ({e})") from None
    finally:
        os.close(sfd)
        shutil.rmtree(staging, ignore_errors=True)
    return report
