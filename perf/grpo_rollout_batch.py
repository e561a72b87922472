"""Rollout time of a GRPO step on the tiny Janus: batched (``rollout_batch_size`` unset: all
4 prompts x G=4 rollouts of a step decoded together) against the sequential path
(``rollout_batch_size: 1``, one answer at a time through the single-row loop, as before
batching), measured in the same run.

Both trainers run the same config and seeds, so they draw the same rollouts (checked: the
steps' rewards and answer structures must agree) and do the same updates. The first step of each
run is a warm-up and not counted; runs alternate between the two settings (this machine's load
drifts) and the table reports the median rollout seconds per step with the spread (min-max).
Target: rollout time at least 2.5x lower batched.

    python perf/grpo_rollout_batch.py [--steps 3] [--repeat 3] [--tokens 24]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from interleave_bench.models import loading  # noqa: E402
from interleave_bench.train.trainer import GRPOTrainer, TrainConfig, read_log  # noqa: E402

MODES = {"sequential": 1, "batched": None}  # rollout_batch_size


def run(model: Path, out: Path, batch: int | None, args) -> list[dict]:
    cfg = TrainConfig(
        model=str(model),
        output_dir=str(out),
        steps=args.steps,
        prompts_per_step=4,
        group_size=4,
        rollout_batch_size=batch,
        lr=1e-3,
        beta=0.01,
        save_final=False,
        generation={
            "max_new_tokens": args.tokens,
            "temperature": 1.0,
            "cfg_scale": 5.0,
            "max_images": 2,
        },
    )
    return read_log(GRPOTrainer(cfg).train().log_path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3, help="steps per run (the first is warm-up)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=24, help="max new text tokens per rollout")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)  # tiny models: thread-pool waits dominate on 2 cores otherwise
    tmp = Path(tempfile.mkdtemp())
    os.environ["IBENCH_HOME"] = str(tmp / "home")
    model = loading.tiny_model("tiny:janus")
    roll: dict[str, list[float]] = {m: [] for m in MODES}
    step: dict[str, list[float]] = {m: [] for m in MODES}
    for r in range(args.repeat):
        logs = {m: run(model, tmp / f"{m}-{r}", b, args) for m, b in MODES.items()}
        for m, records in logs.items():
            roll[m] += [rec["rollout_seconds"] for rec in records[1:]]
            step[m] += [rec["seconds"] for rec in records[1:]]
        same = [
            (a["rewards"], a["structures"]) == (b["rewards"], b["structures"])
            for a, b in zip(logs["sequential"], logs["batched"], strict=True)
        ]
        if not all(same):
            raise SystemExit("the batched rollouts differ from the sequential ones")
    print(
        f"tiny Janus GRPO, 4 prompts x G=4, {args.tokens} new tokens, up to 2 images, CPU, "
        f"1 thread; {args.repeat} runs x {args.steps - 1} timed steps each"
    )
    print(f"{'rollouts':10} {'rollout s/step':>15} {'spread':>13} {'step s':>8}")
    for m in MODES:
        spread = f"{min(roll[m]):.2f}-{max(roll[m]):.2f}"
        print(
            f"{m:10} {statistics.median(roll[m]):15.2f} {spread:>13} "
            f"{statistics.median(step[m]):8.2f}"
        )
    ratio = statistics.median(roll["sequential"]) / statistics.median(roll["batched"])
    whole = statistics.median(step["sequential"]) / statistics.median(step["batched"])
    print(
        f"rollout time {ratio:.2f}x lower batched (target >= 2.5x: "
        f"{'met' if ratio >= 2.5 else 'NOT met'}); whole step {whole:.2f}x"
    )


if __name__ == "__main__":
    main()
