"""The GRPO objective: group-relative advantages (outcome and process) and the clipped loss.

Conventions (the formulas are the published GRPO/DAPO/Dr. GRPO/GSPO ones, as TRL names them):

- Tensors are ``(B, T)``: B completions (G per prompt, a prompt's G completions adjacent, as
  ``repeat_interleave`` lays them out), T generated positions, ``mask`` true on positions that
  count. Text and image tokens are one trajectory; which head produced a log-prob is the rollout's
  business, not the loss's.
- Standard deviations are the unbiased (Bessel, ``n - 1``) estimate, as ``torch.std`` computes
  and TRL uses; the denominator is ``std + eps`` so a zero-spread group gives zero advantages
  instead of a division by zero.
- A reward of ``None``/NaN means "not applicable" (a judge error or an invalid judgment): it is
  left out of its group's mean and std and its completion gets advantage 0, so it adds no
  gradient. TRL differs here: it sums weighted rewards with ``nansum``, so a completion for which
  every reward function returned ``None`` counts as reward 0 inside the baseline. Ours never turns
  a failure into a score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from .config import CHOICES

LossType = Literal["grpo", "bnpo", "dr_grpo", "dapo"]
Importance = Literal["token", "sequence"]
ScaleRewards = Literal["group", "batch", "none"]
LOSS_TYPES: tuple[str, ...] = CHOICES["loss_type"]
IMPORTANCE_LEVELS: tuple[str, ...] = CHOICES["importance"]
SCALE_REWARDS: tuple[str, ...] = CHOICES["scale_rewards"]
#: two rewards closer than this count as equal when deciding whether a group has any spread
SPREAD_ATOL = 1e-8

RewardsLike = Sequence[float | None] | Tensor
Span = tuple[int, int] | tuple[str, int, int]


# --------------------------------------------------------------------------- the loss


def grpo_loss(
    logp: Tensor,
    old_logp: Tensor | None,
    ref_logp: Tensor | None,
    advantages: Tensor,
    mask: Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    beta: float = 0.0,
    loss_type: LossType = "grpo",
    importance: Importance = "token",
    num_items_in_batch: float | Tensor | None = None,
    num_processes: int = 1,
    max_completion_length: int | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """The clipped GRPO surrogate plus ``beta`` times the k3 KL to a frozen reference.

    Args:
        logp: ``(B, T)`` log-probs of the sampled tokens under the policy being trained (with grad).
        old_logp: ``(B, T)`` log-probs under the policy that sampled them (no grad). ``None``
            means on-policy (a single update per rollout): ``logp.detach()``, so ratios are 1.
        ref_logp: ``(B, T)`` log-probs under the frozen reference; required when ``beta > 0``;
            when given with ``beta == 0`` the KL is still reported in the metrics.
        advantages: ``(B,)`` one per completion (outcome) or ``(B, T)`` per token (process).
        mask: ``(B, T)`` bool/0-1, true where a position counts (generated, not padding).
        eps_low, eps_high: the clip range ``[1 - eps_low, 1 + eps_high]`` of the ratio (DAPO's
            "clip-higher" uses a larger ``eps_high``). With ``importance="sequence"`` (GSPO) the
            ratios sit much closer to 1, so use a far smaller range (GSPO: about 3e-4 / 4e-4).
        beta: weight of the per-token KL ``exp(ref - logp) - (ref - logp) - 1`` (the k3
            estimator: non-negative, unbiased for KL(policy || reference) under policy samples).
        loss_type: how per-token losses ``l[b, t]`` become one number, ``m`` being the mask:
            "grpo": ``mean_b( sum_t m*l / sum_t m )``, each completion weighs the same whatever
            its length (the paper's 1/|y_i|); a completion without active tokens adds 0 but is
            still counted in the batch mean.
            "bnpo": ``sum(m*l) / sum(m)``, every token of this micro-batch weighs the same.
            "dr_grpo": ``sum(m*l) / (B * L)`` with ``L = max_completion_length``, a constant
            (the recipe's generation limit, image tokens included) that removes the length bias
            without depending on how wide this micro-batch happens to be padded (TRL's and Dr.
            GRPO's normaliser). Without ``max_completion_length``, ``L = mask.shape[1]`` (only
            constant when batches are padded to the limit).
            "dapo": ``sum(m*l) / (num_items_in_batch / num_processes)``; without
            ``num_items_in_batch`` it equals "bnpo". The difference shows with several processes
            or gradient-accumulation micro-batches: "bnpo" averages each micro-batch's own token
            mean, so a token in a short micro-batch weighs more; "dapo" divides by the active
            token count of the whole global batch (all processes, all micro-batches of one
            optimizer step), so every token in that batch weighs the same. Pass that global
            count as ``num_items_in_batch`` and the number of data-parallel processes whose
            gradients are averaged as ``num_processes``; then sum (do not average) the
            micro-batch losses.
        max_completion_length: the constant ``L`` of "dr_grpo" (ignored by the others); it must
            be at least the padded width ``T``, since no completion can be longer.
        importance: "token": ratio ``exp(logp - old_logp)`` per token. "sequence" (GSPO): one
            ratio per completion, ``exp(masked mean of logp - old_logp)``, shared by its tokens;
            clipping then keeps or drops whole completions.

    Returns:
        ``(loss, metrics)``: a scalar tensor with grad, and floats: ``clip_frac_low`` (share of
        active tokens whose ratio is below ``1 - eps_low`` with a negative advantage, i.e. held
        by the clip), ``clip_frac_high`` (above ``1 + eps_high`` with a positive advantage),
        ``clip_frac`` (their sum), ``ratio_mean``, ``kl`` (masked token mean of the k3 term,
        when ``ref_logp`` is given) and ``active_tokens``. Token shares count tokens, so with
        sequence importance a long clipped completion weighs more than a short one.

    Masked positions may hold anything (padding, -inf, NaN): they are replaced before any
    arithmetic, so they change neither the loss nor the gradient.
    """
    _check_loss_args(logp, old_logp, ref_logp, advantages, mask, loss_type, importance)
    if eps_low < 0 or eps_high < 0:
        raise ValueError(f"eps_low and eps_high must be >= 0, got {eps_low}, {eps_high}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if beta > 0 and ref_logp is None:
        raise ValueError("beta > 0 needs ref_logp (the frozen reference's log-probs)")
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    if max_completion_length is not None and max_completion_length < logp.shape[1]:
        raise ValueError(
            f"max_completion_length {max_completion_length} is below the padded width "
            f"{logp.shape[1]}: the limit must include every generated token (image tokens too)"
        )

    active = mask.bool()
    m = active.to(logp.dtype)
    zero = logp.new_zeros(())
    logp_s = torch.where(active, logp, zero)
    old = logp.detach() if old_logp is None else old_logp.detach()
    log_ratio = logp_s - torch.where(active, old.to(logp.dtype), zero)
    lengths = m.sum(-1)
    if importance == "sequence":
        seq = (log_ratio * m).sum(-1) / lengths.clamp(min=1.0)
        log_ratio = seq.unsqueeze(-1).expand_as(logp)
    ratio = torch.exp(log_ratio)

    adv = advantages.detach().to(logp.dtype)
    if adv.dim() == 1:
        adv = adv.unsqueeze(-1)
    adv = torch.where(active, adv.expand_as(logp), zero)

    clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    per_token = -torch.minimum(ratio * adv, clipped * adv)
    kl = None
    if ref_logp is not None:
        diff = torch.where(active, ref_logp.detach().to(logp.dtype), zero) - logp_s
        kl = torch.exp(diff) - diff - 1.0
        if beta > 0:
            per_token = per_token + beta * kl
    per_token = per_token * m

    if loss_type == "grpo":
        loss = (per_token.sum(-1) / lengths.clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = per_token.sum() / m.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        width = logp.shape[1] if max_completion_length is None else max_completion_length
        loss = per_token.sum() / (logp.shape[0] * width)
    else:  # dapo
        loss = per_token.sum() / _dapo_denominator(m, num_items_in_batch, num_processes)

    with torch.no_grad():
        n = m.sum().clamp(min=1.0)
        low = ((ratio < 1.0 - eps_low) & (adv < 0) & active).to(m.dtype).sum() / n
        high = ((ratio > 1.0 + eps_high) & (adv > 0) & active).to(m.dtype).sum() / n
        values = [low, high, low + high, (ratio * m).sum() / n, m.sum()]
        names = ["clip_frac_low", "clip_frac_high", "clip_frac", "ratio_mean", "active_tokens"]
        if kl is not None:
            values.append((kl * m).sum() / n)
            names.append("kl")
        metrics = dict(zip(names, torch.stack(values).tolist(), strict=True))  # one sync
    return loss, metrics


def _check_loss_args(
    logp: Tensor,
    old_logp: Tensor | None,
    ref_logp: Tensor | None,
    advantages: Tensor,
    mask: Tensor,
    loss_type: str,
    importance: str,
) -> None:
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if importance not in IMPORTANCE_LEVELS:
        raise ValueError(f"importance must be one of {IMPORTANCE_LEVELS}, got {importance!r}")
    if logp.dim() != 2:
        raise ValueError(f"logp must be (B, T), got shape {tuple(logp.shape)}")
    for name, t in (("old_logp", old_logp), ("ref_logp", ref_logp), ("mask", mask)):
        if t is not None and t.shape != logp.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, logp {tuple(logp.shape)}")
    if advantages.shape not in (logp.shape[:1], logp.shape):
        raise ValueError(
            f"advantages must be (B,) or (B, T) = {tuple(logp.shape)}, "
            f"got {tuple(advantages.shape)}"
        )


def _dapo_denominator(m: Tensor, num_items_in_batch: float | Tensor | None, procs: int) -> Tensor:
    if num_items_in_batch is None:
        return m.sum().clamp(min=1.0)
    total = torch.as_tensor(num_items_in_batch, dtype=m.dtype, device=m.device)
    if total.numel() != 1:
        raise ValueError("num_items_in_batch must be a single number")
    if not isinstance(num_items_in_batch, Tensor) and not float(num_items_in_batch) > 0:
        raise ValueError(f"num_items_in_batch must be > 0, got {num_items_in_batch}")
    return total.reshape(()) / procs


# --------------------------------------------------------------------------- outcome advantages


def _reward_tensor(rewards: RewardsLike) -> Tensor:
    """Float64 rewards with NaN for "not applicable"; infinities are bugs, not rewards."""
    if isinstance(rewards, Tensor):
        r = rewards.detach().to(dtype=torch.float64, device="cpu").reshape(-1)
    else:
        r = torch.tensor(
            [math.nan if v is None else float(v) for v in rewards], dtype=torch.float64
        )
    if torch.isinf(r).any():
        raise ValueError("rewards must be finite numbers or None/NaN (not applicable)")
    return r


def _groups(r: Tensor, group_size: int) -> Tensor:
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if r.numel() % group_size:
        raise ValueError(f"{r.numel()} rewards do not split into groups of {group_size}")
    return r.view(-1, group_size)


def _center_and_std(grid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per row: values minus the row's mean over valid entries (0 where invalid), the unbiased
    std over valid entries (0 with fewer than two), and the count of valid entries."""
    valid = ~torch.isnan(grid)
    count = valid.sum(-1)
    mean = torch.where(valid, grid, 0.0).sum(-1) / count.clamp(min=1)
    centered = torch.where(valid, grid - mean.unsqueeze(-1), 0.0)
    var = centered.square().sum(-1) / (count - 1).clamp(min=1)
    std = torch.where(count >= 2, var.sqrt(), 0.0)
    return centered, std, count


def _zero_spread(grid: Tensor) -> Tensor:
    """Per group: fewer than two applicable rewards, or all applicable rewards equal."""
    valid = ~torch.isnan(grid)
    hi = torch.where(valid, grid, -math.inf).amax(-1)
    lo = torch.where(valid, grid, math.inf).amin(-1)
    return (valid.sum(-1) < 2) | ((hi - lo) <= SPREAD_ATOL)


def outcome_advantages(
    rewards: RewardsLike,
    group_size: int,
    *,
    scale_rewards: ScaleRewards = "group",
    eps: float = 1e-4,
) -> tuple[Tensor, dict[str, float]]:
    """One advantage per completion: its reward minus its group's mean, scaled.

    ``rewards`` holds B = n_groups * group_size values, a group's completions adjacent; ``None``
    or NaN marks a reward that does not apply (see the module notes): it is excluded from the
    group's mean and std and gets advantage 0. With the remaining rewards of a group:

    - "group": ``(r - mean_group) / (std_group + eps)`` (the GRPO paper's normalisation);
    - "batch": ``(r - mean_group) / (std_batch + eps)``, std over every applicable reward of the
      batch, which keeps a near-uniform group from being blown up to unit scale;
    - "none": ``r - mean_group`` (Dr. GRPO: no std division).

    Returns ``(advantages, metrics)``: a float32 ``(B,)`` CPU tensor, and ``reward_mean``,
    ``reward_std`` (over applicable rewards), ``frac_zero_spread_groups`` (groups with fewer
    than two applicable rewards or all equal: they carry no signal) and ``frac_not_applicable``.
    """
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards must be one of {SCALE_REWARDS}, got {scale_rewards!r}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    r = _reward_tensor(rewards)
    grid = _groups(r, group_size)
    centered, group_std, _ = _center_and_std(grid)
    _, batch_std, n_valid = _center_and_std(r.unsqueeze(0))
    if scale_rewards == "group":
        adv = centered / (group_std.unsqueeze(-1) + eps)
    elif scale_rewards == "batch":
        adv = centered / (batch_std + eps)
    else:
        adv = centered
    valid = ~torch.isnan(r)
    n = int(n_valid.item())
    metrics = {
        "reward_mean": float(r[valid].mean()) if n else math.nan,
        "reward_std": float(batch_std.item()),
        "frac_zero_spread_groups": float(_zero_spread(grid).double().mean()),
        "frac_not_applicable": 1.0 - n / r.numel() if r.numel() else 0.0,
    }
    return adv.reshape(-1).to(torch.float32), metrics


def group_normalise(
    rewards: RewardsLike, group_size: int, *, eps: float = 1e-4
) -> list[float | None]:
    """``outcome_advantages(scale_rewards="group")`` as float64 values with ``None`` kept (a
    reward that does not apply stays ``None``); the hybrid reward normalises components with it."""
    r = _reward_tensor(rewards)
    centered, std, _ = _center_and_std(_groups(r, group_size))
    adv = (centered / (std.unsqueeze(-1) + eps)).reshape(-1)
    return [None if math.isnan(v) else a for v, a in zip(r.tolist(), adv.tolist(), strict=True)]


def dynamic_sampling_mask(rewards: RewardsLike, group_size: int) -> Tensor:
    """``(n_groups,)`` bool: true for groups worth training on (non-zero reward spread).

    DAPO's dynamic sampling drops the other groups and refills the batch with fresh prompts; a
    group with fewer than two applicable rewards has no spread either. Expand to completions with
    ``mask.repeat_interleave(group_size)``.
    """
    return ~_zero_spread(_groups(_reward_tensor(rewards), group_size))


# --------------------------------------------------------------------------- process advantages


def _span(span: Span) -> tuple[int, int]:
    """``(start, end)`` from ``(start, end)`` or a DecodeTrace segment ``(kind, start, end)``."""
    if len(span) == 3:
        start, end = span[1], span[2]
    elif len(span) == 2:
        start, end = span[0], span[1]
    else:
        raise ValueError(f"a step span is (start, end) or (kind, start, end), got {span!r}")
    return int(start), int(end)


def process_advantages(
    step_rewards: Sequence[Sequence[float | None]],
    step_spans: Sequence[Sequence[Span]],
    group_size: int,
    seq_len: int,
    *,
    eps: float = 1e-4,
) -> Tensor:
    """Per-token advantages from per-step rewards (process supervision, DeepSeekMath).

    A step is one modality segment of a completion (a text block, an image), ``step_spans[i][k]``
    its token span ``[start, end)`` over generated positions (``Step.span`` of ``train.steps``;
    ``(kind, start, end)`` tuples are accepted) and ``step_rewards[i][k]`` its reward. Within
    each group, all applicable step rewards of all its completions are normalised together,
    ``(r - mean) / (std + eps)`` (unbiased std, 0 with fewer than two values); a ``None``/NaN
    step reward normalises to 0 and is left out of the statistics. A token's advantage is the sum of the normalised rewards of the steps
    of its completion that end at or after it (DeepSeekMath's process supervision): its own step
    and every later one; a token between steps (a delimiter such as the ``<begin_of_image>``
    that opens an image) counts with the step that follows it; tokens after the last step's end
    (the final EOS, padding) get 0.

    Returns a float32 ``(B, seq_len)`` tensor, ready for ``grpo_loss``.
    """
    if len(step_rewards) != len(step_spans):
        raise ValueError(f"{len(step_rewards)} reward lists but {len(step_spans)} span lists")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    b = len(step_rewards)
    if group_size < 1 or b % group_size:
        raise ValueError(f"{b} completions do not split into groups of {group_size}")
    out = torch.zeros(b, seq_len, dtype=torch.float64)
    for g0 in range(0, b, group_size):
        members = range(g0, g0 + group_size)
        values = [
            float(v)
            for i in members
            for v in step_rewards[i]
            if v is not None and not math.isnan(float(v))
        ]
        mean = sum(values) / len(values) if values else 0.0
        var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0
        std = math.sqrt(var)
        for i in members:
            rewards, spans = step_rewards[i], step_spans[i]
            if len(rewards) != len(spans):
                raise ValueError(f"completion {i}: {len(rewards)} step rewards, {len(spans)} spans")
            steps = sorted(
                (_span(s), 0.0 if r is None or math.isnan(float(r)) else (r - mean) / (std + eps))
                for s, r in zip(spans, rewards, strict=True)
            )
            _check_spans(i, [s for s, _ in steps], seq_len)
            later = 0.0  # tokens up to a step's end: that step's and every later step's
            lows = [0, *(end for (_, end), _ in steps)][: len(steps)]
            for ((_, end), norm), low in zip(reversed(steps), reversed(lows), strict=True):
                later += norm
                out[i, low:end] = later
    return out.to(torch.float32)


def _check_spans(i: int, spans: list[tuple[int, int]], seq_len: int) -> None:
    prev_end = 0
    for start, end in spans:
        if not 0 <= start <= end <= seq_len:
            raise ValueError(f"completion {i}: step span ({start}, {end}) outside [0, {seq_len}]")
        if start < prev_end:
            raise ValueError(f"completion {i}: step spans overlap at position {start}")
        prev_end = end
