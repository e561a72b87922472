"""The training progress bar on stderr: step i/N, time left, the step's key metrics (GRPO:
reward and KL; warm-up: loss) and seconds per step.

The text is computed here from the step records (``status``), not by rich's own speed
estimate, so it is the same in a terminal, a test's captured console and a log file. The bar is
drawn only on a terminal; elsewhere the trainers' one line per step is the progress.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def clock(seconds: float) -> str:
    """``h:mm:ss``."""
    s = max(0, round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def status(step: int, total: int, seconds: Sequence[float], metrics: str) -> str:
    """``step 3/10 ETA 0:00:28 reward 0.312 kl 0.0012 4.0 s/step``: ``seconds`` are this
    session's step times (a resumed run's earlier steps took no time here)."""
    if not seconds:
        return f"step {step}/{total} ETA -:--:--"
    per = sum(seconds) / len(seconds)
    return f"step {step}/{total} ETA {clock(per * (total - step))} {metrics} {per:.1f} s/step"


class StepProgress:
    """A rich progress bar over a run's steps; ``update`` after each step's record."""

    def __init__(
        self,
        console: Any,
        total: int,
        start: int,
        metrics: Callable[[dict[str, Any]], str],
        label: str = "training",
    ) -> None:
        from rich.progress import BarColumn, Progress, TextColumn

        self.total, self.metrics = total, metrics
        self.seconds: list[float] = []
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=24),
            TextColumn("{task.fields[info]}"),
            console=console,
            auto_refresh=False,  # drawn once per step: steps take seconds
            disable=not console.is_terminal,
        )
        info = status(start, total, [], "")
        self.task = self.progress.add_task(label, total=total, completed=start, info=info)
        self.text = info
        self.progress.start()
        self.progress.refresh()

    def update(self, record: dict[str, Any]) -> None:
        self.seconds.append(float(record.get("seconds", 0.0)))
        step = int(record["step"])
        self.text = status(step, self.total, self.seconds, self.metrics(record))
        self.progress.update(self.task, completed=step, info=self.text)
        self.progress.refresh()

    def stop(self) -> None:
        self.progress.stop()


def grpo_metrics(record: dict[str, Any]) -> str:
    return f"reward {record['reward_mean']:.3f} kl {record.get('kl', float('nan')):.4f}"


def warmup_metrics(record: dict[str, Any]) -> str:
    return f"loss {record['loss']:.4f}"
