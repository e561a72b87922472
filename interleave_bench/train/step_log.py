"""One GRPO log record from every process's share of a step, and its console line.

Each process reports plain numbers (rewards, token counts, metric means, the sums behind the
entropy and image log-prob means); process 0 merges them so the record describes the whole
global batch, exactly as a single process would have logged it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from .rollout import Rollout


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    m = sum(values) / len(values)
    var = sum((v - m) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return m, math.sqrt(var)


def image_logprob_sums(rolls: Sequence[Rollout]) -> tuple[float, float, int]:
    """Sums of the sampled image tokens' log-probs under the CFG-guided and the conditional
    distribution, and their count: both are logged whichever one forms the ratio."""
    cfg = cond = 0.0
    n = 0
    for r in rolls:
        tr = r.trace
        conds = tr.cond_logprobs or tr.logprobs
        for lp, c, m in zip(tr.logprobs, conds, tr.image_mask, strict=False):
            if m:
                cfg, cond, n = cfg + lp, cond + c, n + 1
    return cfg, cond, n


def image_logprob_means(parts: list[tuple[float, float, int]]) -> dict[str, float]:
    n = sum(p[2] for p in parts)
    if not n:
        return {"image_logprob_cfg": math.nan, "image_logprob_cond": math.nan}
    return {
        "image_logprob_cfg": sum(p[0] for p in parts) / n,
        "image_logprob_cond": sum(p[1] for p in parts) / n,
    }


def merge_record(
    step: int, reward_name: str, parts: list[dict[str, Any]], t0: float, t_roll: float
) -> dict[str, Any]:
    """One log record from every process's part (rank order)."""
    rewards = [r for p in parts for r in p["rewards"]]
    ok = [r for r in rewards if r is not None]
    mean, std = _mean_std(ok)
    active = sum(p["active"] for p in parts)
    record: dict[str, Any] = {
        "step": step,
        "reward_mean": mean,
        "reward_std": std,
        f"reward/{reward_name}/mean": mean,
        f"reward/{reward_name}/std": std,
        "rewards": rewards,
        "reward_none": len(rewards) - len(ok),
        "frac_zero_spread": sum(p["zero_spread"] for p in parts) / len(parts),
        "entropy": sum(p["entropy_sum"] for p in parts) / active if active else math.nan,
        "text_tokens": sum(p["text_tokens"] for p in parts),
        "image_tokens": sum(p["image_tokens"] for p in parts),
        "structures": [s for p in parts for s in p["structures"]],
        "errors": sum(p["errors"] for p in parts),
        **image_logprob_means([p["image_logp"] for p in parts]),
        "groups_dropped": sum(p["reward_metrics"].get("groups_dropped", 0) for p in parts),
        "sampling_rounds": max(p["reward_metrics"].get("sampling_rounds", 1) for p in parts),
        "rollout_seconds": t_roll,
        "seconds": time.perf_counter() - t0,
    }
    for key in parts[0]["metrics"]:
        record[key] = sum(p["metrics"][key] for p in parts) / len(parts)
    for key in parts[0]["reward_metrics"]:
        if key.startswith("reward/"):
            vals = [p["reward_metrics"][key] for p in parts]
            record[key] = sum(vals) / len(vals)
    return record


def console_line(rec: dict[str, Any]) -> str:
    """The step's one console line (rich markup)."""
    return (
        f"[bold]step {rec['step']}[/] reward {rec['reward_mean']:.3f}±{rec['reward_std']:.3f} "
        f"kl {rec.get('kl', float('nan')):.4f} clip {rec.get('clip_frac', 0):.3f} "
        f"entropy {rec['entropy']:.3f} zero-spread {rec['frac_zero_spread']:.2f} "
        f"tokens {rec['text_tokens']}t/{rec['image_tokens']}i {rec['seconds']:.1f}s"
    )
