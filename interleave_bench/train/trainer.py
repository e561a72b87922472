"""A compact GRPO loop for Janus, Emu3 and text LMs: rollouts through the eval decode loops,
scorer rewards, ``grpo_loss``.

Each step: pick ``prompts_per_step`` samples (deterministically from the seed and step; each
process of a data-parallel run takes its slice, ``train.distributed``), draw ``group_size``
rollouts per prompt (``train.rollout``), score them with the recipe's reward (``train.
recipe_rewards``; default the structure scorer asking for ``expected``), optionally drop groups
without reward spread and refill them with new prompts (dynamic sampling), turn rewards into
group-normalised outcome advantages (plus optional process advantages, one reward per modality
segment), then ``updates_per_rollout`` AdamW updates of ``grpo_loss`` with log-probs recomputed
by ``train.policy_logprobs`` and a frozen reference for the KL (none when ``beta == 0``; the base
model with adapters off under LoRA, ``train.peft_setup``).

Reproducibility and resume: prompt choice and rollout generators derive from ``(seed, step)``
only, and a checkpoint holds the trainable weights, the optimizer state, the step, the RNG
states and the byte offset of the JSONL log. ``resume=True`` loads the latest checkpoint, cuts the
log back to that offset and carries on, so the later records equal those of an uninterrupted run.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..media import ImageStore
from ..models.families import family_of
from ..models.prompts import build_prompt
from ..scorers.format_fidelity import attach_stream
from ..scorers.structure import StructureScorer, structure_of
from ..types import Sample
from .base import LOG_NAME, TrainerBase, train_checkpointed_layers
from .checkpoints import read_log
from .config import TrainConfig
from .distributed import main_process
from .grpo import dynamic_sampling_mask, grpo_loss, outcome_advantages
from .output_dir import prepare_output_dir
from .peft_setup import Reference
from .policy_logprobs import batch_logprobs, batch_mask, old_logprobs
from .process import ProcessSupervision
from .progress import grpo_metrics
from .recipe_rewards import build_reward, failure_fields, reward_failures, stream_spec
from .rollout import IMAGE_LOGPROBS, Rollout, rollout, rollout_predictions
from .step_log import console_line, image_logprob_sums, merge_record

__all__ = ["LOG_NAME", "GRPOTrainer", "TrainConfig", "TrainResult", "read_log", "train"]


@dataclass
class TrainResult:
    records: list[dict[str, Any]]
    log_path: Path
    seconds: float


class GRPOTrainer(TrainerBase):
    """GRPO with scorer rewards (``TrainerBase`` does processes, peft, checkpoints, the log). ``reward`` (a ``NativeReward``, a ``HybridReward`` or any
    ``(samples, predictions) -> rewards`` callable) overrides the recipe's."""

    def __init__(
        self,
        config: TrainConfig,
        *,
        reward: Any = None,
        samples: Sequence[Sample] | None = None,
        console: Any = None,
    ) -> None:
        if config.image_logprob not in IMAGE_LOGPROBS:
            raise ValueError(f"image_logprob must be one of {IMAGE_LOGPROBS}")
        super().__init__(config, console=console)
        self.cfg: TrainConfig = config
        self.store = ImageStore(self.out / "images")
        self.setup_policy(self.load_policy())
        if config.disable_dropout:  # before the reference copies the model
            disable_dropout(self.model)
        self.family = self.adapter.family
        self.max_completion_length = max_completion_length(self.adapter, config.settings())
        self.stream_spec = stream_spec(self.adapter, config.settings())
        # the reference is the *initial* policy, also after a resume
        self.ref = Reference(self.adapter, self.peft) if config.beta > 0 else None
        self.setup_optimizer()
        self.structural = self._structural_tokens()
        self.scorer = StructureScorer(expected=config.expected, prefer_gold=False)
        self.reward = reward or build_reward(config, self.scorer)
        if samples is None:
            from .. import load_benchmark

            samples = load_benchmark(config.benchmark).samples
        self.samples = list(samples)[: config.max_samples]
        if not self.samples:
            raise ValueError(f"{config.benchmark}: no samples to train on")

    def _structural_tokens(self) -> frozenset[int]:
        return frozenset(family_of(self.adapter).require("structural_token_ids")(self.adapter))

    # ------------------------------------------------------------------ rollouts and rewards

    def _prompt_indices(self, step: int, round_: int = 0) -> list[int]:
        rng = random.Random(self.cfg.seed * 7919 + step + 104_729 * round_)
        n = len(self.samples)
        k = self.cfg.prompts_per_step
        return rng.sample(range(n), k) if k <= n else [rng.randrange(n) for _ in range(k)]

    def _score(self, picked: list[Sample], rolls: list[Rollout]) -> tuple[list, dict[str, Any]]:
        samples, preds = rollout_predictions(rolls, picked, self.cfg.model)
        if self.stream_spec is not None:  # format_fidelity checks the emitted tokens
            for r, p in zip(rolls, preds, strict=True):
                attach_stream(p, self.stream_spec.of(r.trace.token_ids, r.trace.image_mask))
        result = self.reward(samples, preds)
        failures = reward_failures(self.reward)
        if hasattr(result, "total"):  # HybridReward: per-component values for the log
            return list(result.total), {**result.metrics(), "reward_failures": failures}
        return list(result), {"reward_failures": failures}

    def _collect(self, step: int) -> tuple[list[Sample], list[Rollout], list, dict[str, Any]]:
        """This process's groups for the step: rollouts, rewards and reward metrics. With dynamic
        sampling, zero-spread groups are replaced by groups of freshly drawn prompts (up to
        ``max_refill_rounds`` rounds) and the log says how many were dropped."""
        cfg, settings, g = self.cfg, self.cfg.settings(), self.cfg.group_size
        picked_all, rolls_all, rewards_all = [], [], []
        metrics: dict[str, Any] = {}
        need = cfg.prompts_per_step // self.dist.world
        dropped = rounds = 0
        errors: list[str] = []
        while True:
            idx, offset = self.dist.shard(self._prompt_indices(step, rounds))
            picked = [self.samples[i] for i in idx]
            rolls = rollout(
                self.adapter,
                [build_prompt(s, unknown="as_is") for s in picked],
                settings,
                g,
                self.store,
                seed=cfg.seed * 100_003 + step + 7_919 * rounds,
                prompt_offset=offset,
            )
            rewards, m = self._score(picked, rolls)
            if rounds == 0:
                metrics = m
            else:  # every round's failures count
                seen = metrics["reward_failures"]
                for reason, n in m["reward_failures"].items():
                    seen[reason] = seen.get(reason, 0) + n
            errors.extend(r.error for r in rolls if r.error is not None)
            spread = dynamic_sampling_mask(rewards, g).tolist() if cfg.dynamic_sampling else []
            for i, sample in enumerate(picked):
                group = rewards[i * g : (i + 1) * g]
                if cfg.dynamic_sampling and not spread[i]:
                    dropped += 1
                    continue
                if len(picked_all) < need:
                    for r in rolls[i * g : (i + 1) * g]:
                        r.prompt_index = len(picked_all)
                    picked_all.append(sample)
                    rolls_all.extend(rolls[i * g : (i + 1) * g])
                    rewards_all.extend(group)
            rounds += 1
            if not cfg.dynamic_sampling or len(picked_all) >= need:
                break
            if rounds > cfg.max_refill_rounds:
                if not picked_all:  # nothing with spread: train on the last draw (zero advantage)
                    picked_all, rolls_all, rewards_all = picked, rolls, rewards
                break
        metrics.update({"groups_dropped": dropped, "sampling_rounds": rounds})
        metrics["rollout_errors"] = errors
        return picked_all, rolls_all, rewards_all, metrics

    def _advantages(
        self,
        rolls: list[Rollout],
        rewards: list[float | None],
        width: int,
        picked: list[Sample],
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Outcome advantages, process advantages (``train.process.ProcessSupervision``) or
        ``outcome + process_weight * process``, as the recipe's ``advantage`` says."""
        adv, stats = outcome_advantages(
            rewards, self.cfg.group_size, scale_rewards=self.cfg.scale_rewards
        )
        if self.cfg.advantage == "outcome":
            return adv, stats
        if getattr(self, "process", None) is None:
            self.process = ProcessSupervision(self.cfg, self.adapter, self.reward, self.structural)
        proc, process_stats = self.process.advantages(picked, rolls, width)
        stats.update(process_stats)
        if self.cfg.advantage == "process":
            return proc, stats
        return adv[:, None] + self.cfg.process_weight * proc, stats

    # ------------------------------------------------------------------ one step

    def train_step(self) -> dict[str, Any]:
        cfg, settings = self.cfg, self.cfg.settings()
        t0 = time.perf_counter()
        picked, rolls, rewards, reward_metrics = self._collect(self.step)
        t_roll = time.perf_counter() - t0
        mask = batch_mask(rolls)
        adv, adv_stats = self._advantages(rolls, rewards, mask.shape[1], picked)
        reward_metrics.update({k: v for k, v in adv_stats.items() if k.startswith("reward/")})
        for why, n in getattr(getattr(self, "process", None), "failures", {}).items():
            failed = reward_metrics.setdefault("reward_failures", {})  # step judges fail too
            failed[why] = failed.get(why, 0) + n
        dev = self.model.device
        mask, adv = mask.to(dev), adv.to(dev)
        old = old_logprobs(rolls, cfg.image_logprob, dev)  # type: ignore[arg-type]
        ref = None
        if self.ref is not None:
            with torch.no_grad(), self.ref.active() as ref_adapter:
                ref = batch_logprobs(ref_adapter, rolls, settings, image_logprob=cfg.image_logprob)  # type: ignore[arg-type]
        # the rollout sampled in eval mode and the reference is in eval mode: with dropout
        # disabled the policy forward runs in that same mode (train mode only to keep dropout)
        self.model.train(not cfg.disable_dropout)
        if cfg.gradient_checkpointing:  # it acts in train mode only
            train_checkpointed_layers(self.model)
        metrics: dict[str, list[float]] = {}
        b = len(rolls)
        n_chunks = 1 if self.engine is not None else cfg.grad_accum  # DeepSpeed: one backward
        chunks = [c for c in (list(range(b))[i::n_chunks] for i in range(n_chunks)) if c]
        n_active = self.dist.sum(float(mask.sum()))
        # every rollout of every process weighs the same, also when dynamic sampling left the
        # processes with different numbers of groups (gradients are then averaged over processes)
        share = self.dist.world / max(1.0, self.dist.sum(float(b)))
        entropy_sum = 0.0
        for update in range(cfg.updates_per_rollout):
            self.optimizer.zero_grad(set_to_none=True)
            for c in chunks:
                logp, ent = batch_logprobs(
                    self.adapter,
                    [rolls[i] for i in c],
                    settings,
                    image_logprob=cfg.image_logprob,  # type: ignore[arg-type]
                    with_entropy=True,
                )
                w = logp.shape[1]
                if update == 0:
                    entropy_sum += float((ent * mask[c, :w]).sum())
                loss, m = grpo_loss(
                    logp,
                    old[c, :w],
                    None if ref is None else ref[c, :w],
                    adv[c, :w] if adv.dim() == 2 else adv[c],
                    mask[c, :w],
                    eps_low=cfg.eps_low,
                    eps_high=cfg.eps_high,
                    beta=cfg.beta,
                    loss_type=cfg.loss_type,  # type: ignore[arg-type]
                    importance=cfg.importance,  # type: ignore[arg-type]
                    num_items_in_batch=n_active if cfg.loss_type == "dapo" else None,
                    num_processes=self.dist.world,
                    max_completion_length=max(self.max_completion_length, w),
                )
                # dapo already divides by the whole batch's token count: sum micro-batches;
                # the others are means over their micro-batch: weight by its share of all
                if loss.requires_grad:  # False when no rollout of the chunk has a sampled token
                    self.backward(loss if cfg.loss_type == "dapo" else loss * len(c) * share)
                m["loss"] = float(loss.detach())
                for k, v in m.items():
                    metrics.setdefault(k, []).append(float(v))
            self.optimizer_step()  # DeepSpeed: nothing, the engine stepped inside backward
        self.model.eval()
        self.step += 1
        local = {
            "rewards": rewards,
            "structures": [structure_of(r.output) for r in rolls],
            "text_tokens": sum(r.n_text_tokens for r in rolls),
            "image_tokens": sum(r.n_image_tokens for r in rolls),
            "errors": sum(r.error is not None for r in rolls),
            "entropy_sum": entropy_sum,
            "image_logp": image_logprob_sums(rolls),
            "active": float(mask.sum()),
            "zero_spread": float(adv_stats.get("frac_zero_spread_groups", math.nan)),
            "metrics": {k: sum(v) / len(v) for k, v in metrics.items()},
            "reward_metrics": reward_metrics,
        }
        name = getattr(self.reward, "__name__", "reward")
        parts = self.dist.gather(local)
        record = merge_record(self.step, name, parts, t0, t_roll)
        record.update(failure_fields([p["reward_metrics"] for p in parts]))
        self.write_record(record)
        return record

    def console_line(self, record: dict[str, Any]) -> str:
        return console_line(record)

    def progress_metrics(self, record: dict[str, Any]) -> str:
        return grpo_metrics(record)

    # ------------------------------------------------------------------ the loop

    def wants_final(self) -> bool:
        return self.cfg.save_final

    def train(self, *, resume: bool = False, stop_after: int | None = None) -> TrainResult:
        """Run to ``config.steps`` (or ``stop_after`` steps from now, to simulate interruption);
        ``resume`` continues from the latest checkpoint (``TrainerBase.run``)."""
        _, seconds = self.run(resume=resume, stop_after=stop_after)
        return TrainResult(self.records(), self.log_path, seconds)


def disable_dropout(model: torch.nn.Module) -> None:
    """Zero every dropout of ``model``: ``nn.Dropout`` modules (LoRA's too) and the float
    ``*dropout`` attributes attention modules read directly (Emu3's ``attention_dropout``)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name, value in list(vars(module).items()):
            if name.endswith("dropout") and isinstance(value, float):
                setattr(module, name, 0.0)
    for config in _configs(getattr(model, "config", None)):
        for name, value in list(vars(config).items()):
            if name.endswith("dropout") and isinstance(value, float):
                setattr(config, name, 0.0)


def _configs(config: Any) -> list[Any]:
    """A model config and its sub-configs (text, vision, VQ), for ``disable_dropout``."""
    if config is None:
        return []
    found = [config]
    for value in vars(config).values():
        if hasattr(value, "to_dict") and hasattr(value, "model_type"):
            found.extend(_configs(value))
    return found


def max_completion_length(adapter: Any, settings: Any) -> int:
    """The longest completion a rollout can produce, image tokens included: dr_grpo's constant.

    Janus counts ``max_new_tokens`` in text tokens (``<begin_of_image>`` included) and adds each
    image's ``num_image_tokens`` codes plus its ``<end_of_image>``; Emu3's grammar and text models
    count every generated token in ``max_new_tokens``.
    """
    limit = int(settings.max_new_tokens)
    if getattr(adapter, "family", None) == "janus":
        per_image = int(adapter.model.config.vision_config.num_image_tokens) + 1
        limit += max(0, int(settings.max_images)) * per_image
    return limit


def train(
    config: TrainConfig, *, resume: bool = False, overwrite: bool = False, console: Any = None
) -> TrainResult:
    """Build a trainer from ``config`` and run it (``resume`` continues the latest checkpoint;
    ``overwrite`` clears a non-empty output folder first, which is refused otherwise)."""
    if main_process():
        prepare_output_dir(Path(config.output_dir), resume=resume, overwrite=overwrite)
    return GRPOTrainer(config, console=console).train(resume=resume)
