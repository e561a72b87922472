"""A training run's output folder: refuse to train into another run's folder by accident.

Training into a folder that already holds a run used to replace ``log.jsonl`` and ``final/`` and
leave the old checkpoints behind, so a later ``--resume`` picked up a checkpoint of the other run
(and cut the new, shorter log to that run's longer length, filling it with NUL bytes). A
non-empty folder is now taken only to continue it (``resume``) or after clearing it
(``overwrite``), and ``overwrite`` clears only a folder that looks like a training run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

LOG_NAME = "log.jsonl"
FINAL = "final"
# what a trainer writes into its folder; a folder with none of these is not a run to clear
RUN_MARKERS = (LOG_NAME, FINAL, "config.json", "warmup_config.json")


class OutputDirError(ValueError):
    """The output folder holds something and neither ``--resume`` nor ``--overwrite`` was
    given, or ``--overwrite`` was asked of a folder that is not a training run."""


def contents(out: Path) -> list[str]:
    """The names in ``out`` (sorted), empty when it does not exist."""
    if not out.exists():
        return []
    if not out.is_dir():
        raise OutputDirError(f"output_dir {out} is a file, not a folder; choose a folder")
    return sorted(p.name for p in out.iterdir())


def looks_like_run(out: Path) -> bool:
    return any((out / m).exists() for m in RUN_MARKERS) or any(out.glob("checkpoint-*"))


def refusal(out: Path, found: list[str]) -> OutputDirError:
    shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
    return OutputDirError(
        f"output_dir {out} is not empty ({shown}): training into it would replace its log and "
        "final model and keep its old checkpoints. Pass --resume to continue that run, "
        "--overwrite to clear it and start again, or choose another output_dir"
    )


def prepare_output_dir(out: Path, *, resume: bool = False, overwrite: bool = False) -> None:
    """Check (and with ``overwrite`` clear) ``out`` before a run writes anything into it.

    Empty or missing: fine. Non-empty: fine with ``resume`` (the latest checkpoint continues),
    cleared with ``overwrite`` when it looks like a training run, refused otherwise.
    """
    if resume and overwrite:
        raise OutputDirError("--resume and --overwrite contradict each other; pass one")
    found = contents(out)
    if not found or resume:
        return
    if not overwrite:
        raise refusal(out, found)
    if not looks_like_run(out):
        raise OutputDirError(
            f"output_dir {out} holds {', '.join(found[:4])} but no training run (no {LOG_NAME}, "
            "checkpoint-* or final/); --overwrite clears only a run folder. Choose another "
            "output_dir"
        )
    for p in out.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
