"""Seconds per GRPO step and peak RSS: our trainer against TRL's ``GRPOTrainer``.

Same tiny text-only causal LM (random Llama, built here), same prompts, group size G,
completion length, temperature, learning rate, beta (both keep a frozen reference), loss type and
reward (a pure function of the completion text). Each trainer runs in its own fresh process, so
peak RSS (``ru_maxrss``) covers imports, model, reference, optimizer and the steps. The first step
of each is a warm-up and not timed.

Gradient checkpointing is set explicitly on both sides and both settings are measured (TRL's
``GRPOConfig`` turns it on by default, ours off): the ratios compare like with like, ours/TRL at
the same setting (target: at most 1.0 on both time and memory).

    python perf/grpo_vs_trl.py [--steps 6] [--prompts 4] [--group 4] [--tokens 32] [--hidden 128]
        [--checkpointing off on]

Needs ``trl`` installed (``pip install trl``); it is not a dependency of interleave-bench.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPTS = [
    "The cat draws a blue house",
    "A red fox looks at the night sky",
    "My friend cooks two apples",
    "The chef paints an old map",
    "A small robot finds the green garden",
    "The painter describes a blue house",
    "The cat finds two apples",
    "My friend paints the night sky",
]


def reward_text(text: str) -> float:
    """Share of distinct words among the first 12 (rewards varied, non-empty answers)."""
    words = text.split()[:12]
    return len(set(words)) / 12.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_ours(args: argparse.Namespace) -> dict:
    import torch

    from interleave_bench.train.trainer import GRPOTrainer, TrainConfig, read_log
    from interleave_bench.types import Interleaved, Sample, Segment

    torch.set_num_threads(args.threads)
    samples = [
        Sample(id=str(i), benchmark="perf", input=Interleaved([Segment.of_text(p)]))
        for i, p in enumerate(PROMPTS)
    ]

    def reward(_samples, predictions):
        return [reward_text(p.output.text) for p in predictions]

    cfg = TrainConfig(
        model=args.model,
        output_dir=str(Path(args.work) / f"ours-gc{args.gc}"),
        steps=args.steps,
        prompts_per_step=args.prompts,
        group_size=args.group,
        lr=args.lr,
        beta=args.beta,
        loss_type="grpo",
        scale_rewards="group",
        max_grad_norm=1.0,
        save_final=False,
        device=args.device,
        gradient_checkpointing=bool(args.gc),
        generation={"max_new_tokens": args.tokens, "temperature": 1.0, "top_p": 1.0},
    )
    trainer = GRPOTrainer(cfg, reward=reward, samples=samples)
    trainer.train()
    secs = [r["seconds"] for r in read_log(trainer.log_path)]
    return {"step_seconds": secs[1:], "peak_rss_mb": peak_rss_mb(), **gpu_peak()}


def gpu_peak() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {}
    return {"peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20}


def run_trl(args: argparse.Namespace) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(args.threads)
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t)

    def reward(prompts, completions, **kw):
        return [reward_text(c) for c in completions]

    tok = AutoTokenizer.from_pretrained(args.model, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    config = GRPOConfig(
        output_dir=str(Path(args.work) / f"trl-gc{args.gc}"),
        per_device_train_batch_size=args.prompts * args.group,
        gradient_accumulation_steps=1,
        num_generations=args.group,
        max_completion_length=args.tokens,
        temperature=1.0,
        top_p=1.0,
        learning_rate=args.lr,
        beta=args.beta,
        loss_type="grpo",
        scale_rewards="group",
        max_grad_norm=1.0,
        max_steps=args.steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=args.device == "cpu",
        bf16=False,
        seed=0,
        dataloader_num_workers=0,
        gradient_checkpointing=bool(args.gc),
    )
    dataset = Dataset.from_dict({"prompt": PROMPTS})
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=config,
        train_dataset=dataset,
        processing_class=tok,
        callbacks=[Timer()],
    )
    trainer.train()
    return {"step_seconds": times[1:], "peak_rss_mb": peak_rss_mb(), **gpu_peak()}


def child(which: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", which, "--model", args.model, "--work", args.work]
    cmd += ["--device", args.device, "--gc", str(args.gc)]
    for k in ("steps", "prompts", "group", "tokens", "threads"):
        cmd += [f"--{k}", str(getattr(args, k))]
    cmd += ["--lr", str(args.lr), "--beta", str(args.beta)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{which} failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", choices=["ours", "trl"])
    ap.add_argument("--model")
    ap.add_argument("--work")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (both trainers)")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--beta", type=float, default=0.04)
    ap.add_argument(
        "--checkpointing",
        nargs="+",
        default=["off", "on"],
        choices=["off", "on"],
        help="gradient-checkpointing settings to measure (each on both trainers)",
    )
    ap.add_argument("--gc", type=int, default=0, help=argparse.SUPPRESS)  # worker's setting
    args = ap.parse_args()
    if args.worker:
        result = run_ours(args) if args.worker == "ours" else run_trl(args)
        print(json.dumps(result))
        return
    from interleave_bench.models.tiny_text import build_tiny_text

    with tempfile.TemporaryDirectory() as tmp:
        args.work = tmp
        args.model = str(
            build_tiny_text(Path(tmp) / "model", hidden=args.hidden, layers=args.layers)
        )
        print(
            f"tiny Llama hidden {args.hidden} x {args.layers} layers; {args.prompts} prompts x "
            f"G={args.group}, {args.tokens} new tokens, {args.steps} steps (first untimed), "
            f"lr {args.lr}, beta {args.beta}, {args.threads} threads"
        )
        for setting in args.checkpointing:
            args.gc = int(setting == "on")
            results = {}
            for which in ("trl", "ours"):
                r = child(which, args)
                secs = sorted(r["step_seconds"])
                r["median_step_s"] = secs[len(secs) // 2]
                results[which] = r
                print(
                    f"checkpointing {setting:3s} {which:5s} median {r['median_step_s']:.3f} s/step "
                    f"(steps {', '.join(f'{s:.3f}' for s in r['step_seconds'])}), "
                    f"peak RSS {r['peak_rss_mb']:.0f} MB"
                    + (f", peak GPU {r['peak_gpu_mb']:.0f} MB" if "peak_gpu_mb" in r else "")
                )
            t = results["ours"]["median_step_s"] / results["trl"]["median_step_s"]
            m = results["ours"]["peak_rss_mb"] / results["trl"]["peak_rss_mb"]
            print(
                f"checkpointing {setting}: ratio ours/TRL time {t:.2f}x, peak RSS {m:.2f}x "
                "(target <= 1.0 on both)"
            )


if __name__ == "__main__":
    main()
