"""GRPO rollouts: G answers per prompt through the same decode loop as ``ibench eval``.

A rollout keeps what the trainer needs to rebuild and score the answer: the processor inputs of
its prompt, the interleaved output (images stored in the run's ``ImageStore``, so rewards see real
pictures) and the ``DecodeTrace`` (token ids, per-token log-probs under the sampled distribution,
the text/image mask and segment spans). Reusing the family's decode loop rather than a
training-only sampler means the policy is trained on exactly the answers that evaluation would
produce. ``settings.batch_size`` rollouts decode together (``TrainConfig.rollout_batch_size``).

Image-token log-probs: the loop samples image codes from the CFG-guided distribution and records
both the guided (``trace.logprobs``) and the conditional (``trace.cond_logprobs``) log-prob.
``image_logprob`` picks which one is the "old" log-prob of the importance ratio; the recomputation
in ``train.policy_logprobs`` must use the same choice (it does when given the same option).

Seeding: rollout ``g`` of prompt ``i`` draws from its own ``torch.Generator`` seeded from
``(seed, i, g)``, so a step's rollouts depend only on the seed and the weights (what resume needs),
not on the batch size or on which rollouts shared a batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..media import ImageStore
from ..models.base import DecodeTrace, GenerationSettings
from ..models.families import family_of
from ..models.janus import JanusAdapter, build_prompt_inputs, janus_token_ids
from ..types import Interleaved, Prediction, Sample

ImageLogprob = Literal["cfg", "cond"]
IMAGE_LOGPROBS: tuple[str, ...] = ("cfg", "cond")


@dataclass
class Rollout:
    """One sampled answer with its trace. ``prompt_index`` groups the G rollouts of a prompt."""

    prompt_index: int
    prompt: Interleaved
    prompt_inputs: Any  # the processor output the answer was decoded from (one row)
    output: Interleaved
    trace: DecodeTrace
    seed: int
    seconds: float = 0.0
    error: str | None = None
    sampled: list[bool] | None = None  # False where the loop forced the token (log-prob 0)

    def old_logprobs(self, image_logprob: ImageLogprob = "cond") -> list[float]:
        """Per-position sampling log-probs, image positions from the chosen distribution."""
        if image_logprob not in IMAGE_LOGPROBS:
            raise ValueError(
                f"image_logprob must be one of {IMAGE_LOGPROBS}, got {image_logprob!r}"
            )
        tr = self.trace
        if image_logprob == "cfg" or tr.cond_logprobs is None:
            return list(tr.logprobs)
        return [
            c if m else s
            for s, c, m in zip(tr.logprobs, tr.cond_logprobs, tr.image_mask, strict=True)
        ]

    @property
    def n_image_tokens(self) -> int:
        return sum(self.trace.image_mask)

    @property
    def n_text_tokens(self) -> int:
        return len(self.trace.image_mask) - self.n_image_tokens

    def prediction(self, sample_id: str, model_id: str) -> Prediction:
        """The rollout as the record a scorer (reward) takes."""
        return Prediction(
            sample_id=sample_id,
            model=model_id,
            output=self.output,
            timing={"seconds": self.seconds},
            error=self.error,
        )


def rollout_seed(seed: int, prompt_index: int, g: int) -> int:
    """A distinct, reproducible generator seed per (step seed, prompt, group member)."""
    return (seed * 1_000_003 + prompt_index * 1009 + g) % (2**63 - 1)


def rollout(
    adapter_or_model: Any,
    prompts: Sequence[Interleaved],
    settings: GenerationSettings,
    group_size: int,
    store: ImageStore,
    *,
    seed: int,
    processor: Any = None,
    prompt_offset: int = 0,
) -> list[Rollout]:
    """``group_size`` rollouts per prompt (prompt-major, a group's members adjacent).

    ``adapter_or_model`` is a ``JanusAdapter``/``Emu3Adapter`` or a bare Janus model (then pass
    ``processor``) or a ``TextLMAdapter``. Sampling needs ``settings.temperature > 0``; greedy
    rollouts would all be identical. A failing decode yields a rollout with ``error`` set and an
    empty trace (its reward is then ``None``: no gradient). ``prompt_offset`` is the global index
    of ``prompts[0]``: a data-parallel rank seeds its rollouts as one process would.

    The family's ``rollout`` capability does the decoding (a family without one is a
    ``ModelError`` naming it). The text family decodes the whole step in one batched
    ``generate`` seeded from ``seed`` (rollouts then depend on the batch, not on ``(prompt, g)``
    alone).
    """
    adapter = _unwrap(adapter_or_model, processor)
    roll = family_of(adapter).require("rollout")
    model = adapter.model
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if settings.temperature <= 0 and group_size > 1:
        raise ValueError("rollouts need temperature > 0 (greedy answers of a group are identical)")
    was_training = model.training
    model.eval()  # sampling without dropout, whatever mode training left the model in
    try:
        return roll(adapter, prompts, settings, group_size, store, seed, prompt_offset)
    finally:
        model.train(was_training)


def rollout_janus(
    adapter: Any,
    prompts: Sequence[Interleaved],
    settings: GenerationSettings,
    group_size: int,
    store: ImageStore,
    seed: int,
    prompt_offset: int,
) -> list[Rollout]:
    """The Janus family's ``rollout`` capability."""
    return _rollout_unified(
        adapter,
        prompts,
        settings,
        group_size,
        store,
        seed,
        prompt_offset,
        lambda *a: _decode_janus(*a),  # looked up per call: tests replace the decode
        lambda p: build_prompt_inputs(adapter.processor, p, store),
    )


def rollout_emu3(
    adapter: Any,
    prompts: Sequence[Interleaved],
    settings: GenerationSettings,
    group_size: int,
    store: ImageStore,
    seed: int,
    prompt_offset: int,
) -> list[Rollout]:
    """The Emu3 family's ``rollout`` capability."""
    return _rollout_unified(
        adapter,
        prompts,
        settings,
        group_size,
        store,
        seed,
        prompt_offset,
        lambda *a: _decode_emu3(*a),
        lambda p: adapter.prompt_inputs(p, store),
    )


def _rollout_unified(
    adapter: Any,
    prompts: Sequence[Interleaved],
    settings: GenerationSettings,
    group_size: int,
    store: ImageStore,
    seed: int,
    prompt_offset: int,
    decode: Any,
    inputs_of: Any,
) -> list[Rollout]:
    """Janus / Emu3: the step's answers ``settings.batch_size`` at a time through the family's
    decode loop (prompt-major, so a batch of at least ``group_size`` holds whole groups), each
    row with its own generator seeded from ``(seed, prompt, g)``: an answer does not depend on
    the rows it shared a batch with. A batch whose decode raises gives each of its rollouts the
    error (no reward, no gradient) and the step goes on."""
    import torch

    inputs = [inputs_of(prompt) for prompt in prompts]
    jobs = [(i, g) for i in range(len(prompts)) for g in range(group_size)]
    size = max(1, settings.batch_size)
    out: list[Rollout] = []
    for a in range(0, len(jobs), size):
        chunk = jobs[a : a + size]
        seeds = [rollout_seed(seed, prompt_offset + i, g) for i, g in chunk]
        gens = [torch.Generator(device=adapter.model.device).manual_seed(s) for s in seeds]
        start = time.perf_counter()
        try:
            rows = decode(adapter, [inputs[i] for i, _ in chunk], settings, gens, store)
            error = None
        except Exception as e:  # one failing batch must not lose the step
            rows, error = None, f"{type(e).__name__}: {e}"
        each = (time.perf_counter() - start) / len(chunk)
        for k, ((i, _g), s) in enumerate(zip(chunk, seeds, strict=True)):
            if rows is None:
                trace = DecodeTrace(cond_logprobs=[])
                out.append(
                    Rollout(i, prompts[i], inputs[i], Interleaved(), trace, s, each, error, [])
                )
                continue
            answer, trace, sampled = rows[k]
            out.append(Rollout(i, prompts[i], inputs[i], answer, trace, s, each, None, sampled))
    return out


def rollout_text(
    adapter: Any,
    prompts: Sequence[Interleaved],
    settings: GenerationSettings,
    group_size: int,
    store: ImageStore,
    seed: int,
    prompt_offset: int,
) -> list[Rollout]:
    """The text family's ``rollout``: all ``len(prompts) * group_size`` answers of a text LM in
    one batched ``generate``."""
    repeated = [p for p in prompts for _ in range(group_size)]
    start = time.perf_counter()
    inputs = adapter.encode(repeated)
    traces = adapter.decode_batch(inputs, settings, rollout_seed(seed, prompt_offset, 0))
    each = (time.perf_counter() - start) / max(len(repeated), 1)
    out = []
    for k, (prompt, tr) in enumerate(zip(repeated, traces, strict=True)):
        row = inputs["input_ids"][k][inputs["attention_mask"][k].bool()]
        answer = adapter.answer_of(tr)
        out.append(
            Rollout(
                k // group_size,
                prompt,
                {"input_ids": row[None]},
                answer,
                tr,
                seed,
                each,
                None,
                [True] * len(tr.token_ids),
            )
        )
    return out


def _decode_janus(
    adapter: Any,
    inputs: list[Any],
    settings: GenerationSettings,
    gens: list[Any],
    store: ImageStore,
) -> list[tuple[Interleaved, DecodeTrace, list[bool]]]:
    """Janus rows decoded together (one row: the single-row loop) with the rollouts' generators."""
    rows = adapter.decode_batch(inputs, settings, store, gens)
    eoi = janus_token_ids(adapter.model, adapter.processor).eoi
    out = []
    for answer, tr in rows:
        sampled = [bool(m) or t != eoi for t, m in zip(tr.token_ids, tr.image_mask, strict=True)]
        out.append((answer, tr, sampled))
    return out


def _decode_emu3(
    adapter: Any,
    inputs: list[Any],
    settings: GenerationSettings,
    gens: list[Any],
    store: ImageStore,
) -> list[tuple[Interleaved, DecodeTrace, list[bool]]]:
    """Emu3's own decode path (the one eval uses) with the rollouts' generators: batched when
    the adapter has ``decode_batch`` (same contract as ``JanusAdapter.decode_batch``), else row
    by row."""
    if hasattr(adapter, "decode_batch"):
        rows = adapter.decode_batch(inputs, settings, store, gens)
    else:
        rows = [adapter.decode(x, settings, store, g) for x, g in zip(inputs, gens, strict=True)]
    out = []
    for x, (answer, trace) in zip(inputs, rows, strict=True):
        # a fresh grammar per row (replay moves the state machine on), started where the
        # decoder started: inside the image a prompt opened, if it opened one. The raw ids do:
        # an input image is closed there too, and an open one ends the prompt with its header
        grammar = adapter.grammar(settings)
        grammar.resume(x["input_ids"][0].tolist())
        steps = grammar.replay(trace.token_ids)
        out.append((answer, trace, [st.forced is None for st in steps]))
    return out


def janus_structural_ids(adapter: Any) -> frozenset[int]:
    """Janus's ``structural_token_ids``: image start/end and end-of-sequence."""
    ids = janus_token_ids(adapter.model, adapter.processor)
    return frozenset({ids.boi, ids.eoi, *ids.eos})


def emu3_structural_ids(adapter: Any) -> frozenset[int]:
    """Emu3's ``structural_token_ids``: image start and end-of-sequence."""
    vocab = adapter.vocab
    return frozenset({vocab.boi, *vocab.eos})


def text_structural_ids(adapter: Any) -> frozenset[int]:
    """A text LM's ``structural_token_ids``: its end-of-sequence token."""
    return frozenset(t for t in [adapter.processor.eos_token_id] if t is not None)


def rollout_predictions(
    rollouts: Sequence[Rollout], samples: Sequence[Sample], model_id: str
) -> tuple[list[Sample], list[Prediction]]:
    """Samples repeated per rollout and the matching predictions, ready for a ``NativeReward``."""
    reps = [samples[r.prompt_index] for r in rollouts]
    return reps, [r.prediction(s.id, model_id) for r, s in zip(rollouts, reps, strict=True)]


def _unwrap(adapter_or_model: Any, processor: Any) -> Any:
    """An adapter (of any family) for whatever the caller passed; a bare model must be Janus."""
    if hasattr(adapter_or_model, "family"):
        return adapter_or_model
    if processor is None:
        raise ValueError("pass processor= when giving a bare model")
    if getattr(getattr(adapter_or_model, "config", None), "model_type", None) != "janus":
        raise NotImplementedError("a bare model must be Janus; wrap Emu3 in an Emu3Adapter")
    return JanusAdapter.from_model(adapter_or_model, processor, model_id="policy")
