"""The model adapter protocol: one interleaved decode loop per family, shared by ``ibench eval``
and by training rollouts (which also ask for per-token log-probs and a text/image mask).

An adapter takes prompts as ``Interleaved`` sequences (built from samples by
``models.prompts``), generates interleaved answers, stores every generated image in the run's
``ImageStore`` (content-addressed PNG) and returns ``Interleaved`` outputs whose image segments
reference the store. A failure on one prompt is that prompt's ``error``, never an exception that
loses the batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from ..media import ImageStore
from ..types import Interleaved

# model_type values no family can serve, and why (``models.families.detect`` says so)
UNSUPPORTED = {
    "chameleon": "Chameleon cannot emit images in transformers (its image-generation head is "
    "not released); use a Janus/Janus-Pro or Emu3 checkpoint",
    "anole": "Anole's image generation is not supported by transformers; use Janus or Emu3",
}


class ModelError(ValueError):
    """A model path or type that cannot be used, with the reason."""


@dataclass
class GenerationSettings:
    """Everything that decides an answer; recorded in every run manifest and prediction."""

    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    cfg_scale: float = 5.0  # classifier-free guidance for image tokens
    image_size: int | None = None  # None = the model's native size
    max_images: int = 3  # images per answer; further image starts are suppressed
    max_image_tokens: int | None = None  # tiny models / tests can cap an image's token budget
    seed: int = 0
    batch_size: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DecodeTrace:
    """What training needs from a rollout. ``token_ids``/``logprobs``/``image_mask`` are aligned
    over generated positions; ``logprobs`` are under the distribution actually sampled from
    (constrained, and CFG-guided for image tokens unless ``cfg_logprobs`` says otherwise);
    ``segments`` are ``(kind, start, end)`` spans over those positions."""

    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    image_mask: list[bool] = field(default_factory=list)
    segments: list[tuple[str, int, int]] = field(default_factory=list)
    cond_logprobs: list[float] | None = None  # image tokens under the conditional distribution
    cfg_logprobs: bool = True


@dataclass
class GenerationOutput:
    output: Interleaved
    error: str | None = None
    seconds: float = 0.0
    trace: DecodeTrace | None = None


def generate_each(
    prompts: list[Interleaved],
    one: Callable[[int, Interleaved], tuple[Interleaved, DecodeTrace | None]],
    *,
    return_trace: bool,
) -> list[GenerationOutput]:
    """Run ``one(index, prompt)`` per prompt, timing each; a prompt that raises becomes an
    output with ``error`` set, so one bad prompt never loses the rest of the batch."""
    outputs = []
    for i, prompt in enumerate(prompts):
        start = time.perf_counter()
        try:
            answer, trace = one(i, prompt)
        except Exception as e:  # noqa: BLE001 - recorded on that prompt's output
            outputs.append(
                GenerationOutput(
                    Interleaved(),
                    error=f"{type(e).__name__}: {e}",
                    seconds=time.perf_counter() - start,
                )
            )
            continue
        outputs.append(
            GenerationOutput(
                answer, seconds=time.perf_counter() - start, trace=trace if return_trace else None
            )
        )
    return outputs


class ModelAdapter(Protocol):
    """What ``ibench eval`` and the trainer need from a model."""

    model_id: str
    family: str

    def generate(
        self,
        prompts: list[Interleaved],
        settings: GenerationSettings,
        store: ImageStore,
        *,
        return_trace: bool = False,
    ) -> list[GenerationOutput]: ...
