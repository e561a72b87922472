"""``TrainerBase``: what every trainer shares, so GRPO and warm-up only write their ``train_step``.

It owns the config, the processes (``train.distributed``: rank, gradient averaging, DeepSpeed),
peft (LoRA / QLoRA, ``train.peft_setup``), the optimizer or DeepSpeed engine, checkpoints with
RNG states and resume (``train.checkpoints``), the JSONL step log (process 0 appends and flushes
each record), the progress bar (``train.progress``), the trackers of ``report_to``
(``train.trackers``), the output folder's guard (``train.output_dir``) and the final save. A subclass builds its adapter, calls ``setup_policy`` then (after anything that must
see the initial weights, such as a frozen reference) ``setup_optimizer``, and implements
``train_step`` with ``backward`` and ``optimizer_step``.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..models.loading import load_adapter
from ..runs import JsonlLog
from .checkpoints import checkpoint_dir, latest_checkpoint, load_state, read_log, save_state
from .config import BaseTrainConfig
from .distributed import Dist
from .output_dir import FINAL, LOG_NAME, contents, refusal
from .peft_setup import apply_lora, quantization_kwargs, trainable_state
from .progress import StepProgress
from .trackers import Trackers, check_available

__all__ = ["FINAL", "LOG_NAME", "TrainerBase"]


class TrainerBase:
    """Processes, peft, optimizer/engine, checkpoints, resume, step log and final save."""

    config_name = "config.json"  # the run's config, next to its log

    def __init__(self, config: BaseTrainConfig, *, console: Any = None) -> None:
        self.cfg = config
        check_available(config.report_to)  # before a model loads
        self.dist = Dist(config.device)
        self.out = Path(config.output_dir)
        # what the folder held before this trainer wrote anything (run() refuses it unless resumed)
        self.preexisting = contents(self.out) if self.dist.main else []
        self.out.mkdir(parents=True, exist_ok=True)
        self.log_path = self.out / LOG_NAME
        self.console = console if self.dist.main else None
        self._log: JsonlLog | None = None
        self.progress: StepProgress | None = None
        self.trackers: Trackers | None = None
        self.peft: Any = None
        self.engine: Any = None
        self.step = 0

    # ------------------------------------------------------------------ model and optimizer

    def load_policy(self) -> Any:
        """The adapter of ``cfg.model``'s family on this process's device, quantized if asked."""
        cfg = self.cfg
        kwargs = quantization_kwargs(cfg.quantization, self.dist.device, cfg.lora is not None)
        return load_adapter(cfg.model, device=self.dist.device, dtype=cfg.dtype, load_kwargs=kwargs)

    def setup_policy(self, adapter: Any) -> None:
        """Adopt ``adapter`` as the policy: LoRA adapters (only they train) or every weight."""
        self.adapter = adapter
        self.model, self.processor = adapter.model, adapter.processor
        if self.cfg.lora is not None:
            quantized = bool(self.cfg.quantization)
            with torch.random.fork_rng(devices=[]):  # adapters start from the seed, not from
                torch.manual_seed(self.cfg.seed)  # whatever ran before in the process
                self.peft = apply_lora(self.model, self.cfg.lora, quantized=quantized)
        else:
            self.model.requires_grad_(True)
        self.freeze()
        if self.cfg.gradient_checkpointing:
            enable_gradient_checkpointing(self.model)

    def freeze(self) -> None:
        """Hook: switch off gradients of parts that must not train (after peft)."""

    def setup_optimizer(self) -> None:
        """AdamW over the trainable parameters; under DeepSpeed the engine takes both over."""
        cfg = self.cfg
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer: Any = torch.optim.AdamW(
            self.params, lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        if self.dist.deepspeed:
            if cfg.grad_accum > 1 and self.dist.main:
                warnings.warn(
                    f"grad_accum={cfg.grad_accum} is not used under DeepSpeed: each update is "
                    "one backward over all of the process's examples (same gradient, more "
                    "memory); lower the batch if it does not fit",
                    stacklevel=3,
                )
            self.engine, self.optimizer = self.dist.prepare_deepspeed(
                self.model, self.optimizer, cfg.max_grad_norm
            )

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of a loss already scaled to its share of the step (DeepSpeed: the engine
        also averages, clips and steps here, so call it once per update)."""
        if self.engine is not None:
            self.dist.acc.backward(loss)
        else:
            loss.backward()

    def optimizer_step(self) -> float | None:
        """Average gradients over processes, clip to ``max_grad_norm`` and step; the gradient
        norm before clipping (None under DeepSpeed, whose engine stepped in ``backward``)."""
        if self.engine is not None:
            return None
        self.dist.average_gradients(self.params)
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm or math.inf)
        self.optimizer.step()
        return float(norm)

    # ------------------------------------------------------------------ checkpoints

    def checkpoint_dir(self, step: int) -> Path:
        return checkpoint_dir(self.out, step)

    def latest_checkpoint(self) -> Path | None:
        return latest_checkpoint(self.out)

    def save_checkpoint(self) -> Path:
        """Trainable weights + optimizer + step + RNG states + the log's byte offset, one file
        (written by process 0; every process waits for it)."""
        path = self.checkpoint_dir(self.step)
        if self.engine is not None:  # partitioned optimizer state: every rank writes its part
            self.engine.save_checkpoint(str(path / "deepspeed"))
        if self.dist.main:
            save_state(
                path,
                model_state=trainable_state(self.model, self.peft),
                optimizer=None if self.engine is not None else self.optimizer,
                step=self.step,
                log_path=self.log_path,
                config=asdict(self.cfg),
            )
        self.dist.barrier()
        return path

    def load_checkpoint(self, path: Path) -> None:
        self._close_log()  # the log is cut back below
        log = self.log_path if self.dist.main else None
        if self.engine is not None:
            self.engine.load_checkpoint(str(path / "deepspeed"))
        self.step = load_state(
            path, self.model, self.optimizer, log_path=log, strict=self.peft is None
        )
        self.dist.barrier()

    def save_final(self) -> Path:
        """``output_dir/final``: the trained model (LoRA merged in) and its processor, loadable by
        ``ibench eval --model``; a quantized base keeps only the adapter."""
        dest = self.out / FINAL
        if self.dist.main:
            if self.peft is not None and self.cfg.quantization:
                self.peft.save_pretrained(dest / "adapter")
            else:
                model = self.model
                if self.peft is not None:
                    model = self.peft.merge_and_unload()
                    self.model = self.adapter.model = model
                model.save_pretrained(dest)
                self.processor.save_pretrained(dest)
        self.dist.barrier()
        return dest

    # ------------------------------------------------------------------ the step log

    def write_record(self, record: dict[str, Any]) -> None:
        """Append the step's record to the log (flushed: a kill loses at most this line), print
        it, move the progress bar and send its numbers to the trackers (process 0 only)."""
        if not self.dist.main:
            return
        if self._log is None:
            self._log = JsonlLog(self.log_path)
        self._log.append(record)
        if self.console is not None:
            self.console.print(self.console_line(record))
        if self.progress is not None:
            self.progress.update(record)
        if self.trackers is not None:
            self.trackers.log(record)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def console_line(self, record: dict[str, Any]) -> str:
        return json.dumps(record)

    def progress_metrics(self, record: dict[str, Any]) -> str:
        """The step's key numbers on the progress bar."""
        return ""

    # ------------------------------------------------------------------ the loop

    def train_step(self) -> dict[str, Any]:
        raise NotImplementedError

    def wants_final(self) -> bool:
        """Whether the end of the run writes ``output_dir/final``."""
        return True

    def run(self, *, resume: bool = False, stop_after: int | None = None) -> tuple[Any, float]:
        """Run to ``config.steps`` (or ``stop_after`` steps from now, to simulate interruption).

        Without ``resume`` the output folder must have been empty when this trainer was made
        (``output_dir.prepare_output_dir`` clears one on request) and the log starts empty; with
        it the latest checkpoint is loaded and the run continues from there (no checkpoint yet:
        from the start). Returns the final folder (None when the run stopped early or saves none)
        and the seconds taken.
        """
        t0 = time.perf_counter()
        if self.dist.main and not resume and self.preexisting:
            raise refusal(self.out, self.preexisting)
        ckpt = self.latest_checkpoint() if resume else None
        if ckpt is not None:
            self.load_checkpoint(ckpt)
        elif self.dist.main:
            self._close_log()
            self.log_path.write_text("")
        if self.dist.main:
            (self.out / self.config_name).write_text(json.dumps(asdict(self.cfg), indent=2))
            self.trackers = Trackers(self.cfg.report_to, self.out, self.out.name, asdict(self.cfg))
            if self.console is not None:
                self.progress = StepProgress(
                    self.console, self.cfg.steps, self.step, self.progress_metrics
                )
        self.dist.barrier()
        end = self.cfg.steps if stop_after is None else min(self.cfg.steps, self.step + stop_after)
        every = self.cfg.checkpoint_every
        try:
            while self.step < end:
                self.train_step()
                if every and self.step % every == 0:
                    self.save_checkpoint()
        finally:
            self._end_session()
        final = None
        if self.step == self.cfg.steps:
            if not (every and self.step % every == 0):
                self.save_checkpoint()
            if self.wants_final():
                final = self.save_final()
        return final, time.perf_counter() - t0

    def _end_session(self) -> None:
        """Close the log, the bar and the trackers (also when a step fails)."""
        self._close_log()
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        if self.trackers is not None:
            self.trackers.finish()
            self.trackers = None

    def records(self) -> list[dict[str, Any]]:
        return read_log(self.log_path)


def enable_gradient_checkpointing(model: Any) -> None:
    """Checkpoint every decoder layer of ``model`` (a transformers or peft model). It only acts
    in train mode with grad enabled, so rollouts and a frozen reference (eval mode) are
    unaffected. Non-reentrant checkpointing: gradients reach LoRA adapters even though the
    frozen embeddings' outputs need no grad, and no KV cache is built in a training forward."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ValueError(f"{type(model).__name__} does not support gradient_checkpointing")
    kwargs = {"use_reentrant": False}
    enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5.2x
    if enable is not None:
        enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def train_checkpointed_layers(model: Any) -> None:
    """Put only the checkpointed layers in train mode, where checkpointing acts. With dropout
    disabled that is their only effect, and the rest keeps its mode: Emu3's VQ encoder has
    BatchNorm, which train mode would switch to batch statistics."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    for module in model.modules():
        if isinstance(module, GradientCheckpointingLayer) and module.gradient_checkpointing:
            module.train()
