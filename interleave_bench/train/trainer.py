"""A compact GRPO loop for Janus and Emu3: rollouts through the eval decode loop, scorer rewards, grpo_loss.

Each step: pick ``prompts_per_step`` samples (deterministically from the seed and step), draw
``group_size`` rollouts per prompt (``train.rollout``), score them with a ``NativeReward`` over a
scorer (default ``StructureScorer(expected="IT", prefer_gold=False)``: exactly one image followed
by text), turn rewards into group-normalised outcome advantages (plus optional process
advantages, one reward per modality segment), then ``updates_per_rollout`` AdamW updates of
``grpo_loss`` with log-probs recomputed in one forward pass per rollout
(``train.policy_logprobs``) and a frozen reference (a deep copy of the initial model) for the KL.

Reproducibility and resume: prompt choice and rollout generators derive from ``(seed, step)``
only, and a checkpoint holds the model and optimizer states, the step, the RNG states and the
byte offset of the JSONL log. ``resume=True`` loads the latest checkpoint, cuts the log back to
that offset and carries on, so the later records equal those of an uninterrupted run.

Not done here: LoRA/QLoRA (peft), accelerate/multi-process, dynamic sampling refill.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..media import ImageStore
from ..models.base import GenerationSettings, detect_family
from ..models.janus import JanusAdapter, janus_token_ids
from ..models.prompts import build_prompt
from ..scorers.structure import StructureScorer, structure_of
from ..types import Sample
from .grpo import grpo_loss, outcome_advantages, process_advantages
from .policy_logprobs import batch_logprobs, batch_mask, old_logprobs
from .rewards import NativeReward
from .rollout import IMAGE_LOGPROBS, Rollout, rollout, rollout_predictions

LOG_NAME = "log.jsonl"


@dataclass
class TrainConfig:
    """Everything that decides a run (saved next to its checkpoints)."""

    model: str
    output_dir: str
    benchmark: str = "mmie:sample"
    max_samples: int | None = None  # use only the first N samples as the prompt pool
    steps: int = 20
    prompts_per_step: int = 2
    group_size: int = 4
    lr: float = 2e-3
    weight_decay: float = 0.0
    beta: float = 0.04
    eps_low: float = 0.2
    eps_high: float = 0.2
    loss_type: str = "grpo"
    importance: str = "token"
    scale_rewards: str = "group"
    image_logprob: str = "cond"  # "cfg" | "cond": which image log-probs form the ratio
    updates_per_rollout: int = 1
    grad_accum: int = 1  # micro-batches per optimizer update (split over completions)
    max_grad_norm: float | None = 1.0
    process_weight: float = 0.0  # > 0: add process advantages (per-segment structure rewards)
    expected: str = "IT"
    checkpoint_every: int = 0  # 0 = only at the end
    seed: int = 0
    device: str = "cpu"
    generation: dict[str, Any] = field(
        default_factory=lambda: {
            "max_new_tokens": 24,
            "temperature": 1.0,
            "top_p": 1.0,
            "cfg_scale": 5.0,
            "max_images": 2,
        }
    )

    def settings(self) -> GenerationSettings:
        return GenerationSettings(**{**self.generation, "seed": self.seed})


@dataclass
class TrainResult:
    records: list[dict[str, Any]]
    log_path: Path
    seconds: float


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    m = sum(values) / len(values)
    var = sum((v - m) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return m, math.sqrt(var)


class GRPOTrainer:
    """GRPO with scorer rewards (Janus or Emu3, from the checkpoint's ``model_type``). ``reward`` overrides the default structure reward."""

    def __init__(
        self,
        config: TrainConfig,
        *,
        reward: NativeReward | None = None,
        samples: Sequence[Sample] | None = None,
        console: Any = None,
    ) -> None:
        if config.image_logprob not in IMAGE_LOGPROBS:
            raise ValueError(f"image_logprob must be one of {IMAGE_LOGPROBS}")
        self.cfg = config
        self.out = Path(config.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.log_path = self.out / LOG_NAME
        self.store = ImageStore(self.out / "images")
        self.family = detect_family(config.model)
        if self.family == "emu3":
            from ..models.emu3 import Emu3Adapter

            self.adapter: Any = Emu3Adapter(config.model, device=config.device, dtype="float32")
        else:
            self.adapter = JanusAdapter(config.model, device=config.device, dtype="float32")
        self.model, self.processor = self.adapter.model, self.adapter.processor
        self.model.requires_grad_(True)
        # the reference is the *initial* policy, also after a resume
        self.ref = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.ref_adapter = copy.copy(self.adapter)
        self.ref_adapter.model = self.ref
        self.optimizer = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=config.lr,
            weight_decay=config.weight_decay,
        )
        if self.family == "emu3":
            vocab = self.adapter.vocab
            self.structural = frozenset({vocab.boi, *vocab.eos})
        else:
            ids = janus_token_ids(self.model, self.processor)
            self.structural = frozenset({ids.boi, ids.eoi, *ids.eos})
        self.scorer = StructureScorer(expected=config.expected, prefer_gold=False)
        self.reward = reward or NativeReward(self.scorer)
        if samples is None:
            from .. import load_benchmark

            samples = load_benchmark(config.benchmark).samples
        self.samples = list(samples)[: config.max_samples]
        if not self.samples:
            raise ValueError(f"{config.benchmark}: no samples to train on")
        self.console = console
        self.step = 0

    # ------------------------------------------------------------------ checkpoints

    def checkpoint_dir(self, step: int) -> Path:
        return self.out / f"checkpoint-{step:06d}"

    def save_checkpoint(self) -> Path:
        """Model + optimizer + step + RNG states + the log's byte offset, in one file."""
        path = self.checkpoint_dir(self.step)
        path.mkdir(parents=True, exist_ok=True)
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
            "log_offset": self.log_path.stat().st_size if self.log_path.exists() else 0,
            "config": asdict(self.cfg),
        }
        tmp = path / "state.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(path / "state.pt")
        return path

    def latest_checkpoint(self) -> Path | None:
        found = sorted(p for p in self.out.glob("checkpoint-*") if (p / "state.pt").is_file())
        return found[-1] if found else None

    def load_checkpoint(self, path: Path) -> None:
        state = torch.load(path / "state.pt", weights_only=False, map_location=self.model.device)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        with open(self.log_path, "a+b") as f:  # drop records written after the checkpoint
            f.truncate(int(state["log_offset"]))

    # ------------------------------------------------------------------ one step

    def _prompt_indices(self, step: int) -> list[int]:
        rng = random.Random(self.cfg.seed * 7919 + step)
        n = len(self.samples)
        k = self.cfg.prompts_per_step
        return rng.sample(range(n), k) if k <= n else [rng.randrange(n) for _ in range(k)]

    def _rewards(self, picked: list[Sample], rolls: list[Rollout]) -> list[float | None]:
        samples, preds = rollout_predictions(rolls, picked, self.cfg.model)
        return self.reward(samples, preds)

    def _advantages(
        self, rolls: list[Rollout], rewards: list[float | None], width: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        adv, stats = outcome_advantages(
            rewards, self.cfg.group_size, scale_rewards=self.cfg.scale_rewards
        )
        if self.cfg.process_weight <= 0:
            return adv, stats
        # one structure reward per segment: the prefix up to and including that segment
        steps, spans = [], []
        for r in rolls:
            segs = r.trace.segments
            vals: list[float | None] = []
            letters = [_letter(r.trace.token_ids, seg, self.structural) for seg in segs]
            for k in range(len(segs)):
                vals.append(_prefix_reward("".join(letters[: k + 1]), self.scorer.expected or ""))
            steps.append(vals)
            spans.append(segs)
        proc = process_advantages(steps, spans, self.cfg.group_size, width)
        return adv[:, None] + self.cfg.process_weight * proc, stats

    def train_step(self) -> dict[str, Any]:
        cfg, settings = self.cfg, self.cfg.settings()
        t0 = time.perf_counter()
        idx = self._prompt_indices(self.step)
        picked = [self.samples[i] for i in idx]
        prompts = [build_prompt(s) for s in picked]
        rolls = rollout(
            self.adapter,
            prompts,
            settings,
            cfg.group_size,
            self.store,
            seed=cfg.seed * 100_003 + self.step,
        )
        t_roll = time.perf_counter() - t0
        rewards = self._rewards(picked, rolls)
        mask = batch_mask(rolls)
        adv, adv_stats = self._advantages(rolls, rewards, mask.shape[1])
        old = old_logprobs(rolls, cfg.image_logprob)  # type: ignore[arg-type]
        with torch.no_grad():
            ref = batch_logprobs(self.ref_adapter, rolls, settings, image_logprob=cfg.image_logprob)  # type: ignore[arg-type]
        self.model.train()
        metrics: dict[str, list[float]] = {}
        b = len(rolls)
        chunks = [list(range(b))[i :: cfg.grad_accum] for i in range(cfg.grad_accum)]
        chunks = [c for c in chunks if c]
        n_active = float(mask.sum())
        for _ in range(cfg.updates_per_rollout):
            self.optimizer.zero_grad(set_to_none=True)
            for c in chunks:
                logp = batch_logprobs(
                    self.adapter,
                    [rolls[i] for i in c],
                    settings,
                    image_logprob=cfg.image_logprob,  # type: ignore[arg-type]
                )
                w = logp.shape[1]
                loss, m = grpo_loss(
                    logp,
                    old[c, :w],
                    ref[c, :w],
                    adv[c, :w] if adv.dim() == 2 else adv[c],
                    mask[c, :w],
                    eps_low=cfg.eps_low,
                    eps_high=cfg.eps_high,
                    beta=cfg.beta,
                    loss_type=cfg.loss_type,  # type: ignore[arg-type]
                    importance=cfg.importance,  # type: ignore[arg-type]
                    num_items_in_batch=n_active if cfg.loss_type == "dapo" else None,
                )
                # dapo already divides by the whole batch's token count: sum micro-batches;
                # the others are means over their micro-batch: weight by its share
                (loss if cfg.loss_type == "dapo" else loss * len(c) / b).backward()
                m["loss"] = float(loss.detach())
                for k, v in m.items():
                    metrics.setdefault(k, []).append(float(v))
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
            self.optimizer.step()
        self.model.eval()
        self.step += 1

        ok = [r for r in rewards if r is not None]
        mean, std = _mean_std(ok)
        name = getattr(self.reward, "__name__", "reward")
        structures = [structure_of(r.output) for r in rolls]
        record: dict[str, Any] = {
            "step": self.step,
            "reward_mean": mean,
            "reward_std": std,
            f"reward/{name}/mean": mean,
            f"reward/{name}/std": std,
            "rewards": rewards,
            "reward_none": len(rewards) - len(ok),
            "frac_zero_spread": float(adv_stats.get("frac_zero_spread_groups", math.nan)),
            "text_tokens": sum(r.n_text_tokens for r in rolls),
            "image_tokens": sum(r.n_image_tokens for r in rolls),
            "structures": structures,
            "errors": sum(r.error is not None for r in rolls),
            "rollout_seconds": t_roll,
            "seconds": time.perf_counter() - t0,
        }
        for k, v in metrics.items():
            record[k] = sum(v) / len(v)
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self._print(record)
        return record

    def _print(self, rec: dict[str, Any]) -> None:
        if self.console is None:
            return
        self.console.print(
            f"[bold]step {rec['step']}[/] reward {rec['reward_mean']:.3f}±{rec['reward_std']:.3f} "
            f"kl {rec.get('kl', float('nan')):.4f} clip {rec.get('clip_frac', 0):.3f} "
            f"zero-spread {rec['frac_zero_spread']:.2f} tokens {rec['text_tokens']}t/"
            f"{rec['image_tokens']}i {rec['seconds']:.1f}s"
        )

    # ------------------------------------------------------------------ the loop

    def train(self, *, resume: bool = False, stop_after: int | None = None) -> TrainResult:
        """Run to ``config.steps`` (or ``stop_after`` steps from now, to simulate interruption).

        Without ``resume`` an existing log is replaced; with it, the latest checkpoint (if any)
        is loaded and the run continues from there.
        """
        t0 = time.perf_counter()
        if resume and (ckpt := self.latest_checkpoint()) is not None:
            self.load_checkpoint(ckpt)
        elif not resume:
            self.log_path.write_text("")
        (self.out / "config.json").write_text(json.dumps(asdict(self.cfg), indent=2))
        end = self.cfg.steps if stop_after is None else min(self.cfg.steps, self.step + stop_after)
        every = self.cfg.checkpoint_every
        while self.step < end:
            self.train_step()
            if every and self.step % every == 0:
                self.save_checkpoint()
        if self.step == self.cfg.steps and not (every and self.step % every == 0):
            self.save_checkpoint()
        return TrainResult(read_log(self.log_path), self.log_path, time.perf_counter() - t0)


def _letter(tokens: list[int], seg: tuple[str, int, int], structural: frozenset[int]) -> str:
    """ "I" for an image segment, "T" for a text one holding real text, "" for one holding only
    structure tokens (the ``<begin_of_image>`` that opens an image, the final EOS)."""
    kind, start, end = seg
    if kind == "image":
        return "I"
    return "T" if any(t not in structural for t in tokens[start:end]) else ""


def _prefix_reward(prefix: str, expected: str) -> float:
    """Per-segment (process) structure reward: 1 when the answer so far is a prefix of the
    expected structure (after collapsing text runs), else 0."""
    collapsed: list[str] = []
    for c in prefix:
        if not (c == "T" and collapsed and collapsed[-1] == "T"):
            collapsed.append(c)
    return 1.0 if expected.startswith("".join(collapsed)) else 0.0


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def train(config: TrainConfig, *, resume: bool = False, console: Any = None) -> TrainResult:
    """Build a trainer from ``config`` and run it (``resume`` continues the latest checkpoint)."""
    return GRPOTrainer(config, console=console).train(resume=resume)
