"""Emu3's decode loop over many answers at once: one batched KV cache, one grammar per row.

Every row is in its own grammar state at each step (text, header, grid, tail; see
``emu3_grammar``) and draws from its own ``torch.Generator``, so an answer depends on its prompt,
its seed and the weights, never on the rows it shared a batch with. Greedy rows equal the
one-row answer token for token (float32 on CPU).

``RowStream`` keeps rows of different lengths in one cache without left padding: a step feeds
each row its own tokens, right-padded to the step's width; pad columns are visible during that
step only (they follow the row's real tokens, so causality hides them from those) and masked
from then on. Position ids count each row's real tokens. A row can be restarted (its past
masked out), which is how the classifier-free-guidance stream of a row begins each image from
``uncond_prefix`` while other rows are mid-image or in text. Finished rows leave the cache
(``Cache.batch_select_indices``), so they stop costing compute.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .base import DecodeTrace
from .emu3_grammar import GRID, HEADER, IMAGE, TEXT, VISUAL, ImageGrammar
from .sampling import allowed_logprobs, cache_kwarg, output_cache


@dataclass
class DecodeResult:
    """A decoded answer: its trace and, per image, the row-major visual token ids."""

    trace: DecodeTrace
    grids: list[list[int]]


class RowStream:
    """A batched KV cache whose rows hold token streams of their own lengths (see module doc)."""

    def __init__(self, model: Any, rows: int, pad: int, device: Any) -> None:
        self.model, self.pad, self.device = model, pad, device
        self.cache: Any = None
        self.mask = torch.zeros(rows, 0, dtype=torch.long, device=device)
        self.pos = torch.zeros(rows, dtype=torch.long, device=device)

    def feed(self, tokens: Sequence[Sequence[int]], restart: Sequence[bool] = ()) -> torch.Tensor:
        """Append ``tokens[r]`` to row ``r`` (``[]``: nothing) and return each row's logits after
        its last real token (float32 ``(rows, V)``; rows fed nothing hold garbage). A row with
        ``restart[r]`` forgets its past first."""
        n = len(tokens)
        width = max(1, *(len(t) for t in tokens))
        ids = torch.full((n, width), self.pad, dtype=torch.long)
        last = torch.zeros(n, dtype=torch.long)
        real = torch.zeros(n, width, dtype=torch.long)
        for r, toks in enumerate(tokens):
            if toks:
                ids[r, : len(toks)] = torch.tensor(list(toks), dtype=torch.long)
                real[r, : len(toks)] = 1
                last[r] = len(toks) - 1
        for r, again in enumerate(restart):
            if again:
                self.mask[r] = 0
                self.pos[r] = 0
        ids, real, last = ids.to(self.device), real.to(self.device), last.to(self.device)
        positions = self.pos[:, None] + torch.arange(width, device=self.device)[None]
        step_mask = torch.cat([self.mask, torch.ones_like(real)], 1)
        out = self.model(
            input_ids=ids,
            attention_mask=step_mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=width,
            **{cache_kwarg(self.model): self.cache},
        )
        self.cache = output_cache(out)
        self.mask = torch.cat([self.mask, real], 1)
        self.pos = self.pos + real.sum(1)
        return out.logits[torch.arange(n, device=self.device), last].float()

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only ``rows`` (indices into the current rows), in that order."""
        index = torch.tensor(list(rows), dtype=torch.long, device=self.device)
        if self.cache is not None:
            self.cache.batch_select_indices(index)
        self.mask, self.pos = self.mask[index], self.pos[index]


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


def _choose(
    scores: torch.Tensor, temperature: float, top_p: float, generators: Sequence[Any]
) -> list[int]:
    """Per row: the argmax (temperature 0) or a draw from the nucleus with the row's generator."""
    if temperature <= 0:
        return torch.argmax(scores, -1).tolist()
    probs = scores.exp()
    picked = []
    for row, gen in zip(probs, generators, strict=True):
        if top_p < 1.0:
            sorted_p, order = torch.sort(row, descending=True)
            drop = torch.cumsum(sorted_p, dim=-1) - sorted_p >= top_p  # the top token stays
            row = row.scatter(0, order, sorted_p.masked_fill(drop, 0.0))
        picked.append(int(torch.multinomial(row, 1, generator=gen)))
    return picked


@torch.no_grad()
def decode_rows(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    grammars: Sequence[ImageGrammar],
    generators: Sequence[torch.Generator | None],
    *,
    temperature: float = 0.0,
    top_p: float = 1.0,
    cfg_scale: float = 1.0,
    uncond_prefix: Sequence[int] = (),
    pad: int = 0,
) -> list[DecodeResult]:
    """Decode one answer per prompt (token ids, images already tokenized), all rows together.

    Row ``r`` follows ``grammars[r]`` and samples with ``generators[r]``; the log-prob and CFG
    conventions are those of ``models.emu3`` (the one-row ``interleaved_decode`` is this loop).
    """
    n = len(prompt_ids)
    device = model.device
    use_cfg = cfg_scale != 1.0
    visual = torch.tensor(grammars[0].vocab.visual, device=device) if n else None
    traces = [DecodeTrace(cond_logprobs=[], cfg_logprobs=use_cfg) for _ in range(n)]
    kinds: list[list[str]] = [[] for _ in range(n)]
    openings = [g.resume(list(p)) for g, p in zip(grammars, prompt_ids, strict=True)]
    grids: list[list[list[int]]] = [[[]] if o else [] for o in openings]

    live = [r for r in range(n) if not grammars[r].done]  # rows in the caches, in cache order
    main = RowStream(model, len(live), pad, device)
    logits = main.feed([prompt_ids[r] for r in live]) if live else None
    uncond: RowStream | None = None
    u_on = [False] * len(live)  # per cache row: its CFG stream holds the current image
    u_logits: torch.Tensor | None = None
    if use_cfg and any(openings[r] for r in live):
        uncond = RowStream(model, len(live), pad, device)
        feed = [[*uncond_prefix, *openings[r]] if openings[r] else [] for r in live]
        u_logits = uncond.feed(feed)
        u_on = [bool(openings[r]) for r in live]

    while live:
        assert logits is not None
        steps = [grammars[r].allowed() for r in live]
        tokens: list[int] = [0] * len(live)
        lps, clps = [0.0] * len(live), [0.0] * len(live)
        free = [k for k, s in enumerate(steps) if s.forced is None]
        for k, s in enumerate(steps):
            if s.forced is not None:
                tokens[k] = s.forced
        if free:
            idx = torch.tensor(free, device=device)
            raw = logits[idx]
            masks = torch.stack([grammars[live[k]].mask(steps[k].kind, device) for k in free])
            scores = raw
            guided = [
                j for j, k in enumerate(free) if use_cfg and steps[k].kind == VISUAL and u_on[k]
            ]
            if guided:
                assert u_logits is not None and visual is not None
                gi = torch.tensor(guided, device=device)
                rows = idx[gi]
                c = torch.log_softmax(raw[gi][:, visual], -1)
                u = torch.log_softmax(u_logits[rows][:, visual], -1)
                scores = raw.clone()
                scores[gi] = float("-inf")
                scores[gi[:, None], visual[None]] = u + cfg_scale * (c - u)
            logp = allowed_logprobs(scores, masks, temperature)
            gens = [generators[live[k]] for k in free]
            picked = _choose(logp, temperature, top_p, gens)
            cond = allowed_logprobs(raw, masks, temperature) if guided else logp
            for j, k in enumerate(free):
                tokens[k] = picked[j]
                lps[k] = float(logp[j, picked[j]])
                clps[k] = float(cond[j, picked[j]])
        for k, r in enumerate(live):
            g, tok, tr = grammars[r], tokens[k], traces[r]
            in_image = g.mode != TEXT
            if steps[k].kind == VISUAL and steps[k].forced is None:
                grids[r][-1].append(tok)
            if g.mode == TEXT and tok == g.vocab.boi:
                in_image = True
                grids[r].append([])
            tr.token_ids.append(tok)
            tr.logprobs.append(lps[k])
            tr.cond_logprobs.append(clps[k])  # type: ignore[union-attr]
            tr.image_mask.append(in_image)
            kinds[r].append(IMAGE if in_image else TEXT)
            g.advance(tok)

        keep = [k for k, r in enumerate(live) if not grammars[r].done]
        if len(keep) < len(live):
            main.keep(keep)
            if uncond is not None:
                uncond.keep(keep)
            live = [live[k] for k in keep]
            tokens = [tokens[k] for k in keep]
            u_on = [u_on[k] for k in keep]
        if not live:
            break
        logits = main.feed([[t] for t in tokens])
        if not use_cfg:
            continue
        wants = [grammars[r].mode in (HEADER, GRID) for r in live]
        if not any(wants):
            uncond, u_logits, u_on = None, None, [False] * len(live)
            continue
        if uncond is None:
            uncond = RowStream(model, len(live), pad, device)
        start = [w and not on for w, on in zip(wants, u_on, strict=True)]
        feed = [
            ([*uncond_prefix, t] if s else [t]) if w else []
            for w, s, t in zip(wants, start, tokens, strict=True)
        ]
        u_logits = uncond.feed(feed, restart=start)
        u_on = wants

    return [
        DecodeResult(trace=_finish(traces[r], kinds[r], grammars[r].vocab.boi), grids=grids[r])
        for r in range(n)
    ]


def _finish(trace: DecodeTrace, kinds: list[str], boi: int) -> DecodeTrace:
    trace.segments = _spans(kinds, trace.token_ids, boi)
    return trace


def prompt_token_ids(model: Any, inputs: Mapping[str, torch.Tensor]) -> list[int]:
    """A one-row processor output as plain token ids: input images become their visual tokens
    (exactly what Emu3's forward puts in the ``<image>`` slots), so prompts batch as ids."""
    ids = inputs["input_ids"][0].clone()
    pixels = inputs.get("pixel_values")
    if pixels is not None:
        inner = model.model
        codes = inner.get_image_tokens(pixels.to(model.device), inputs["image_sizes"])
        slots = ids == inner.vocabulary_mapping.image_token_id
        ids[slots] = codes.to(ids.device, ids.dtype)
    return ids.tolist()
