"""Data parallelism through accelerate: ``torchrun`` / ``accelerate launch`` start N processes.

Each process rolls out and scores its own slice of a step's prompts (whole groups, so group
normalisation stays local), computes the loss on them, and the gradients are averaged over
processes before every optimizer step; process 0 writes the log and the checkpoints. Rollout
seeds use the global prompt index, so N processes train on exactly the answers one would.

The average is an explicit all-reduce of the flattened gradients rather than a DDP wrapper: the
log-prob code calls sub-modules (Janus's generation head, the vision encoder) that a DDP forward
would not see. Under ``accelerate launch`` with a DeepSpeed config (ZeRO 1/2) the DeepSpeed engine
does the averaging, clipping and stepping instead. Single-process runs without DeepSpeed never
import accelerate's state machinery.
"""

from __future__ import annotations

import os
from typing import Any


def main_process() -> bool:
    """Whether this is process 0 of the launch (``RANK`` set by torchrun / accelerate), known
    before any process group exists."""
    return int(os.environ.get("RANK", "0")) == 0


class Dist:
    """Rank, world size and the few collectives the trainer needs."""

    def __init__(self, device: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.acc: Any = None
        self.rank = 0
        self.device = device
        # `accelerate launch` with a DeepSpeed config sets this (also for a single process)
        self.deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true")
        if self.world > 1 or self.deepspeed:
            from accelerate import Accelerator

            self.acc = Accelerator(cpu=str(device) == "cpu")
            self.rank = self.acc.process_index
            self.world = self.acc.num_processes
            if str(device) != "cpu":
                self.device = str(self.acc.device)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list[Any], what: str = "prompts_per_step") -> tuple[list[Any], int]:
        """This process's contiguous slice and the global index of its first item (``what``
        names the setting that fixes ``len(items)``, for the error)."""
        if len(items) % self.world:
            raise ValueError(
                f"{what} ({len(items)}) must be a multiple of the process count ({self.world})"
            )
        k = len(items) // self.world
        return items[self.rank * k : (self.rank + 1) * k], self.rank * k

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order (on every process)."""
        if self.acc is None:
            return [obj]
        import torch.distributed as td

        out: list[Any] = [None] * self.world
        td.all_gather_object(out, obj)
        return out

    def sum(self, value: float) -> float:
        return float(sum(self.gather(value)))

    def average_gradients(self, params: list[Any]) -> None:
        """Mean of every gradient over processes (one flat all-reduce). A parameter that no
        process's examples reached keeps no gradient, as in one process: a zero gradient would
        still let AdamW decay it and count a step in its bias correction (a step with no input
        image, for instance, leaves the vision encoder without gradients)."""
        if self.acc is None:
            return
        import torch

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        reached = torch.tensor([float(p.grad is not None) for p in params], dtype=grads[0].dtype)
        flat = torch.cat([g.reshape(-1) for g in grads] + [reached.to(grads[0].device)])
        flat = self.acc.reduce(flat, reduction="mean")
        offset = 0
        for p, g in zip(params, grads, strict=True):
            n = g.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n
        for p, r in zip(params, flat[offset:].tolist(), strict=True):
            if r == 0.0:
                p.grad = None

    def prepare_deepspeed(self, model: Any, optimizer: Any, max_grad_norm: float | None) -> Any:
        """Hand model and optimizer to DeepSpeed (ZeRO 1/2) through accelerate. The engine then
        averages gradients, clips them (``gradient_clipping`` = ``max_grad_norm``) and steps in
        ``backward``; one optimizer step per rollout update (DeepSpeed's own gradient
        accumulation stays 1: the trainer's micro-batches are summed into one backward)."""
        ds = self.acc.state.deepspeed_plugin.deepspeed_config
        if ds.get("zero_optimization", {}).get("stage", 0) == 3:
            raise ValueError(
                "DeepSpeed ZeRO-3 is not supported (the log-prob code reads sub-modules directly)"
            )
        ds["train_micro_batch_size_per_gpu"] = 1
        ds["gradient_accumulation_steps"] = 1
        ds["gradient_clipping"] = float(max_grad_norm or 0.0)
        ds.setdefault("zero_allow_untested_optimizer", True)
        engine, optimizer = self.acc.prepare(model, optimizer)
        return engine, optimizer

    def barrier(self) -> None:
        if self.acc is not None:
            self.acc.wait_for_everyone()
