"""Checkpoints and JSONL logs shared by the warm-up and GRPO trainers.

A checkpoint is one ``state.pt`` (weights, optimizer, step, RNG states, the log's byte offset and
the config), written to a temporary name and renamed, so a kill mid-write leaves the previous
checkpoint intact. Loading cuts the log back to the recorded offset: the records a resumed run
writes then continue exactly where the checkpoint was taken.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch


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
        with open(log_path, "a+b") as f:  # drop records written after the checkpoint
            f.truncate(int(state["log_offset"]))
    return int(state["step"])


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
