"""Recompute a rollout's per-token log-probs under the current policy (or a frozen reference).

Janus: one forward pass of the language model over ``prompt + generated[:-1]``, all rollouts of a
batch in one right-padded forward (``models.janus.teacher_forced_hidden``; prompt images through
the vision encoder and aligner, generated text through the token
embeddings, generated image codes through the generation embeddings and aligner, exactly as the
decode loop fed them: ``models.janus.embed_generated``). The hidden state before each generated
position then gives:

* text tokens: the LM head at the rollout temperature, with the decode loop's masks
  (``<image_placeholder>`` and ``<end_of_image>`` never allowed, ``<begin_of_image>`` forbidden
  once ``max_images`` images exist), log-softmax over the allowed tokens before any top-p cut
  (the convention of ``models.sampling``, which the recorded log-probs follow);
* image codes: the generation head at the rollout temperature. ``image_logprob="cond"`` scores
  them under the conditional distribution (no guidance, as T2I-R1 does); ``"cfg"`` adds one
  forward per image over the unconditional row the loop used (every context token but BOS and
  ``<begin_of_image>`` replaced by padding, then the image's codes) and scores under
  ``uncond + cfg_scale * (cond - uncond)``. The rollout's old log-probs must use the same choice
  (``Rollout.old_logprobs(image_logprob)``), otherwise the ratio is off 1 before any update.

Emu3 (``emu3_batch_logprobs``): image tokens are ordinary vocabulary tokens, so one right-padded
forward of the causal LM over all rollouts gives every position; the grammar's replay supplies
each position's allowed set.

Forced tokens (Janus's ``<end_of_image>``, Emu3's header/row ends/tail) were not sampled:
``Rollout.sampled`` marks them and ``batch_mask`` leaves them out. Rows are padded
to ``(B, T)`` with zeros and a boolean mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..models.base import GenerationSettings
from ..models.emu3_decode import prompt_token_ids
from ..models.emu3_grammar import VISUAL
from ..models.families import family_of
from ..models.janus import embed_generated, janus_token_ids, teacher_forced_hidden
from .rollout import IMAGE_LOGPROBS, ImageLogprob, Rollout


def prompt_embeds(model: Any, inputs: Any) -> Tensor:
    """The prompt's input embeddings with its images' features in the placeholder slots."""
    inner = model.model
    ids = inputs["input_ids"].to(model.device)
    embeds = inner.get_input_embeddings()(ids)
    pixels = inputs.get("pixel_values")
    if pixels is not None:
        feats = inner.get_image_features(
            pixels.to(model.device, dtype=embeds.dtype), return_dict=True
        ).pooler_output.reshape(-1, embeds.shape[-1])
        slots = (ids == model.config.image_token_id)[..., None]
        embeds = embeds.masked_scatter(slots, feats.to(embeds.dtype))
    return embeds


def janus_context(model: Any, rollout: Rollout) -> tuple[Tensor, Tensor]:
    """The rollout's prompt embeddings and its generated tokens' embeddings as the loop fed them."""
    tr = rollout.trace
    prompt = prompt_embeds(model, rollout.prompt_inputs)
    return prompt, embed_generated(model, tr.token_ids[:-1], tr.image_mask[:-1])


def _scale(logits: Tensor, temperature: float) -> Tensor:
    return logits / temperature if temperature > 0 else logits


def _entropy(logp: Tensor) -> Tensor:
    """Row entropies of log-probabilities that may hold -inf (disallowed tokens)."""
    p = logp.exp()
    return -(p * logp.masked_fill(p == 0, 0.0)).sum(-1)


def janus_sequence_logprobs(
    model: Any,
    processor: Any,
    rollout: Rollout,
    settings: GenerationSettings,
    *,
    image_logprob: ImageLogprob = "cond",
    hidden: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """``(n,)`` log-probs of the rollout's generated tokens (forced positions hold 0) and the
    ``(n,)`` entropies of the distributions they were scored under (no grad). ``hidden``: the
    rollout's states from a batched ``janus_contexts`` forward (else one forward here)."""
    if image_logprob not in IMAGE_LOGPROBS:
        raise ValueError(f"image_logprob must be one of {IMAGE_LOGPROBS}, got {image_logprob!r}")
    tr = rollout.trace
    n = len(tr.token_ids)
    if n == 0:
        return torch.zeros(0, device=model.device), torch.zeros(0, device=model.device)
    ids = janus_token_ids(model, processor)
    temp = settings.temperature
    if hidden is None:  # (n, H): the state before each generated position
        hidden = teacher_forced_hidden(model, [janus_context(model, rollout)])[0]
    target = torch.tensor(tr.token_ids, device=model.device)
    image = torch.tensor(tr.image_mask, dtype=torch.bool, device=model.device)
    out = hidden.new_zeros(n, dtype=torch.float32)
    ent = torch.zeros(n, device=model.device)

    text_pos = (~image).nonzero().squeeze(-1)
    if len(text_pos):
        logits = model.lm_head(hidden[text_pos]).float()
        banned = torch.zeros_like(logits, dtype=torch.bool)
        banned[:, [ids.placeholder, ids.eoi]] = True
        done = torch.tensor(
            [sum(k == "image" and e <= int(p) for k, _, e in tr.segments) for p in text_pos],
            device=model.device,
        )
        banned[:, ids.boi] = done >= settings.max_images
        logp = torch.log_softmax(_scale(logits.masked_fill(banned, float("-inf")), temp), -1)
        picked = logp.gather(1, target[text_pos, None]).squeeze(1)
        forced = target[text_pos] == ids.eoi
        out = out.index_put((text_pos,), torch.where(forced, 0.0, picked))
        ent[text_pos] = _entropy(logp.detach())

    img_pos = image.nonzero().squeeze(-1)
    if len(img_pos):
        cond = model.model.generation_head(hidden[img_pos]).float()
        if image_logprob == "cfg" and float(settings.cfg_scale) != 1.0:
            uncond = _uncond_logits(model, rollout, ids).to(cond.dtype)
            cond = uncond + float(settings.cfg_scale) * (cond - uncond)
        logp = torch.log_softmax(_scale(cond, temp), -1)
        out = out.index_put((img_pos,), logp.gather(1, target[img_pos, None]).squeeze(1))
        ent[img_pos] = _entropy(logp.detach())
    return out, ent


def _uncond_logits(model: Any, rollout: Rollout, ids: Any) -> Tensor:
    """Generation-head logits of every image code on the loop's unconditional rows."""
    tr = rollout.trace
    prompt_ids = rollout.prompt_inputs["input_ids"][0].tolist()
    # the loop's running context: generated codes were recorded as padding
    context = prompt_ids + [
        ids.pad if m else t for t, m in zip(tr.token_ids, tr.image_mask, strict=True)
    ]
    keep = {ids.bos, ids.boi}
    embed = model.get_input_embeddings()
    rows = []
    for kind, start, end in tr.segments:
        if kind != "image":
            continue
        upto = len(prompt_ids) + start  # context through <begin_of_image>
        u_ids = torch.tensor([[t if t in keep else ids.pad for t in context[:upto]]])
        u_embeds = embed(u_ids.to(model.device))
        codes = embed_generated(model, tr.token_ids[start : end - 1], [True] * (end - 1 - start))
        h = model.model.language_model(
            inputs_embeds=torch.cat([u_embeds, codes.to(u_embeds.dtype)], 1)
        ).last_hidden_state[0, upto - 1 :]
        rows.append(model.model.generation_head(h).float())
    return torch.cat(rows, 0)


def sequence_logprobs(
    adapter: Any,
    rollout: Rollout,
    settings: GenerationSettings,
    *,
    image_logprob: ImageLogprob = "cond",
) -> tuple[Tensor, Tensor]:
    """``(n,)`` recomputed log-probs of one rollout under ``adapter.model`` and the entropies of
    the distributions they come from (the family's ``teacher_forced_logprobs`` on one row)."""
    logp, ent = batch_logprobs(
        adapter, [rollout], settings, image_logprob=image_logprob, with_entropy=True
    )
    n = len(rollout.trace.token_ids)
    return logp[0, :n], ent[0, :n]


def janus_batch_logprobs(
    adapter: Any,
    rollouts: Sequence[Rollout],
    settings: GenerationSettings,
    image_logprob: ImageLogprob = "cond",
) -> tuple[Tensor, Tensor]:
    """Janus's ``teacher_forced_logprobs``: one padded forward for all rollouts, then each
    rollout's heads."""
    model, busy = adapter.model, [r for r in rollouts if r.trace.token_ids]
    states = teacher_forced_hidden(model, [janus_context(model, r) for r in busy])
    hidden = dict(zip(map(id, busy), states, strict=True))
    pairs = [
        janus_sequence_logprobs(
            model,
            adapter.processor,
            r,
            settings,
            image_logprob=image_logprob,
            hidden=hidden.get(id(r)),
        )
        for r in rollouts
    ]
    dev = model.device
    return _pad([a for a, _ in pairs], dev), _pad([b for _, b in pairs], dev)


def emu3_batch_logprobs(
    adapter: Any,
    rollouts: Sequence[Rollout],
    settings: GenerationSettings,
    image_logprob: ImageLogprob = "cond",
) -> tuple[Tensor, Tensor]:
    """Emu3's ``teacher_forced_logprobs``: one right-padded forward over every rollout's
    ``prompt + generated[:-1]`` (all ordinary vocabulary tokens; the LM head only on generated
    positions), then each position's allowed set from ``ImageGrammar.replay``; forced positions
    hold 0. With ``"cfg"`` one more padded forward covers every image's unconditional stream
    (``uncond_prefix`` then the image span) and visual tokens are scored under
    ``u + s * (c - u)`` of the log-softmaxed visual logits, then the allowed-set log-softmax at
    the temperature, as sampled."""
    model = adapter.model
    busy = [r for r in rollouts if r.trace.token_ids]
    prompts: dict[int, list[int]] = {}  # a group's rollouts share one prompt_inputs
    for r in busy:
        if id(r.prompt_inputs) not in prompts:
            prompts[id(r.prompt_inputs)] = prompt_token_ids(model, r.prompt_inputs)
    rows = []
    for r in busy:
        p, n = prompts[id(r.prompt_inputs)], len(r.trace.token_ids)
        rows.append((p + r.trace.token_ids[:-1], len(p) - 1, n))
    logits = dict(zip(map(id, busy), _padded_logits(model, rows), strict=True))
    # a prompt may open an image (``ImageGrammar.resume``): its grid starts the answer
    opened = {id(r): adapter.grammar(settings).resume(prompts[id(r.prompt_inputs)]) for r in busy}
    u_logits = {}
    if image_logprob == "cfg":
        u_logits = _emu3_uncond_logits(adapter, busy, settings, opened)
    pairs = [
        _emu3_rollout_logprobs(
            adapter, r, settings, logits[id(r)], u_logits.get(id(r), {}), opened[id(r)]
        )
        if id(r) in logits
        else (torch.zeros(0, device=model.device), torch.zeros(0, device=model.device))
        for r in rollouts
    ]
    dev = model.device
    return _pad([a for a, _ in pairs], dev), _pad([b for _, b in pairs], dev)


def _padded_logits(model: Any, rows: list[tuple[list[int], int, int]]) -> list[Tensor]:
    """Per row ``(ids, start, n)``: float32 ``(n, V)`` logits at positions ``start..start+n-1``
    of ``ids``, all rows in one right-padded forward (causality hides the padding)."""
    if not rows:
        return []
    width = max(len(ids) for ids, _, _ in rows)
    batch = torch.zeros(len(rows), width, dtype=torch.long)
    att = torch.zeros_like(batch)
    for b, (ids, _, _) in enumerate(rows):
        batch[b, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        att[b, : len(ids)] = 1
    hidden = model.model(
        input_ids=batch.to(model.device), attention_mask=att.to(model.device), use_cache=False
    ).last_hidden_state
    return [model.lm_head(hidden[b, s : s + n]).float() for b, (_, s, n) in enumerate(rows)]


def _emu3_uncond_logits(
    adapter: Any,
    rollouts: Sequence[Rollout],
    settings: GenerationSettings,
    opened: dict[int, list[int]],
) -> dict[int, dict[int, Tensor]]:
    """Per rollout, position ``k`` of each image token -> the unconditional logits the loop's
    CFG stream had before it (one padded forward over every image of every rollout). An image
    the prompt opened starts its stream from ``uncond_prefix`` plus that opening."""
    if float(settings.cfg_scale) == 1.0:
        return {}
    prefix = adapter.uncond_prefix()
    rows, owners = [], []
    for r in rollouts:
        tr = r.trace
        for kind, start, end in tr.segments:
            if kind != "image":
                continue
            if tr.token_ids[start] == adapter.vocab.boi:  # the image start: a text-mode choice
                ctx, first = [*prefix, *tr.token_ids[start : end - 1]], start + 1
            else:
                ctx, first = [*prefix, *opened[id(r)], *tr.token_ids[start : end - 1]], start
            rows.append((ctx, len(ctx) - (end - first), end - first))
            owners.append((id(r), first))
    out: dict[int, dict[int, Tensor]] = {}
    for (owner, first), u in zip(owners, _padded_logits(adapter.model, rows), strict=True):
        for j in range(len(u)):
            out.setdefault(owner, {})[first + j] = u[j]
    return out


def _emu3_rollout_logprobs(
    adapter: Any,
    rollout: Rollout,
    settings: GenerationSettings,
    logits: Tensor,
    u_rows: dict[int, Tensor],
    opening: list[int],
) -> tuple[Tensor, Tensor]:
    """One rollout's ``(n,)`` log-probs and entropies from its teacher-forced logits."""
    from ..models.sampling import allowed_logprobs

    dev = logits.device
    tokens = rollout.trace.token_ids
    grammar = adapter.grammar(settings)
    if opening:
        grammar.resume([*opening])  # the same state the loop started the answer in
    steps = grammar.replay(tokens)
    forced = torch.tensor([st.forced is not None for st in steps], device=dev)
    masks = torch.stack([grammar.mask(st.kind, dev) for st in steps])
    guided = [k for k, st in enumerate(steps) if k in u_rows and st.kind == VISUAL]
    scores = logits
    if guided:
        visual = torch.tensor(grammar.vocab.visual, device=dev)
        scale = float(settings.cfg_scale)
        gi = torch.tensor(guided, device=dev)
        c = torch.log_softmax(logits[gi][:, visual], -1)
        u = torch.log_softmax(torch.stack([u_rows[k] for k in guided])[:, visual], -1)
        scores = logits.index_put((gi,), torch.full_like(logits[gi], float("-inf")))
        scores = scores.index_put((gi[:, None], visual[None]), u + scale * (c - u))
    logp = allowed_logprobs(scores, masks, settings.temperature)
    target = torch.tensor(tokens, device=dev)
    picked = logp.gather(1, target[:, None]).squeeze(1)
    out = torch.where(forced, torch.zeros_like(picked), picked)
    ent = torch.where(forced, 0.0, _entropy(logp.detach()))
    return out, ent


def text_batch_logprobs(
    adapter: Any,
    rollouts: Sequence[Rollout],
    settings: GenerationSettings,
    image_logprob: ImageLogprob = "cond",
) -> tuple[Tensor, Tensor]:
    """Text family's ``teacher_forced_logprobs`` (no images: ``image_logprob`` is moot): one
    batched forward over ``[left-padded prompt | right-padded answer]``
    (position ids from the attention mask, as ``generate`` used), logits kept only from the last
    prompt position on."""
    model = adapter.model
    dev = model.device
    pad = adapter.processor.pad_token_id
    prompts = [r.prompt_inputs["input_ids"][0].tolist() for r in rollouts]
    answers = [r.trace.token_ids for r in rollouts]
    p_len, t_len = max(len(p) for p in prompts), max([len(a) for a in answers] + [1])
    ids = torch.full((len(rollouts), p_len + t_len), pad, dtype=torch.long)
    att = torch.zeros_like(ids)
    for k, (p, a) in enumerate(zip(prompts, answers, strict=True)):
        ids[k, p_len - len(p) : p_len + len(a)] = torch.tensor(p + a, dtype=torch.long)
        att[k, p_len - len(p) : p_len + len(a)] = 1
    ids, att = ids.to(dev), att.to(dev)
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    logits = model(
        input_ids=ids[:, :-1],
        attention_mask=att[:, :-1],
        position_ids=pos[:, :-1],
        logits_to_keep=t_len,
    ).logits.float()
    temp = settings.temperature if settings.temperature > 0 else 1.0
    logp_all = torch.log_softmax(logits / temp, -1)
    logp = logp_all.gather(-1, ids[:, p_len:, None]).squeeze(-1)
    return logp * att[:, p_len:], _entropy(logp_all.detach()) * att[:, p_len:]


def batch_logprobs(
    adapter: Any,
    rollouts: Sequence[Rollout],
    settings: GenerationSettings,
    *,
    image_logprob: ImageLogprob = "cond",
    with_entropy: bool = False,
) -> Any:
    """``(B, T)`` recomputed log-probs, zero-padded; grad flows when grad is enabled. With
    ``with_entropy`` also the ``(B, T)`` entropies (no grad). The family's
    ``teacher_forced_logprobs`` capability computes them."""
    if image_logprob not in IMAGE_LOGPROBS:
        raise ValueError(f"image_logprob must be one of {IMAGE_LOGPROBS}, got {image_logprob!r}")
    forced = family_of(adapter).require("teacher_forced_logprobs")
    logp, ent = forced(adapter, rollouts, settings, image_logprob)
    return (logp, ent) if with_entropy else logp


def old_logprobs(
    rollouts: Sequence[Rollout], image_logprob: ImageLogprob, device: Any = "cpu"
) -> Tensor:
    """``(B, T)`` log-probs recorded at sampling time, with the chosen image distribution."""
    rows = [torch.tensor(r.old_logprobs(image_logprob), dtype=torch.float32) for r in rollouts]
    return _pad(rows, device)


def batch_mask(rollouts: Sequence[Rollout], device: Any = "cpu") -> Tensor:
    """``(B, T)`` bool: sampled positions of each rollout (padding and forced tokens false)."""
    rows = [torch.tensor(r.sampled or [], dtype=torch.bool) for r in rollouts]
    return _pad(rows, device).bool()


def _pad(rows: list[Tensor], device: Any) -> Tensor:
    width = max([len(r) for r in rows] + [1])
    pad = torch.nn.functional.pad
    return torch.stack([pad(r.float().to(device), (0, width - len(r))) for r in rows])
