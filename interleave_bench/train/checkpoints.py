"""Checkpoints and JSONL logs shared by the warm-up and GRPO trainers.

A checkpoint is one ``state.pt`` (weights, optimizer, step, RNG states, the log's byte offset and
the config), written to a temporary name and renamed, so a kill mid-write leaves the previous
checkpoint intact. Loading cuts the log back to the recorded offset: the records a resumed run
writes then continue exactly where the checkpoint was taken. A log is never lengthened (cutting a
shorter file "back" to a larger offset used to pad it with NUL bytes), and NUL bytes or a torn last
line left by a crash are removed with a warning instead of stopping the resume.
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Any

import torch

from ..runs import TornRecordWarning, parse_jsonl


class LogRepairWarning(UserWarning):
    """The step log was damaged (NUL bytes, shorter than a checkpoint says) and was repaired."""


def checkpoint_dir(out: Path, step: int) -> Path:
    return out / f"checkpoint-{step:06d}"


def latest_checkpoint(out: Path) -> Path | None:
    found = sorted(p for p in out.glob("checkpoint-*") if (p / "state.pt").is_file())
    return found[-1] if found else None


def save_state(
    path: Path,
    *,
    model_state: dict[str, Any],
    optimizer: Any,
    step: int,
    log_path: Path,
    config: dict[str, Any],
) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    state = {
        "model": model_state,
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "step": step,
        "torch_rng": torch.get_rng_state(),
        "python_rng": random.getstate(),
        "log_offset": log_path.stat().st_size if log_path.exists() else 0,
        "config": config,
    }
    tmp = path / "state.pt.tmp"
    torch.save(state, tmp)
    tmp.replace(path / "state.pt")
    return path


def load_state(
    path: Path,
    model: Any,
    optimizer: Any,
    *,
    log_path: Path | None,
    strict: bool = True,
) -> int:
    """Restore weights, optimizer and RNG states; truncate ``log_path`` (None: leave it, e.g. on
    a process that does not write the log). Returns the checkpoint's step."""
    state = torch.load(path / "state.pt", weights_only=False, map_location=model.device)
    model.load_state_dict(state["model"], strict=strict)
    if optimizer is not None and state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"].cpu())  # map_location moved it to the model device
    random.setstate(state["python_rng"])
    if log_path is not None:
        cut_log(log_path, int(state["log_offset"]))
    return int(state["step"])


def cut_log(path: Path, offset: int) -> None:
    """Drop the records written after a checkpoint (the log's first ``offset`` bytes stay), never
    lengthening the file, then remove NUL bytes (``clean_log``)."""
    size = path.stat().st_size if path.exists() else 0
    if size < offset:
        warnings.warn(
            f"{path}: {size} bytes, shorter than the {offset} the checkpoint recorded; records "
            "before the checkpoint are missing from this log (kept as it is)",
            LogRepairWarning,
            stacklevel=3,
        )
    else:
        with open(path, "r+b") as f:
            f.truncate(offset)
    clean_log(path)


def _without_nul(path: Path, data: bytes, action: str) -> bytes:
    nul = data.count(b"\0")
    if not nul:
        return data
    warnings.warn(
        f"{path}: {nul} NUL bytes (left by a crash or an earlier cut of the log); {action}",
        LogRepairWarning,
        stacklevel=4,
    )
    return data.replace(b"\0", b"")


def clean_log(path: Path) -> None:
    """Remove NUL bytes from the log (no JSON record holds one), with a warning."""
    if not path.exists():
        return
    data = path.read_bytes()
    clean = _without_nul(path, data, "removed them")
    if clean is not data:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(clean)
        tmp.replace(path)


def read_log(path: Path) -> list[dict[str, Any]]:
    """The log's records; NUL bytes and a torn last line are skipped with a warning."""
    if not path.exists():
        return []
    data = _without_nul(path, path.read_bytes(), "skipped them")
    records, torn = parse_jsonl(path, data)
    if torn is not None:
        warnings.warn(
            f"{path}, line {torn[1]}: cut short by a process killed mid-write; ignored it",
            TornRecordWarning,
            stacklevel=2,
        )
    return records
