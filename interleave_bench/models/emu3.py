"""Emu3 adapter: one constrained decode loop that writes text, images and text again in one pass.

Emu3 draws with ordinary vocabulary tokens. An image in its token stream reads

    <|image start|> "H*W" <|image token|> (W visual tokens, <|extra_200|>) x H <|extra_201|> <|image end|>

where "H*W" is the latent grid size spelled as text, ``<|extra_200|>`` ends a row and
``<|extra_201|>`` ends the frame. ``ImageGrammar`` is a state machine equivalent to a
``prefix_allowed_tokens_fn`` over that layout: in text mode visual tokens and image-structure
tokens are banned; once the model picks the image start the header, wrapper, row ends, frame end
and image end are forced and every other position may only hold a visual token; then text resumes.
``interleaved_decode`` runs it by masking logits in a manual KV-cached loop, so it can record
the log-probs of the distribution it actually sampled; training rollouts reuse it as is.

The image layout and its state machine live in ``emu3_grammar``.

Log-prob conventions (``DecodeTrace``): each sampled token's log-prob is taken under the
*constrained* distribution (banned tokens removed), scaled by the temperature when sampling
(temperature 1 under greedy decoding) and before top-p truncation, the TRL convention. Forced
tokens have exactly one allowed choice, so their log-prob is 0. Image tokens are sampled from the
classifier-free-guided distribution when ``cfg_scale != 1``; then ``logprobs`` hold the guided
values and ``cond_logprobs`` the conditional ones (identical outside image grids). The image span
in ``image_mask``/``segments`` runs from the image start through the image end, inclusive; the
image start itself is a free choice made in text mode, so its log-prob is not 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..media import ImageStore, load_ref
from ..types import Interleaved, Segment
from .base import DecodeTrace, GenerationOutput, GenerationSettings, generate_each
from .emu3_grammar import (
    GRID,
    HEADER,
    IMAGE,
    TEXT,
    VISUAL,
    Emu3Vocab,
    ImageGrammar,
)
from .families import FamilySpec
from .sampling import (
    allowed_logprobs,
    cache_kwarg,
    load_pretrained,
    output_cache,
    resolve_device,
    sample_token,
)


@dataclass
class DecodeResult:
    """A decoded answer: its trace and, per image, the row-major visual token ids."""

    trace: DecodeTrace
    grids: list[list[int]]


def _forward(model: Any, cache: Any, **inputs: Any) -> tuple[torch.Tensor, Any]:
    """One KV-cached forward; the last position's logits (float32) and the cache."""
    out = model(**inputs, **{cache_kwarg(model): cache}, use_cache=True, logits_to_keep=1)
    return out.logits[0, -1].float(), output_cache(out)


@torch.no_grad()
def interleaved_decode(
    model: Any,
    inputs: Mapping[str, torch.Tensor],
    grammar: ImageGrammar,
    *,
    temperature: float = 0.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    cfg_scale: float = 1.0,
    uncond_prefix: list[int] | None = None,
) -> DecodeResult:
    """Decode one answer under ``grammar`` from prompt ``inputs`` (processor output, batch 1).

    With ``cfg_scale != 1`` a second, unconditional stream starts at each image start from
    ``uncond_prefix`` (BOS + negative prompt: the prompt with its text removed, as Emu3 does) and
    follows the image tokens; visual tokens are drawn from ``u + s * (c - u)`` over the
    log-softmaxed visual logits. The stream is dropped after the last row. A prompt that ends
    inside an image opening (``ImageGrammar.resume``) continues that image first, its
    unconditional stream starting from ``uncond_prefix`` plus the same opening tokens.
    """
    device = inputs["input_ids"].device
    use_cfg = cfg_scale != 1.0
    logits, cache = _forward(model, None, **inputs)
    u_logits: torch.Tensor | None = None
    u_cache: Any = None
    visual = torch.tensor(grammar.vocab.visual, device=device)
    trace = DecodeTrace(cond_logprobs=[], cfg_logprobs=use_cfg)
    opening = grammar.resume(inputs["input_ids"][0].tolist())
    grids: list[list[int]] = [[]] if opening else []
    if use_cfg and opening:  # the unconditional stream opens the same image
        ids = torch.tensor([[*(uncond_prefix or []), *opening]], device=device)
        u_logits, u_cache = _forward(model, None, input_ids=ids)
    kinds: list[str] = []
    while not grammar.done:
        in_image = grammar.mode != TEXT
        step = grammar.allowed()
        if step.forced is not None:
            token, lp, clp = step.forced, 0.0, 0.0
        else:
            mask = grammar.mask(step.kind, device)
            scores = logits
            if use_cfg and step.kind == VISUAL and u_logits is not None:
                c = torch.log_softmax(logits[visual], dim=-1)
                u = torch.log_softmax(u_logits[visual], dim=-1)
                scores = torch.full_like(logits, float("-inf"))
                scores[visual] = u + cfg_scale * (c - u)
            token, logp = sample_token(scores, temperature, top_p, generator, mask)
            lp = float(logp[token])
            clp = lp
            if scores is not logits:
                clp = float(allowed_logprobs(logits, mask, temperature)[token])
            if step.kind == VISUAL:
                grids[-1].append(token)
        if grammar.mode == TEXT and token == grammar.vocab.boi:
            in_image = True
            grids.append([])
        trace.token_ids.append(token)
        trace.logprobs.append(lp)
        trace.cond_logprobs.append(clp)  # type: ignore[union-attr]
        trace.image_mask.append(in_image)
        kinds.append(IMAGE if in_image else TEXT)
        grammar.advance(token)
        if grammar.done:
            break
        step_ids = torch.tensor([[token]], device=device)
        logits, cache = _forward(model, cache, input_ids=step_ids)
        if use_cfg and grammar.mode in (HEADER, GRID):
            if u_cache is None:
                ids = torch.tensor([[*(uncond_prefix or []), token]], device=device)
                u_logits, u_cache = _forward(model, None, input_ids=ids)
            else:
                u_logits, u_cache = _forward(model, u_cache, input_ids=step_ids)
        else:
            u_logits, u_cache = None, None
    trace.segments = _spans(kinds, trace.token_ids, grammar.vocab.boi)
    return DecodeResult(trace=trace, grids=grids)


def teacher_forced_logits(
    model: Any, prompt_inputs: Mapping[str, Any], tokens: list[int]
) -> torch.Tensor:
    """``(len(tokens), vocab)`` logits before each of ``tokens`` given the prompt, in one forward
    over ``prompt + tokens[:-1]`` (the trainer's log-prob recomputation and the warm-up loss)."""
    inputs = dict(prompt_inputs)
    prompt_ids = inputs["input_ids"]
    gen = torch.tensor([tokens[:-1]], dtype=prompt_ids.dtype, device=prompt_ids.device)
    inputs["input_ids"] = torch.cat([prompt_ids, gen], 1)
    if "attention_mask" in inputs:
        am = inputs["attention_mask"]
        inputs["attention_mask"] = torch.cat([am, torch.ones_like(gen, dtype=am.dtype)], 1)
    return model(**inputs).logits[0, prompt_ids.shape[1] - 1 :]


def _spans(kinds: list[str], tokens: list[int], boi: int) -> list[tuple[str, int, int]]:
    """``(kind, start, end)`` runs; two images in a row stay two spans (each starts at a BOI)."""
    spans: list[tuple[str, int, int]] = []
    for i, (kind, tok) in enumerate(zip(kinds, tokens, strict=True)):
        new_image = kind == IMAGE and tok == boi
        if spans and spans[-1][0] == kind and not new_image:
            spans[-1] = (kind, spans[-1][1], i + 1)
        else:
            spans.append((kind, i, i + 1))
    return spans


class Emu3Adapter:
    """``ModelAdapter`` for Emu3 checkpoints (``Emu3ForConditionalGeneration`` + ``Emu3Processor``).

    Prompts are decoded one at a time (``settings.batch_size`` is not used): the grammar state and
    the CFG stream are per answer, and a failure stays that prompt's ``error``. Input images go
    through the processor's ``<image>`` placeholder (and its chat template when it has one); the
    unconditional CFG stream starts from BOS + ``negative_prompt``.
    """

    family = "emu3"

    def __init__(
        self,
        path: str,
        *,
        device: str = "auto",
        dtype: str | torch.dtype | None = None,
        negative_prompt: str = "",
        use_chat_template: bool = True,
        load_kwargs: dict[str, Any] | None = None,
    ) -> None:
        from transformers import Emu3ForConditionalGeneration, Emu3Processor

        self.model_id = str(path)
        self.device = resolve_device(device)
        self.processor = Emu3Processor.from_pretrained(path)
        self.model = load_pretrained(
            Emu3ForConditionalGeneration, path, self.device, dtype, load_kwargs
        )
        self.vocab = Emu3Vocab.from_model(self.model, self.processor)
        self.negative_prompt = negative_prompt
        self.use_chat_template = use_chat_template and bool(self.processor.chat_template)
        self.spatial_factor = int(self.model.model.vqmodel.spatial_scale_factor)

    # ------------------------------------------------------------------ pieces reused by rollouts

    def grid_size(self, settings: GenerationSettings) -> tuple[int, int]:
        """Latent rows x cols of generated images.

        ``settings.image_size`` is a side in pixels; by default the processor's generation area,
        capped by the largest image its image processor encodes (the tiny model's 32x32), at 1:1.
        ``settings.max_image_tokens`` then shrinks the grid to at most that many visual tokens.
        """
        f = self.spatial_factor
        if settings.image_size:
            rows = cols = max(1, settings.image_size // f)
        else:
            # the processor's default generation area (older releases have no attribute: 720^2)
            area = getattr(self.processor, "image_area", 518400)
            area = min(area, self.processor.image_processor.max_pixels)
            rows, cols = self.processor.calculate_generate_size("1:1", area, f)
        cap = settings.max_image_tokens
        if cap and rows * cols > cap:
            scale = math.sqrt(cap / (rows * cols))
            rows, cols = max(1, math.floor(rows * scale)), max(1, math.floor(cols * scale))
        return max(1, rows), max(1, cols)

    def grammar(self, settings: GenerationSettings) -> ImageGrammar:
        rows, cols = self.grid_size(settings)
        header = self.processor.tokenizer.encode(f"{rows}*{cols}", add_special_tokens=False)
        return ImageGrammar(
            vocab=self.vocab,
            rows=rows,
            cols=cols,
            header=tuple(header),
            max_new_tokens=settings.max_new_tokens,
            max_images=max(0, settings.max_images),
        )

    def prompt_inputs(self, prompt: Interleaved, store: ImageStore | None) -> dict[str, Any]:
        """Processor inputs (batch 1, on the model's device) for an interleaved prompt."""
        images, content = [], []
        for seg in prompt:
            if seg.image is not None:
                images.append(load_ref(seg.image, store).convert("RGB"))
                content.append({"type": "image"})
            else:
                content.append({"type": "text", "text": seg.text})
        if self.use_chat_template:
            text = self.processor.apply_chat_template(
                [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
            )
        else:
            text = "".join(
                c["text"] if c["type"] == "text" else self.processor.image_token for c in content
            )
        batch = self.processor(text=[text], images=images or None, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in batch.items() if torch.is_tensor(v)}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return inputs

    def uncond_prefix(self) -> list[int]:
        tok = self.processor.tokenizer
        return [tok.bos_token_id, *tok.encode(self.negative_prompt, add_special_tokens=False)]

    @torch.inference_mode()
    def decode_grid(self, grid: list[int], rows: int, cols: int) -> Any:
        """Visual token ids (row-major) -> a PIL image via the VQ decoder and the processor."""
        to_code = self.model.vocabulary_mapping.bpe2img_mapping_tensor
        codes = to_code[torch.tensor(grid)].view(1, rows, cols).to(self.device)
        pixels = self.model.model.vqmodel.decode(codes)
        out = self.processor.postprocess(pixels.float().cpu(), return_tensors="PIL.Image.Image")
        return out["pixel_values"][0]

    # ------------------------------------------------------------------ the adapter protocol

    def generate(
        self,
        prompts: list[Interleaved],
        settings: GenerationSettings,
        store: ImageStore,
        *,
        return_trace: bool = False,
    ) -> list[GenerationOutput]:
        """One answer per prompt; prompt ``i`` samples with seed ``settings.seed + i``."""
        return generate_each(
            prompts,
            lambda i, prompt: self._generate_one(prompt, settings, store, settings.seed + i),
            return_trace=return_trace,
        )

    def _generate_one(
        self, prompt: Interleaved, settings: GenerationSettings, store: ImageStore, seed: int
    ) -> tuple[Interleaved, DecodeTrace]:
        generator = None
        if settings.temperature > 0:
            generator = torch.Generator(device=self.device).manual_seed(seed)
        return self.decode(self.prompt_inputs(prompt, store), settings, store, generator)

    @torch.inference_mode()
    def decode(
        self,
        inputs: Any,
        settings: GenerationSettings,
        store: ImageStore,
        generator: torch.Generator | None,
    ) -> tuple[Interleaved, DecodeTrace]:
        """The one decode loop plus image decoding: eval (``generate``) and training rollouts
        (which bring their own generator) both come through here."""
        grammar = self.grammar(settings)
        result = interleaved_decode(
            self.model,
            inputs,
            grammar,
            temperature=settings.temperature,
            top_p=settings.top_p,
            generator=generator,
            cfg_scale=settings.cfg_scale,
            uncond_prefix=self.uncond_prefix(),
        )
        segments: list[Segment] = []
        grids = iter(result.grids)
        tok = self.processor.tokenizer
        for kind, start, end in result.trace.segments:
            if kind == IMAGE:
                image = self.decode_grid(next(grids), grammar.rows, grammar.cols)
                segments.append(Segment.of_image(store.put_image(image)))
            else:
                ids = result.trace.token_ids[start:end]
                text = tok.decode(ids, skip_special_tokens=True).strip()
                if text:
                    segments.append(Segment.of_text(text))
        return Interleaved(segments), result.trace


FAMILY = FamilySpec(
    name="emu3",
    adapter="interleave_bench.models.emu3:Emu3Adapter",
    model_types=("emu3",),
    tiny="interleave_bench.models.tiny_emu3:build_tiny_emu3",
    capabilities={
        "generate": "interleave_bench.models.emu3:Emu3Adapter.generate",
        "rollout": "interleave_bench.train.rollout:rollout_emu3",
        "teacher_forced_logprobs": "interleave_bench.train.policy_logprobs:emu3_batch_logprobs",
        "warmup_targets": "interleave_bench.train.warmup:_Emu3",
        "structural_token_ids": "interleave_bench.train.rollout:emu3_structural_ids",
    },
    description="Emu3: one vocabulary of text and visual tokens, images under a grid grammar",
)
