"""Batched interleaved decoding: answers/s of ``adapter.generate`` at batch 1, 4, 8 and 16 on
the tiny models and the bundled ``mmie:sample`` prompts (images in the prompts, interleaved
answers), with batch 1 (the single-row loop) as the baseline measured in the same run.

Each family is one function in ``FAMILIES`` returning the seconds of every repetition at every
batch size; the repetitions are interleaved across batch sizes (this machine's load drifts) and
the table reports the median with the spread (min-max). Target: at batch 8, at least 3x the
answers/s of batch 1 (the tiny models are overhead-bound: the check is that per-step Python and
kernel overhead is shared across rows).

    python perf/batched_decode.py [--families janus emu3] [--n 16] [--tokens 32] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from interleave_bench import load_benchmark  # noqa: E402
from interleave_bench.media import ImageStore  # noqa: E402
from interleave_bench.models import loading  # noqa: E402
from interleave_bench.models.base import GenerationSettings  # noqa: E402
from interleave_bench.models.prompts import build_prompt  # noqa: E402

BATCHES = (1, 4, 8, 16)


def time_generate(adapter, args, tmp: Path, image_tokens: int = 0) -> dict[int, list[float]]:
    """Seconds to answer ``args.n`` mini-set prompts at each batch size, ``args.repeat`` times.
    ``image_tokens``: what a family's budget adds for its two images (Emu3 counts them)."""
    prompts = [build_prompt(s) for s in load_benchmark("mmie:sample", limit=args.n)]
    times: dict[int, list[float]] = {b: [] for b in BATCHES}

    def settings(b: int) -> GenerationSettings:
        budget = args.tokens + image_tokens
        return GenerationSettings(max_new_tokens=budget, max_images=2, batch_size=b)

    for b in BATCHES:  # warm-up
        adapter.generate(prompts[: min(b, 2)], settings(b), ImageStore(tmp / "warm"))
    for r in range(args.repeat):
        for b in BATCHES:
            store = ImageStore(tmp / f"{b}-{r}")
            t0 = time.perf_counter()
            outs = adapter.generate(prompts, settings(b), store)
            times[b].append(time.perf_counter() - t0)
            errors = [o.error for o in outs if o.error]
            if errors:
                raise SystemExit(f"batch {b}: {len(errors)} failed answers, first: {errors[0]}")
    return times


def janus(args, tmp: Path) -> dict[int, list[float]]:
    """Tiny Janus (float32, CPU)."""
    adapter = loading.load_adapter(str(loading.tiny_model("tiny:janus")), device="cpu")
    return time_generate(adapter, args, tmp)


def emu3(args, tmp: Path) -> dict[int, list[float]]:
    """Tiny Emu3 (float32, CPU; 4x4 images under CFG 5): its token budget counts image tokens,
    so it gets two image spans on top of ``--tokens``."""
    adapter = loading.load_adapter(str(loading.tiny_model("tiny:emu3")), device="cpu")
    span = adapter.grammar(GenerationSettings()).span_len
    return time_generate(adapter, args, tmp, image_tokens=2 * span)


FAMILIES: dict[str, Callable[..., dict[int, list[float]]]] = {"janus": janus, "emu3": emu3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    ap.add_argument("--n", type=int, default=16, help="answers per measurement")
    ap.add_argument("--tokens", type=int, default=32, help="max new text tokens per answer")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)  # tiny models: thread-pool waits dominate on 2 cores otherwise
    tmp = Path(tempfile.mkdtemp())
    os.environ["IBENCH_HOME"] = str(tmp / "home")
    print(f"{args.n} mmie:sample answers, {args.tokens} new tokens, up to 2 images, CPU, 1 thread")
    print(
        f"{'family':8} {'batch':>5} {'median s':>9} {'spread s':>13} {'answers/s':>10} {'vs 1':>6}"
    )
    verdicts = []
    for name in args.families:
        times = FAMILIES[name](args, tmp / name)
        base = statistics.median(times[1])
        for b in BATCHES:
            med = statistics.median(times[b])
            spread = f"{min(times[b]):.2f}-{max(times[b]):.2f}"
            print(f"{name:8} {b:5d} {med:9.2f} {spread:>13} {args.n / med:10.2f} {base / med:6.2f}")
        ratio = base / statistics.median(times[8])
        verdicts.append(
            f"{name}: batch 8 = {ratio:.2f}x batch 1 ({'met' if ratio >= 3 else 'NOT met'})"
        )
    print("target (batch 8 >= 3x batch 1): " + "; ".join(verdicts))


if __name__ == "__main__":
    main()
