"""Janus teacher forcing: one right-padded forward for a batch of rollouts (what GRPO's log-prob
recomputation and the warm-up loss now do) against one forward per rollout (what they did), on
the tiny Janus, forward and backward, in the same run. Prints seconds per batch and the ratio.

    python perf/janus_teacher_forcing.py [--rollouts 8] [--tokens 48] [--repeat 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from interleave_bench import load_benchmark  # noqa: E402
from interleave_bench.media import ImageStore  # noqa: E402
from interleave_bench.models.base import GenerationSettings  # noqa: E402
from interleave_bench.models.janus import JanusAdapter  # noqa: E402
from interleave_bench.models.prompts import build_prompt  # noqa: E402
from interleave_bench.models.tiny_janus import build_tiny_janus  # noqa: E402
from interleave_bench.train.policy_logprobs import (  # noqa: E402
    _pad,
    batch_logprobs,
    janus_sequence_logprobs,
)
from interleave_bench.train.rollout import rollout  # noqa: E402


def timed(fn, repeat: int) -> float:
    fn()  # warm-up
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rollouts", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    adapter = JanusAdapter(build_tiny_janus(tmp / "janus"), device=args.device)
    settings = GenerationSettings(max_new_tokens=args.tokens, temperature=1.0, max_images=2)
    samples = load_benchmark("mmie:sample").samples
    prompts = [build_prompt(samples[i % len(samples)]) for i in range(args.rollouts // 2)]
    rolls = rollout(adapter, prompts, settings, 2, ImageStore(tmp / "img"), seed=0)
    model = adapter.model

    def per_rollout() -> None:
        model.zero_grad(set_to_none=True)
        rows = [janus_sequence_logprobs(model, adapter.processor, r, settings)[0] for r in rolls]
        _pad(rows, model.device).sum().backward()

    def batched() -> None:
        model.zero_grad(set_to_none=True)
        batch_logprobs(adapter, rolls, settings).sum().backward()

    per = timed(per_rollout, args.repeat)
    one = timed(batched, args.repeat)
    lengths = sorted(len(r.trace.token_ids) for r in rolls)
    print(
        f"{len(rolls)} rollouts ({lengths[0]}-{lengths[-1]} generated tokens), {args.device}: "
        f"one forward per rollout {per * 1e3:.1f} ms, one padded forward {one * 1e3:.1f} ms, "
        f"ratio {one / per:.2f} (lower is better)"
    )


if __name__ == "__main__":
    main()
