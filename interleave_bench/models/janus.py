"""Janus / Janus-Pro: one interleaved decode loop shared by ``ibench eval`` and training rollouts.

transformers' ``JanusForConditionalGeneration.generate`` makes either text or one image per call.
Interleaved answers need a mode switch inside a single sequence, so ``decode_interleaved`` drives
the language model step by step over one KV cache:

* text mode: the LM head picks the next token (greedy at temperature 0, else temperature/top-p
  sampling from a seeded ``torch.Generator``) until EOS or ``max_new_tokens`` text tokens;
  ``<image_placeholder>``/``<end_of_image>`` are never sampled, and ``<begin_of_image>`` is
  suppressed once ``max_images`` images exist;
* image mode (after ``<begin_of_image>``): the generation head picks the image's VQ codes with
  classifier-free guidance, ``uncond + cfg_scale * (cond - uncond)``. The conditional row is the
  running sequence; the unconditional row is a fresh prefill of the same length in which every
  token but BOS and ``<begin_of_image>`` is padding (Janus's own recipe). Each code is fed back
  through the generation embeddings and aligner, the full grid is decoded to pixels by the VQ
  model, ``<end_of_image>`` is appended, and text resumes with the image codes in context;
* a prompt that ends with ``<begin_of_image>`` (``JanusProcessor(..., generation_mode="image")``,
  transformers' text-to-image recipe) starts in image mode: that image is drawn first, exactly as
  ``generate(..., generation_mode="image")`` draws it (``tests/test_decode_parity.py``), and
  counts toward ``max_images`` but not toward ``max_new_tokens``.

Budget: ``max_new_tokens`` counts sampled text tokens; each image adds exactly the model's
``num_image_tokens`` codes. ``settings.max_image_tokens`` and ``settings.image_size`` are ignored:
Janus's VQ decoder only decodes its full native grid. ``settings.batch_size`` > 1 decodes that
many prompts together on one KV cache (``models.janus_batch``; each row with its own generator
seeded from ``settings.seed``, so an answer does not depend on its neighbours); batch size 1 runs
this loop, one prompt after another.

Traces (``want_trace``): positions are every generated token; text tokens come from the LM
vocabulary, image codes from the VQ codebook (``image_mask`` True). ``logprobs`` are under the
distribution sampled from: constrained, temperature-scaled and restricted to the top-p nucleus
(at temperature 0, the constrained distribution at temperature 1), CFG-guided for image codes.
``cond_logprobs`` holds, for image codes, the log-prob under the conditional head alone (same
temperature, no nucleus); for text tokens it repeats ``logprobs`` (there is no guidance there).
The forced ``<end_of_image>`` has log-prob 0.0 and opens the next text segment.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..media import ImageStore, load_ref
from ..types import Interleaved, Segment
from . import janus_batch
from .base import DecodeTrace, GenerationOutput, GenerationSettings, generate_each
from .families import FamilySpec
from .janus_parts import DecodeResult, JanusTokenIds, janus_token_ids, pixels_to_image  # noqa: F401
from .sampling import cache_kwarg, load_pretrained, output_cache, resolve_device, sample_token

if TYPE_CHECKING:
    import torch
    from PIL import Image


def build_prompt_inputs(processor: Any, prompt: Interleaved, store: ImageStore | None) -> Any:
    """Turn an ``Interleaved`` prompt into processor inputs (one row).

    Uses the checkpoint's chat template when it has one (images as ``{"type": "image"}`` parts,
    which the template renders as ``<image_placeholder>``); otherwise segments are joined by
    newlines with one placeholder per image. The processor expands each placeholder into
    ``<begin_of_image>`` + N placeholders + ``<end_of_image>`` and encodes the pixels.
    """
    images = [load_ref(seg.image, store).convert("RGB") for seg in prompt if seg.image is not None]
    if getattr(processor, "chat_template", None):
        content = [
            {"type": "image"} if seg.is_image else {"type": "text", "text": seg.text}
            for seg in prompt
        ]
        text = processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
    else:
        text = "\n".join(processor.image_token if seg.is_image else seg.text for seg in prompt)
    return processor(text=text, images=images or None, return_tensors="pt")


def embed_generated(model: Any, token_ids: list[int], image_mask: list[bool]) -> torch.Tensor:
    """Input embeddings of generated positions as the loop fed them (text ids through the token
    embeddings, image codes through the generation embeddings and aligner), so a trainer can
    rebuild a rollout's context in one forward pass. Shape ``(1, len(token_ids), hidden)``."""
    import torch

    device = model.device
    ids = torch.tensor(token_ids, dtype=torch.long, device=device)
    mask = torch.tensor(image_mask, dtype=torch.bool, device=device)
    text = model.get_input_embeddings()(ids.masked_fill(mask, 0))
    image = model.prepare_embeddings_for_image_generation(ids.masked_fill(~mask, 0)).to(text.dtype)
    return torch.where(mask[:, None], image, text)[None]


def teacher_forced_hidden(
    model: Any, contexts: list[tuple[torch.Tensor, torch.Tensor]]
) -> list[torch.Tensor]:
    """Language-model hidden states for several ``(prompt_embeds, generated_embeds)`` contexts
    (each ``(1, len, hidden)``) in one right-padded forward. Returns, per context, the ``(g + 1,
    hidden)`` states before each generated position (the last prompt position first), which is
    what both the trainer's log-prob recomputation and the warm-up loss score.

    Right padding keeps every real position's index and the causal mask keeps pads out of real
    rows, so a row equals its own unpadded forward up to float rounding.
    """
    import torch

    lm = model.model.language_model
    rows = [torch.cat([p, g.to(p.dtype)], 1)[0] for p, g in contexts]
    if not rows:
        return []
    if len(rows) == 1:
        hidden = lm(inputs_embeds=rows[0][None]).last_hidden_state
    else:
        width = max(len(r) for r in rows)
        embeds = rows[0].new_zeros(len(rows), width, rows[0].shape[-1])
        mask = torch.zeros(len(rows), width, dtype=torch.long, device=embeds.device)
        for k, r in enumerate(rows):
            embeds[k, : len(r)] = r
            mask[k, : len(r)] = 1
        hidden = lm(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    out = []
    for k, (p, g) in enumerate(contexts):
        start = p.shape[1] - 1
        out.append(hidden[k, start : start + g.shape[1] + 1])
    return out


def _pick(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> tuple[int, float]:
    """A token and its log-prob under the shared convention of ``models.sampling``."""
    token, logp = sample_token(logits, temperature, top_p, generator)
    return token, float(logp[token])


class _Lm:
    """The language model behind Janus, stepped one input at a time over a KV cache."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.lm = model.model.language_model
        self.embed = model.get_input_embeddings()

    def run(self, embeds: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
        out = self.lm(inputs_embeds=embeds, **{cache_kwarg(self.lm): cache}, use_cache=True)
        return out.last_hidden_state[:, -1], output_cache(out)

    def text(self, token: int, cache: Any) -> tuple[torch.Tensor, Any]:
        import torch

        ids = torch.tensor([[token]], dtype=torch.long, device=self.model.device)
        return self.run(self.embed(ids), cache)

    def code(self, code: int, cache: Any) -> tuple[torch.Tensor, Any]:
        import torch

        ids = torch.tensor([[code]], dtype=torch.long, device=self.model.device)
        embeds = self.model.prepare_embeddings_for_image_generation(ids).to(self.embed.weight.dtype)
        return self.run(embeds, cache)


def decode_interleaved(
    model: Any,
    processor: Any,
    prompt_inputs: Any,
    settings: GenerationSettings,
    *,
    want_trace: bool = False,
    generator: torch.Generator | None = None,
) -> DecodeResult:
    """Generate one interleaved answer for one prompt row (see the module docstring).

    ``prompt_inputs`` is the processor output for a single prompt (``build_prompt_inputs``).
    ``generator`` overrides the one seeded from ``settings.seed`` (rollouts drawing several
    answers per prompt pass their own). No file is written: images come back as PIL images.
    """
    import torch

    ids = janus_token_ids(model, processor)
    device = model.device
    input_ids = prompt_inputs["input_ids"].to(device)
    if input_ids.shape[0] != 1:
        raise ValueError(f"decode_interleaved takes one prompt row, got {input_ids.shape[0]}")
    if generator is None and settings.temperature > 0:
        generator = torch.Generator(device=device).manual_seed(settings.seed)
    num_image_tokens = int(model.model.vision_model.config.num_image_tokens)
    temperature, top_p, cfg = settings.temperature, settings.top_p, float(settings.cfg_scale)
    cond_temp = temperature if temperature > 0 else 1.0
    step = _Lm(model)

    trace = DecodeTrace(cond_logprobs=[]) if want_trace else None

    def record(token: int, logprob: float, is_image: bool, cond: float) -> None:
        if trace is not None:
            trace.token_ids.append(token)
            trace.logprobs.append(logprob)
            trace.image_mask.append(is_image)
            trace.cond_logprobs.append(cond)  # type: ignore[union-attr]

    def pos() -> int:
        return len(trace.token_ids) if trace is not None else 0

    with torch.no_grad():
        pixel_values = prompt_inputs.get("pixel_values")
        if pixel_values is not None:
            pixel_values = pixel_values.to(device, dtype=step.embed.weight.dtype)
        out = model.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            use_cache=True,
        )
        hidden, cache = out.last_hidden_state[:, -1], output_cache(out)
        context = input_ids[0].tolist()  # the running sequence as text ids (codes -> padding)

        parts: list[Any] = []
        all_codes: list[list[int]] = []
        run: list[int] = []  # text tokens of the current text run
        seg_start, n_text, stop = 0, 0, "length"

        def flush_text() -> None:
            text = processor.tokenizer.decode(run, skip_special_tokens=True).strip()
            if text:
                parts.append(text)
            run.clear()

        def draw_image() -> None:
            """Image mode: ``<begin_of_image>`` is already in ``context`` and the cache."""
            nonlocal hidden, cache, seg_start
            u_hidden = u_cache = None
            if cfg != 1.0:
                keep = {ids.bos, ids.boi}
                uncond = [t if t in keep else ids.pad for t in context]
                u_ids = torch.tensor([uncond], dtype=torch.long, device=device)
                u_hidden, u_cache = step.run(step.embed(u_ids), None)
            codes: list[int] = []
            img_start = pos()
            for i in range(num_image_tokens):
                cond_logits = model.model.generation_head(hidden)[0].float()
                guided = cond_logits
                if u_hidden is not None:
                    u_logits = model.model.generation_head(u_hidden)[0].float()
                    guided = u_logits + cfg * (cond_logits - u_logits)
                code, logprob = _pick(guided, temperature, top_p, generator)
                cond_lp = float(torch.log_softmax(cond_logits / cond_temp, -1)[code])
                record(code, logprob, True, cond_lp)
                codes.append(code)
                hidden, cache = step.code(code, cache)
                if u_hidden is not None and i + 1 < num_image_tokens:
                    u_hidden, u_cache = step.code(code, u_cache)
            if trace is not None:
                trace.segments.append(("image", img_start, pos()))
            all_codes.append(codes)
            parts.append(decode_codes(model, processor, codes))
            context.extend([ids.pad] * num_image_tokens + [ids.eoi])
            seg_start = pos()
            record(ids.eoi, 0.0, False, 0.0)
            hidden, cache = step.text(ids.eoi, cache)

        if context[-1] == ids.boi:  # a text-to-image prompt: the image is already open
            draw_image()
        while n_text < settings.max_new_tokens:
            logits = model.lm_head(hidden)[0].float()
            logits[[ids.placeholder, ids.eoi]] = float("-inf")
            if len(all_codes) >= settings.max_images:
                logits[ids.boi] = float("-inf")
            token, logprob = _pick(logits, temperature, top_p, generator)
            record(token, logprob, False, logprob)
            n_text += 1
            if token in ids.eos:
                stop = "eos"
                break
            if token != ids.boi:
                run.append(token)
                context.append(token)
                hidden, cache = step.text(token, cache)
                continue
            flush_text()
            if trace is not None:
                trace.segments.append(("text", seg_start, pos()))
            context.append(ids.boi)
            hidden, cache = step.text(ids.boi, cache)
            draw_image()

        flush_text()
        if trace is not None and pos() > seg_start:
            trace.segments.append(("text", seg_start, pos()))
    return DecodeResult(parts=parts, image_codes=all_codes, stop_reason=stop, trace=trace)


def decode_codes(model: Any, processor: Any, codes: list[int]) -> Image.Image:
    """VQ codes of one image -> a PIL image.

    The un-normalisation (``pixels_to_image``) is done here (``x * std + mean``, then ``/ rescale_factor``, clipped
    and truncated to uint8, as the PIL image processor's ``postprocess`` does) because the
    torchvision-backed image processor that transformers picks when torchvision is installed
    does not return PIL images from ``postprocess``.
    """
    import torch

    with torch.no_grad():
        grid = torch.tensor([codes], dtype=torch.long, device=model.device)
        pixels = model.decode_image_tokens(grid)[0].float().cpu()  # (H, W, C), normalised
    return pixels_to_image(processor, pixels)


class JanusAdapter:
    """``ModelAdapter`` for Janus/Janus-Pro checkpoints loaded with transformers.

    ``dtype=None`` means bfloat16 on CUDA and float32 on CPU. Prompts are decoded
    ``settings.batch_size`` at a time; a failure on one prompt becomes that prompt's ``error``
    and the others still run.
    """

    family = "janus"

    def __init__(
        self,
        path: str | Path,
        *,
        device: str = "auto",
        dtype: str | None = None,
        model_id: str | None = None,
        load_kwargs: dict[str, Any] | None = None,
    ) -> None:
        from transformers import JanusForConditionalGeneration, JanusProcessor

        self.device = str(resolve_device(device))
        self.model = load_pretrained(
            JanusForConditionalGeneration, path, self.device, dtype, load_kwargs
        )
        self.processor = JanusProcessor.from_pretrained(str(path))
        self.model_id = model_id or str(path)

    @classmethod
    def from_model(cls, model: Any, processor: Any, *, model_id: str) -> JanusAdapter:
        """Wrap an already loaded model (e.g. the policy being trained) without reloading."""
        self = cls.__new__(cls)
        self.model, self.processor, self.model_id = model, processor, model_id
        self.device = str(model.device)
        return self

    def generate(
        self,
        prompts: list[Interleaved],
        settings: GenerationSettings,
        store: ImageStore,
        *,
        return_trace: bool = False,
        seeds: Sequence[int] | None = None,
    ) -> list[GenerationOutput]:
        """Answers for ``prompts``, ``settings.batch_size`` decoded together (1: one at a time
        through ``decode_interleaved``). A prompt that cannot be built is its own ``error``; a
        batch whose decode raises gives that error to each of its prompts. ``seeds[i]`` (the
        evaluation runner's per-sample seed) draws prompt ``i`` whatever batch it shares, so a
        sampled answer is the same at every batch size; without it each draws from
        ``settings.seed``."""
        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        if settings.batch_size <= 1:

            def one(i: int, prompt: Interleaved) -> tuple[Interleaved, DecodeTrace | None]:
                inputs = build_prompt_inputs(self.processor, prompt, store)
                own = settings if seeds is None else replace(settings, seed=int(seeds[i]))
                result = decode_interleaved(
                    self.model, self.processor, inputs, own, want_trace=return_trace
                )
                return _answer(result.parts, store), result.trace

            return generate_each(prompts, one, return_trace=return_trace)
        outputs: list[GenerationOutput] = []
        size = settings.batch_size
        for a in range(0, len(prompts), size):
            outputs.extend(
                self._generate_batch(
                    prompts[a : a + size],
                    settings,
                    store,
                    return_trace,
                    None if seeds is None else seeds[a : a + size],
                )
            )
        return outputs

    def _generate_batch(
        self,
        prompts: list[Interleaved],
        settings: GenerationSettings,
        store: ImageStore,
        return_trace: bool,
        seeds: Sequence[int] | None = None,
    ) -> list[GenerationOutput]:
        import torch

        start = time.perf_counter()
        outputs: list[GenerationOutput | None] = [None] * len(prompts)
        good, inputs = [], []
        for k, prompt in enumerate(prompts):
            try:
                inputs.append(build_prompt_inputs(self.processor, prompt, store))
                good.append(k)
            except Exception as e:  # noqa: BLE001 - recorded on that prompt's output
                outputs[k] = GenerationOutput(Interleaved(), error=f"{type(e).__name__}: {e}")
        try:
            gens = None
            if seeds is not None and settings.temperature > 0:
                dev = self.model.device
                gens = [torch.Generator(device=dev).manual_seed(int(seeds[k])) for k in good]
            rows = self.decode_batch(inputs, settings, store, gens, want_trace=return_trace)
        except Exception as e:  # noqa: BLE001 - the batch failed: each of its prompts says so
            rows = [e] * len(good)  # type: ignore[list-item]
        seconds = (time.perf_counter() - start) / max(1, len(prompts))
        for k, row in zip(good, rows, strict=True):
            if isinstance(row, Exception):
                outputs[k] = GenerationOutput(
                    Interleaved(), error=f"{type(row).__name__}: {row}", seconds=seconds
                )
            else:
                outputs[k] = GenerationOutput(row[0], seconds=seconds, trace=row[1])
        return [o for o in outputs if o is not None]

    def decode_batch(
        self,
        inputs: list[Any],
        settings: GenerationSettings,
        store: ImageStore,
        generators: list[torch.Generator | None] | None = None,
        *,
        want_trace: bool = True,
    ) -> list[tuple[Interleaved, DecodeTrace | None]]:
        """Decode prompt rows (``build_prompt_inputs`` outputs) together, images stored in
        ``store``; ``generators[i]`` draws row i (rollouts seed one per prompt and group
        member). One row goes through ``decode_interleaved``, the single-row loop."""
        if len(inputs) == 1:
            gen = generators[0] if generators else None
            results = [
                decode_interleaved(
                    self.model,
                    self.processor,
                    inputs[0],
                    settings,
                    want_trace=want_trace,
                    generator=gen,
                )
            ]
        else:
            results = janus_batch.decode_batch(
                self.model,
                self.processor,
                inputs,
                settings,
                want_trace=want_trace,
                generators=generators,
            )
        return [(_answer(r.parts, store), r.trace) for r in results]


def _answer(parts: list[Any], store: ImageStore) -> Interleaved:
    """Decoded parts (text, PIL images) as an answer whose images live in ``store``."""
    return Interleaved(
        Segment.of_text(p) if isinstance(p, str) else Segment.of_image(store.put_image(p))
        for p in parts
    )


FAMILY = FamilySpec(
    name="janus",
    adapter="interleave_bench.models.janus:JanusAdapter",
    model_types=("janus",),
    tiny="interleave_bench.models.tiny_janus:build_tiny_janus",
    capabilities={
        "generate": "interleave_bench.models.janus:JanusAdapter.generate",
        "rollout": "interleave_bench.train.rollout:rollout_janus",
        "teacher_forced_logprobs": "interleave_bench.train.policy_logprobs:janus_batch_logprobs",
        "warmup_targets": "interleave_bench.train.warmup:_Janus",
        "structural_token_ids": "interleave_bench.train.rollout:janus_structural_ids",
    },
    description="Janus / Janus-Pro: text and VQ image tokens from two heads",
)
