"""Emu3 adapter: one constrained decode loop that writes text, images and text again in one pass.

Emu3 draws with ordinary vocabulary tokens. An image in its token stream reads

    <|image start|> "H*W" <|image token|> (W visual tokens, <|extra_200|>) x H <|extra_201|> <|image end|>

where "H*W" is the latent grid size spelled as text, ``<|extra_200|>`` ends a row and
``<|extra_201|>`` ends the frame. ``ImageGrammar`` is a state machine equivalent to a
``prefix_allowed_tokens_fn`` over that layout: in text mode visual tokens and image-structure
tokens are banned; once the model picks the image start the header, wrapper, row ends, frame end
and image end are forced and every other position may only hold a visual token; then text resumes.
``emu3_decode.decode_rows`` runs it by masking logits in a manual KV-cached loop over many
answers at once (one grammar, generator and CFG stream per row; ``interleaved_decode`` is that
loop with one row), so it can record the log-probs of the distribution it actually sampled;
``ibench eval`` (``settings.batch_size`` rows) and training rollouts share it.

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
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..media import ImageStore, load_ref
from ..types import Interleaved, Segment
from .base import DecodeTrace, GenerationOutput, GenerationSettings
from .emu3_decode import DecodeResult, decode_rows, prompt_token_ids
from .emu3_grammar import IMAGE, Emu3Vocab, ImageGrammar
from .families import FamilySpec
from .sampling import load_pretrained, resolve_device


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
    """Decode one answer under ``grammar`` from prompt ``inputs`` (processor output, batch 1):
    the batched loop ``emu3_decode.decode_rows`` with one row.

    With ``cfg_scale != 1`` a second, unconditional stream starts at each image start from
    ``uncond_prefix`` (BOS + negative prompt: the prompt with its text removed, as Emu3 does) and
    follows the image tokens; visual tokens are drawn from ``u + s * (c - u)`` over the
    log-softmaxed visual logits. The stream is dropped after the last row. A prompt that ends
    inside an image opening (``ImageGrammar.resume``) continues that image first, its
    unconditional stream starting from ``uncond_prefix`` plus the same opening tokens.
    """
    return decode_rows(
        model,
        [prompt_token_ids(model, inputs)],
        [grammar],
        [generator],
        temperature=temperature,
        top_p=top_p,
        cfg_scale=cfg_scale,
        uncond_prefix=uncond_prefix or [],
    )[0]


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


class Emu3Adapter:
    """``ModelAdapter`` for Emu3 checkpoints (``Emu3ForConditionalGeneration`` + ``Emu3Processor``).

    ``settings.batch_size`` prompts are decoded together (``emu3_decode``): the grammar state,
    the generator and the CFG stream are per row, and a failure stays that prompt's ``error``. Input images go
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

    def decode_grid(self, grid: list[int], rows: int, cols: int) -> Any:
        """Visual token ids (row-major) -> a PIL image via the VQ decoder and the processor."""
        return self.decode_grids([grid], rows, cols)[0]

    @torch.inference_mode()
    def decode_grids(self, grids: list[list[int]], rows: int, cols: int) -> list[Any]:
        """Many grids of one size -> PIL images, one VQ decoder pass for them all."""
        if not grids:
            return []
        to_code = self.model.vocabulary_mapping.bpe2img_mapping_tensor
        codes = to_code[torch.tensor(grids)].view(len(grids), rows, cols).to(self.device)
        pixels = self.model.model.vqmodel.decode(codes)
        out = self.processor.postprocess(pixels.float().cpu(), return_tensors="PIL.Image.Image")
        return list(out["pixel_values"])

    # ------------------------------------------------------------------ the adapter protocol

    def generate(
        self,
        prompts: list[Interleaved],
        settings: GenerationSettings,
        store: ImageStore,
        *,
        return_trace: bool = False,
        seeds: Sequence[int] | None = None,
    ) -> list[GenerationOutput]:
        """One answer per prompt, ``settings.batch_size`` prompts decoded together; prompt ``i``
        samples with seed ``seeds[i]`` (the evaluation runner's per-sample seed), else
        ``settings.seed + i``, whatever batch it shares, so answers do not depend on the batch
        size. A prompt that fails is that prompt's ``error``: a batch that raises is decoded
        again one prompt at a time. ``seconds`` is the batch's wall time shared equally among
        its answers."""
        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        own = [settings.seed + i for i in range(len(prompts))] if seeds is None else list(seeds)
        size = max(1, settings.batch_size)
        outputs: list[GenerationOutput] = []
        for lo in range(0, len(prompts), size):
            chunk = prompts[lo : lo + size]
            outputs += self._generate_batch(chunk, own[lo : lo + size], settings, store)
        if not return_trace:
            for out in outputs:
                out.trace = None
        return outputs

    def _generate_batch(
        self, prompts: list[Interleaved], seeds: list[int], settings: GenerationSettings, store: Any
    ) -> list[GenerationOutput]:
        start = time.perf_counter()
        inputs, outputs = [], []
        for prompt in prompts:
            try:
                inputs.append(self.prompt_inputs(prompt, store))
            except Exception as e:  # noqa: BLE001 - recorded on that prompt's output
                inputs.append(None)
                outputs.append(GenerationOutput(Interleaved(), error=f"{type(e).__name__}: {e}"))
                continue
            outputs.append(GenerationOutput(Interleaved()))
        rows = [k for k, x in enumerate(inputs) if x is not None]

        def gens(ks: list[int]) -> list[torch.Generator | None]:
            return [self.generator(settings, int(seeds[k])) for k in ks]

        answers = None
        if len(rows) > 1:
            try:
                answers = self.decode_batch([inputs[k] for k in rows], settings, store, gens(rows))
            except Exception:  # noqa: BLE001 - retried row by row: the error lands on its row
                answers = None
        if answers is not None:
            each = (time.perf_counter() - start) / max(len(prompts), 1)
            for k, (answer, trace) in zip(rows, answers, strict=True):
                outputs[k] = GenerationOutput(answer, seconds=each, trace=trace)
            return outputs
        for k in rows:
            t0 = time.perf_counter()
            try:
                [(answer, trace)] = self.decode_batch([inputs[k]], settings, store, gens([k]))
            except Exception as e:  # noqa: BLE001 - recorded on that prompt's output
                outputs[k] = GenerationOutput(
                    Interleaved(),
                    error=f"{type(e).__name__}: {e}",
                    seconds=time.perf_counter() - t0,
                )
                continue
            outputs[k] = GenerationOutput(answer, seconds=time.perf_counter() - t0, trace=trace)
        return outputs

    def generator(self, settings: GenerationSettings, seed: int) -> torch.Generator | None:
        """The row's own generator (None when greedy)."""
        if settings.temperature <= 0:
            return None
        return torch.Generator(device=self.device).manual_seed(seed)

    @torch.inference_mode()
    def decode(
        self,
        inputs: Any,
        settings: GenerationSettings,
        store: ImageStore,
        generator: torch.Generator | None,
    ) -> tuple[Interleaved, DecodeTrace]:
        """One prompt through ``decode_batch``."""
        return self.decode_batch([inputs], settings, store, [generator])[0]

    @torch.inference_mode()
    def decode_batch(
        self,
        inputs: list[Any],
        settings: GenerationSettings,
        store: ImageStore,
        generators: list[torch.Generator | None],
    ) -> list[tuple[Interleaved, DecodeTrace]]:
        """The one decode loop plus image decoding, for eval (``generate``) and training
        rollouts (which bring a generator per row): all ``inputs`` (one-row processor outputs)
        on one batched KV cache, each row under its own grammar and generator, then every
        generated image through the VQ decoder in one batch."""
        grammars = [self.grammar(settings) for _ in inputs]
        results = decode_rows(
            self.model,
            [prompt_token_ids(self.model, x) for x in inputs],
            grammars,
            generators,
            temperature=settings.temperature,
            top_p=settings.top_p,
            cfg_scale=settings.cfg_scale,
            uncond_prefix=self.uncond_prefix(),
            pad=self.processor.tokenizer.pad_token_id or 0,
        )
        rows, cols = self.grid_size(settings)
        images = iter(self.decode_grids([g for r in results for g in r.grids], rows, cols))
        tok = self.processor.tokenizer
        out = []
        for result in results:
            segments: list[Segment] = []
            for kind, start, end in result.trace.segments:
                if kind == IMAGE:
                    segments.append(Segment.of_image(store.put_image(next(images))))
                    continue
                ids = result.trace.token_ids[start:end]
                text = tok.decode(ids, skip_special_tokens=True).strip()
                if text:
                    segments.append(Segment.of_text(text))
            out.append((Interleaved(segments), result.trace))
        return out


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
