"""Step metrics to the experiment trackers users already run, through accelerate's tracking API.

``report_to`` (a recipe key) names one: ``tensorboard`` writes event files under
``output_dir/trackers/<run>``, ``mlflow`` logs to ``output_dir/mlruns`` unless
``MLFLOW_TRACKING_URI`` says otherwise, ``wandb`` to the user's wandb setup (files under
``output_dir``). Only process 0 logs. Nothing is imported unless a tracker is asked for.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

TRACKERS = ("tensorboard", "wandb", "mlflow")
# the package each tracker needs, and accelerate's check for it
_NEEDS = {
    "tensorboard": ("tensorboard", "is_tensorboard_available"),
    "wandb": ("wandb", "is_wandb_available"),
    "mlflow": ("mlflow", "is_mlflow_available"),
}


class TrackerError(ValueError):
    """A tracker was asked for whose package is not installed."""


def check_available(report_to: str) -> None:
    """Fail before a model loads when ``report_to``'s package is missing."""
    if report_to == "none":
        return
    import accelerate.utils

    package, check = _NEEDS[report_to]
    if not getattr(accelerate.utils, check)():
        raise TrackerError(
            f"report_to: {report_to} needs the {package} package; install it "
            f"(pip install {package}) or set report_to=none"
        )


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The record's finite numbers (lists, strings, None and NaN are left to the JSONL log)."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if key != "step" and math.isfinite(value):
            out[key] = float(value)
    return out


def _hparams(config: dict[str, Any]) -> dict[str, Any]:
    """The config as the flat scalar values trackers accept (others as JSON text)."""
    return {
        k: v if isinstance(v, bool | int | float | str) else json.dumps(v, default=str)
        for k, v in config.items()
    }


class Trackers:
    """The accelerate tracker named by ``report_to`` (none: every call does nothing)."""

    def __init__(self, report_to: str, out: Path, run_name: str, config: dict[str, Any]) -> None:
        self.trackers: list[Any] = []
        if report_to == "none":
            return
        check_available(report_to)
        from accelerate import tracking

        if report_to == "tensorboard":
            tracker = tracking.TensorBoardTracker(run_name, out / "trackers")
        elif report_to == "mlflow":
            tracker = tracking.MLflowTracker(run_name, str(out / "mlruns"))
        else:
            tracker = tracking.WandBTracker(run_name, dir=str(out))
        tracker.start()
        tracker.store_init_configuration(_hparams(config))
        self.trackers.append(tracker)

    def log(self, record: dict[str, Any]) -> None:
        values = scalars(record)
        for tracker in self.trackers:
            tracker.log(values, step=int(record["step"]))

    def finish(self) -> None:
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []
