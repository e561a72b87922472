"""Run folders: append-only record files that survive ``kill -9``, and the manifest that keeps two
different commands from ever writing into the same folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import __version__


class RunFolderError(ValueError):
    """The output folder belongs to a different command or configuration."""


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
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(cut)

    def append(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a JSON Lines file, skipping a torn last line."""
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break
            line = line.strip()
            if line:
                try:
                    yield json.loads(line)
                except ValueError:
                    continue


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
    out.mkdir(parents=True, exist_ok=True)
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


def dist_info() -> tuple[int, int]:
    """(rank, world size) from torchrun / accelerate environment variables."""
    try:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 0, 1
