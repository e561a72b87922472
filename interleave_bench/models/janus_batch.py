"""Janus: B interleaved answers decoded together on one batched KV cache.

Same answers as ``janus.decode_interleaved`` row by row (greedy: token for token; sampling: each
row draws from its own generator in the same order, so an answer does not depend on its
neighbours), with the per-step cost shared across rows:

* the prompts are prefilled in one left-padded forward (their images through the vision encoder
  together); padded positions are masked out and each slot keeps its own position ids, so a row
  sees what it would see alone;
* one cache holds *slots*: the conditional slot of each unfinished answer, plus an
  unconditional CFG slot for each answer in image mode only (made by its own prefill when the
  answer opens an image, dropped after its last code). Each step feeds one token to every slot in
  a single forward: text ids through the token embeddings, image codes through the generation
  embeddings and aligner;
* rows switch modes independently: text rows go through the LM head, image rows through the
  generation head with guidance, a row that just finished an image feeds the forced
  ``<end_of_image>``;
* a finished answer's slot leaves the cache (and leading columns that only padded it are
  trimmed), so it stops costing compute;
* images are decoded to pixels together at the end, up to ``IMAGES_PER_CALL`` grids per VQ
  decoder call.

Numerics: padded rows run matmuls of other shapes than a single row, so hidden states can differ
from the single-row path in the last float bits. Greedy tokens are equal (tested); recorded
log-probs agree to about 1e-6 in float32 (tests allow 1e-5).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .base import DecodeTrace, GenerationSettings
from .sampling import allowed_logprobs, cache_kwarg, output_cache

if TYPE_CHECKING:
    import torch

    from .janus_parts import DecodeResult


IMAGES_PER_CALL = 16  # grids per VQ decoder call: its activations at 384 px are large


@dataclass
class _Row:
    """One answer's state while the batch decodes."""

    context: list[int]  # the running sequence as text ids (codes -> padding), for CFG prefills
    generator: Any
    trace: DecodeTrace | None
    mode: str = "text"  # text | image | eoi | done
    parts: list[Any] = field(default_factory=list)  # str, or an int: index into ``codes``
    codes: list[list[int]] = field(default_factory=list)
    run: list[int] = field(default_factory=list)
    seg_start: int = 0
    img_start: int = 0
    n_text: int = 0
    stop: str = "length"
    n_pos: int = 0  # generated positions (the trace length when traced)

    def record(self, token: int, logprob: float, is_image: bool, cond: float) -> None:
        self.n_pos += 1
        if self.trace is not None:
            self.trace.token_ids.append(token)
            self.trace.logprobs.append(logprob)
            self.trace.image_mask.append(is_image)
            self.trace.cond_logprobs.append(cond)  # type: ignore[union-attr]

    def segment(self, kind: str, start: int) -> None:
        if self.trace is not None:
            self.trace.segments.append((kind, start, self.n_pos))


@dataclass
class _Slot:
    """One row of the batched cache: the conditional or the unconditional sequence of a row."""

    row: int
    uncond: bool
    n_real: int  # real (unpadded) positions in the cache = the next position id


class _Batch:
    """The batched cache, its padding mask and each slot's last hidden state."""

    def __init__(self, lm: Any) -> None:
        self.lm = lm
        self.slots: list[_Slot] = []
        self.cache: Any = None
        self.mask: torch.Tensor | None = None  # (S, L) 1 = real position
        self.hidden: torch.Tensor | None = None  # (S, hidden)

    def index(self, row: int, uncond: bool) -> int:
        return next(k for k, s in enumerate(self.slots) if s.row == row and s.uncond == uncond)

    def add(self, slots: list[_Slot], cache: Any, mask: torch.Tensor, hidden: torch.Tensor) -> None:
        """Append slots from a cache of their own (``mask``: its padding), left-padding whichever
        side is shorter."""
        import torch

        if self.cache is None:
            self.cache, self.mask, self.hidden, self.slots = cache, mask, hidden, list(slots)
            return
        assert self.mask is not None and self.hidden is not None
        width = max(mask.shape[1], self.mask.shape[1])
        for mine, new in zip(self.cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([_left_pad(mine.keys, width), _left_pad(new.keys, width)])
            mine.values = torch.cat([_left_pad(mine.values, width), _left_pad(new.values, width)])
        self.mask = torch.cat([_left_pad(self.mask, width), _left_pad(mask.to(self.mask), width)])
        self.hidden = torch.cat([self.hidden, hidden])
        self.slots += slots

    def keep(self, keep: list[int]) -> None:
        """Keep only these slots; trim leading columns that are padding in every kept slot."""
        import torch

        assert self.mask is not None and self.hidden is not None
        if len(keep) == len(self.slots):
            return
        if not keep:
            self.slots, self.cache, self.mask, self.hidden = [], None, None, None
            return
        idx = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        mask = self.mask[idx]
        first = int(mask.any(0).long().argmax())
        for layer in self.cache.layers:
            layer.keys = layer.keys[idx, :, first:]
            layer.values = layer.values[idx, :, first:]
        self.mask, self.hidden = mask[:, first:], self.hidden[idx]
        self.slots = [self.slots[k] for k in keep]

    def step(self, embeds: torch.Tensor) -> None:
        """Feed one input embedding per slot (``(S, 1, hidden)``) in one forward."""
        import torch

        assert self.mask is not None
        ones = torch.ones(len(self.slots), 1, dtype=self.mask.dtype, device=self.mask.device)
        self.mask = torch.cat([self.mask, ones], 1)
        pos = torch.tensor([[s.n_real] for s in self.slots], device=self.mask.device)
        out = self.lm(
            inputs_embeds=embeds,
            attention_mask=self.mask,
            position_ids=pos,
            use_cache=True,
            **{cache_kwarg(self.lm): self.cache},
        )
        self.cache, self.hidden = output_cache(out), out.last_hidden_state[:, -1]
        for s in self.slots:
            s.n_real += 1


def _padded(seqs: list[list[int]], pad: int, device: Any) -> tuple[Any, Any, Any]:
    """Left-padded ids, their mask and position ids (each row counts from 0 at its first token)."""
    import torch

    width = max(len(q) for q in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for k, q in enumerate(seqs):
        ids[k, width - len(q) :] = torch.tensor(q, dtype=torch.long)
        mask[k, width - len(q) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def _prefill(
    model: Any, batch: _Batch, inputs: list[Any], prompts: list[list[int]], pad: int
) -> None:
    """All prompts in one left-padded forward (images through the vision encoder together, in
    row order): one conditional slot per prompt."""
    import torch

    ids, mask, pos = _padded(prompts, pad, model.device)
    pixels = [x["pixel_values"] for x in inputs if x.get("pixel_values") is not None]
    dtype = model.get_input_embeddings().weight.dtype
    out = model.model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=pos,
        pixel_values=torch.cat(pixels).to(model.device, dtype=dtype) if pixels else None,
        use_cache=True,
    )
    slots = [_Slot(k, False, len(p)) for k, p in enumerate(prompts)]
    batch.add(slots, output_cache(out), mask, out.last_hidden_state[:, -1])


def _left_pad(x: torch.Tensor, width: int) -> torch.Tensor:
    """Zero-pad dim -2 (a cache) or dim -1 (a mask) on the left up to ``width``."""
    import torch.nn.functional as F

    if x.dim() == 2:
        return F.pad(x, (width - x.shape[-1], 0))
    return F.pad(x, (0, 0, width - x.shape[-2], 0))


def _choose(
    logits: torch.Tensor, rows: list[_Row], temperature: float, top_p: float
) -> tuple[list[int], torch.Tensor]:
    """One token per row of ``logits`` (greedy in one argmax, else a draw from each row's own
    generator, as ``sampling.sample_token`` draws) and the ``(R, V)`` log-probs judged under."""
    import torch

    logp = allowed_logprobs(logits, None, temperature)
    if temperature <= 0:
        return logp.argmax(-1).tolist(), logp
    tokens = []
    for k, row in enumerate(rows):
        probs = logp[k].exp()
        if top_p < 1.0:
            sorted_p, order = torch.sort(probs, descending=True)
            drop = torch.cumsum(sorted_p, dim=-1) - sorted_p >= top_p
            probs = probs.scatter(0, order, sorted_p.masked_fill(drop, 0.0))
        tokens.append(int(torch.multinomial(probs, 1, generator=row.generator)))
    return tokens, logp


def decode_batch(
    model: Any,
    processor: Any,
    prompt_inputs: list[Any],
    settings: GenerationSettings,
    *,
    want_trace: bool = False,
    generators: list[torch.Generator | None] | None = None,
) -> list[DecodeResult]:
    """Decode one answer per prompt row together (see the module docstring).

    ``generators[i]`` is row i's generator (``None``: seeded from ``settings.seed``, as the
    single-row loop does). Returns one ``DecodeResult`` per row, in order.
    """
    import torch

    from .janus_parts import DecodeResult, janus_token_ids

    ids = janus_token_ids(model, processor)
    device = model.device
    temperature, top_p, cfg = settings.temperature, settings.top_p, float(settings.cfg_scale)
    cond_temp = temperature if temperature > 0 else 1.0
    n_codes = int(model.model.vision_model.config.num_image_tokens)
    lm = model.model.language_model
    embed = model.get_input_embeddings()
    gens = list(generators) if generators is not None else [None] * len(prompt_inputs)
    if len(gens) != len(prompt_inputs):
        raise ValueError(f"{len(prompt_inputs)} prompts but {len(gens)} generators")
    for k, g in enumerate(gens):
        if g is None and temperature > 0:
            gens[k] = torch.Generator(device=device).manual_seed(settings.seed)

    rows: list[_Row] = []
    batch = _Batch(lm)
    with torch.no_grad():
        prompts = []
        for k, inputs in enumerate(prompt_inputs):
            input_ids = inputs["input_ids"]
            if input_ids.shape[0] != 1:
                raise ValueError(f"prompt {k}: one row per prompt, got {input_ids.shape[0]}")
            prompts.append(input_ids[0].tolist())
            rows.append(
                _Row(prompts[-1], gens[k], DecodeTrace(cond_logprobs=[]) if want_trace else None)
            )
        _prefill(model, batch, prompt_inputs, prompts, ids.pad)

        def open_images(ks: list[int]) -> None:
            """These rows' ``<begin_of_image>`` is in their context: their unconditional slots
            join, prefilled together."""
            for k in ks:
                rows[k].mode, rows[k].codes = "image", [*rows[k].codes, []]
                rows[k].img_start = rows[k].n_pos
            if cfg == 1.0 or not ks:
                return
            keep = {ids.bos, ids.boi}
            uncond = [[t if t in keep else ids.pad for t in rows[k].context] for k in ks]
            u_ids, u_mask, u_pos = _padded(uncond, ids.pad, device)
            out = lm(
                inputs_embeds=embed(u_ids),
                attention_mask=u_mask,
                position_ids=u_pos,
                use_cache=True,
            )
            slots = [_Slot(k, True, len(u)) for k, u in zip(ks, uncond, strict=True)]
            batch.add(slots, output_cache(out), u_mask, out.last_hidden_state[:, -1])

        for row in rows:
            if row.context[-1] != ids.boi and settings.max_new_tokens <= 0:
                row.mode = "done"
        # text-to-image prompts: the image is already open
        open_images([k for k, row in enumerate(rows) if row.context[-1] == ids.boi])

        while batch.slots:
            assert batch.hidden is not None
            feed: dict[int, tuple[str, int]] = {}  # slot index -> ("text" | "code", id)
            opened: list[int] = []
            cond_of = {s.row: i for i, s in enumerate(batch.slots) if not s.uncond}
            uncond_of = {s.row: i for i, s in enumerate(batch.slots) if s.uncond}
            live = sorted(cond_of)
            text_rows = [k for k in live if rows[k].mode == "text"]
            image_rows = [k for k in live if rows[k].mode == "image"]
            if text_rows:
                sel = torch.tensor([cond_of[k] for k in text_rows], device=device)
                logits = model.lm_head(batch.hidden[sel]).float()
                logits[:, [ids.placeholder, ids.eoi]] = float("-inf")
                for j, k in enumerate(text_rows):
                    if len(rows[k].codes) >= settings.max_images:
                        logits[j, ids.boi] = float("-inf")
                tokens, logp = _choose(logits, [rows[k] for k in text_rows], temperature, top_p)
                chosen = logp.gather(1, torch.tensor(tokens, device=device)[:, None])[:, 0].tolist()
                for k, token, lp in zip(text_rows, tokens, chosen, strict=True):
                    row = rows[k]
                    row.record(token, lp, False, lp)
                    row.n_text += 1
                    if token in ids.eos:
                        row.stop, row.mode = "eos", "done"
                    elif token != ids.boi:
                        row.run.append(token)
                        row.context.append(token)
                        if row.n_text < settings.max_new_tokens:
                            feed[cond_of[k]] = ("text", token)
                        else:
                            row.mode = "done"
                    else:
                        _flush(processor, row)
                        row.segment("text", row.seg_start)
                        row.context.append(ids.boi)
                        feed[cond_of[k]] = ("text", ids.boi)
                        opened.append(k)
            if image_rows:
                head = model.model.generation_head
                cond = head(
                    batch.hidden[torch.tensor([cond_of[k] for k in image_rows], device=device)]
                ).float()
                guided = cond
                if cfg != 1.0:
                    u_sel = torch.tensor([uncond_of[k] for k in image_rows], device=device)
                    u = head(batch.hidden[u_sel]).float()
                    guided = u + cfg * (cond - u)
                codes, logp = _choose(guided, [rows[k] for k in image_rows], temperature, top_p)
                at = torch.tensor(codes, device=device)[:, None]
                chosen = logp.gather(1, at)[:, 0].tolist()
                cond_lp = torch.log_softmax(cond / cond_temp, -1).gather(1, at)[:, 0].tolist()
                for k, code, lp, clp in zip(image_rows, codes, chosen, cond_lp, strict=True):
                    row = rows[k]
                    row.record(code, lp, True, clp)
                    row.codes[-1].append(code)
                    feed[cond_of[k]] = ("code", code)
                    if len(row.codes[-1]) < n_codes:
                        if k in uncond_of:
                            feed[uncond_of[k]] = ("code", code)
                        continue
                    row.segment("image", row.img_start)
                    row.parts.append(len(row.codes) - 1)
                    row.context.extend([ids.pad] * n_codes + [ids.eoi])
                    row.mode = "eoi"
            for k in live:  # rows that drew their last code last step: the forced end of image
                row = rows[k]
                if row.mode != "eoi" or cond_of[k] in feed:
                    continue
                row.seg_start = row.n_pos
                row.record(ids.eoi, 0.0, False, 0.0)
                if row.n_text < settings.max_new_tokens:
                    row.mode = "text"
                    feed[cond_of[k]] = ("text", ids.eoi)
                else:
                    row.mode = "done"
            batch.keep([i for i in range(len(batch.slots)) if i in feed])
            if batch.slots:
                order = [feed[i] for i in sorted(feed)]
                batch.step(_embed(model, embed, order))
            open_images(opened)

    results = []
    grids = [c for row in rows for c in row.codes]
    images = _decode_images(model, processor, grids, min(len(rows), IMAGES_PER_CALL))
    at = 0
    for row in rows:
        _flush(processor, row)
        if row.n_pos > row.seg_start:
            row.segment("text", row.seg_start)
        parts = [images[at + p] if isinstance(p, int) else p for p in row.parts]
        at += len(row.codes)
        results.append(DecodeResult(parts, row.codes, row.stop, row.trace))
    return results


def _flush(processor: Any, row: _Row) -> None:
    """Close the row's current text run into a text part (dropped when empty)."""
    text = processor.tokenizer.decode(row.run, skip_special_tokens=True).strip()
    if text:
        row.parts.append(text)
    row.run.clear()


def _embed(model: Any, embed: Any, order: list[tuple[str, int]]) -> torch.Tensor:
    """``(S, 1, hidden)`` input embeddings: text ids and image codes, each through its table."""
    import torch

    device = model.device
    ids = torch.tensor([i for _, i in order], dtype=torch.long, device=device)
    is_code = torch.tensor([kind == "code" for kind, _ in order], device=device)
    text = embed(ids.masked_fill(is_code, 0))
    if not bool(is_code.any()):
        return text[:, None]
    image = model.prepare_embeddings_for_image_generation(ids.masked_fill(~is_code, 0))
    return torch.where(is_code[:, None], image.to(text.dtype), text)[:, None]


def _decode_images(model: Any, processor: Any, grids: list[list[int]], per_call: int) -> list[Any]:
    """VQ codes of many images -> PIL images, ``per_call`` grids per decoder call."""
    import torch

    from .janus_parts import pixels_to_image

    out: list[Any] = []
    with torch.no_grad():
        for a in range(0, len(grids), max(1, per_call)):
            grid = torch.tensor(grids[a : a + per_call], dtype=torch.long, device=model.device)
            pixels = model.decode_image_tokens(grid).float().cpu()
            out.extend(pixels_to_image(processor, p) for p in pixels)
    return out
