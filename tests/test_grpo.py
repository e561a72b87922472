"""grpo_loss and the advantages against values worked out by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from interleave_bench.train.grpo import (  # noqa: E402
    LOSS_TYPES,
    dynamic_sampling_mask,
    grpo_loss,
    outcome_advantages,
    process_advantages,
)

LN = math.log
F64 = torch.float64


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=F64)


def policy(old: torch.Tensor, ratios) -> torch.Tensor:
    """logp = old_logp + log(ratio): the ratio of every token is what the test writes down."""
    return (old + t([[LN(r) for r in row] for row in ratios])).requires_grad_(True)


# Shared example, B=2, T=3, old_logp = -1 everywhere, eps 0.2 on both sides.
#   row 0, A=+1, ratios [1.5, 0.9, 1.0]: 1.5 is clipped to 1.2 -> token losses [-1.2, -0.9, -1.0]
#   row 1, A=-2, ratios [0.5, 1.1, 2.0 masked]: min(0.5*-2, 0.8*-2) = -1.6 -> 1.6 (clipped low);
#          min(1.1*-2, 1.1*-2) -> 2.2; the masked token counts for nothing
#   active tokens 5, sum of token losses -3.1 + 3.8 = 0.7
OLD = torch.full((2, 3), -1.0, dtype=F64)
RATIOS = [[1.5, 0.9, 1.0], [0.5, 1.1, 2.0]]
ADV = t([1.0, -2.0])
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
EXPECTED = {
    "grpo": ((-3.1 / 3) + (3.8 / 2)) / 2,  # 0.43333
    "bnpo": 0.7 / 5,
    "dr_grpo": 0.7 / (2 * 3),
    "dapo": 0.7 / 5,
}


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_every_loss_type_by_hand(loss_type):
    logp = policy(OLD, RATIOS)
    loss, metrics = grpo_loss(logp, OLD, None, ADV, MASK, loss_type=loss_type)
    assert loss.item() == pytest.approx(EXPECTED[loss_type], abs=1e-12)
    assert metrics["clip_frac_low"] == pytest.approx(1 / 5)  # row 1, token 0
    assert metrics["clip_frac_high"] == pytest.approx(1 / 5)  # row 0, token 0
    assert metrics["clip_frac"] == pytest.approx(2 / 5)
    assert metrics["ratio_mean"] == pytest.approx((1.5 + 0.9 + 1.0 + 0.5 + 1.1) / 5)
    assert metrics["active_tokens"] == 5
    assert "kl" not in metrics


def test_dapo_uses_the_global_token_count():
    logp = policy(OLD, RATIOS)
    # 14 active tokens over 2 processes: each process divides its sum by 7
    loss, _ = grpo_loss(
        logp, OLD, None, ADV, MASK, loss_type="dapo", num_items_in_batch=14, num_processes=2
    )
    assert loss.item() == pytest.approx(0.7 / 7)
    loss, _ = grpo_loss(logp, OLD, None, ADV, MASK, loss_type="dapo", num_items_in_batch=7)
    assert loss.item() == pytest.approx(0.1)
    bnpo, _ = grpo_loss(logp, OLD, None, ADV, MASK, loss_type="bnpo", num_items_in_batch=7)
    assert bnpo.item() == pytest.approx(0.14)  # bnpo ignores the global count


def test_gradients_flow_except_through_clipped_and_masked_tokens():
    logp = policy(OLD, RATIOS)
    loss, _ = grpo_loss(logp, OLD, None, ADV, MASK, loss_type="grpo")
    loss.backward()
    # unclipped token loss is -r*A, d/dlogp = -r*A; grpo divides by the row length and by B=2
    expected = t([[0.0, -0.9 / 3 / 2, -1.0 / 3 / 2], [0.0, 2.2 / 2 / 2, 0.0]])
    assert torch.allclose(logp.grad, expected, atol=1e-12)


def test_clipping_only_on_the_side_that_limits_the_update():
    # ratio 1.5 with A<0 and ratio 0.5 with A>0 are NOT clipped (min keeps the pessimistic term)
    old = torch.full((1, 4), -2.0, dtype=F64)
    logp = policy(old, [[1.5, 0.5, 1.5, 0.5]])
    adv = t([[-1.0, 1.0, 1.0, -1.0]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    loss, metrics = grpo_loss(logp, old, None, adv, mask, loss_type="bnpo")
    # token losses: 1.5 (unclipped), -0.5 (unclipped), -1.2 (clipped high), 0.8 (clipped low)
    assert loss.item() == pytest.approx((1.5 - 0.5 - 1.2 + 0.8) / 4)
    assert metrics["clip_frac_high"] == pytest.approx(0.25)
    assert metrics["clip_frac_low"] == pytest.approx(0.25)
    loss.backward()
    assert torch.allclose(logp.grad, t([[1.5 / 4, -0.5 / 4, 0.0, 0.0]]), atol=1e-12)


def test_asymmetric_clip_range():
    old = torch.zeros(1, 2, dtype=F64) - 1
    logp = policy(old, [[1.25, 1.25]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    # eps_high 0.28 (DAPO clip-higher): 1.25 is inside the range, so not clipped
    loss, m = grpo_loss(logp, old, None, t([1.0]), mask, eps_high=0.28)
    assert loss.item() == pytest.approx(-1.25)
    assert m["clip_frac"] == 0
    loss, m = grpo_loss(logp, old, None, t([1.0]), mask, eps_high=0.2)
    assert loss.item() == pytest.approx(-1.2)
    assert m["clip_frac_high"] == 1


def test_k3_kl_term():
    # ratio 1 and A = 0: the loss is only beta * mean(k3); ref - logp = [ln 2, 0, -ln 2]
    # k3 = e^d - d - 1: [1 - ln 2, 0, ln 2 - 0.5], sum 0.5
    logp = t([[-1.0, -1.0, -1.0]]).requires_grad_(True)
    ref = logp.detach() + t([[LN(2), 0.0, -LN(2)]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    loss, metrics = grpo_loss(logp, logp.detach(), ref, t([0.0]), mask, beta=0.1)
    assert loss.item() == pytest.approx(0.1 * 0.5 / 3)
    assert metrics["kl"] == pytest.approx(0.5 / 3)
    loss.backward()  # d k3 / d logp = 1 - e^d: [-1, 0, 0.5], times beta / 3
    assert torch.allclose(logp.grad, t([[-0.1 / 3, 0.0, 0.05 / 3]]), atol=1e-12)
    # beta 0 with a reference: KL reported, not in the loss
    loss0, metrics0 = grpo_loss(logp, logp.detach(), ref, t([0.0]), mask, beta=0.0)
    assert loss0.item() == 0.0 and metrics0["kl"] == pytest.approx(0.5 / 3)


def test_kl_adds_to_the_surrogate():
    logp = policy(OLD, RATIOS)
    ref = logp.detach() + t([[LN(2), 0.0, 0.0], [0.0, -LN(2), 5.0]])  # 5.0 sits on a masked token
    loss, _ = grpo_loss(logp, OLD, ref, ADV, MASK, beta=0.5, loss_type="bnpo")
    kl_sum = (1 - LN(2)) + (LN(2) - 0.5)
    assert loss.item() == pytest.approx((0.7 + 0.5 * kl_sum) / 5)


def test_beta_needs_a_reference():
    logp = policy(OLD, RATIOS)
    with pytest.raises(ValueError, match="ref_logp"):
        grpo_loss(logp, OLD, None, ADV, MASK, beta=0.1)


def test_per_token_advantages():
    # row 0: ratios [1.5, 1.5, 1.0], A [1, -1, 2] -> [-1.2 (clipped), 1.5 (min keeps -1.5), -2]
    # row 1: ratios [0.5, 0.5, 1.0], A [-1, 1, 0] -> [0.8 (clipped), -0.5, 0]
    old = torch.full((2, 3), -1.0, dtype=F64)
    logp = policy(old, [[1.5, 1.5, 1.0], [0.5, 0.5, 1.0]])
    adv = t([[1.0, -1.0, 2.0], [-1.0, 1.0, 0.0]])
    mask = torch.ones(2, 3, dtype=torch.bool)
    loss, metrics = grpo_loss(logp, old, None, adv, mask)
    assert loss.item() == pytest.approx(((-1.2 + 1.5 - 2.0) / 3 + (0.8 - 0.5) / 3) / 2)
    assert metrics["clip_frac_high"] == pytest.approx(1 / 6)
    assert metrics["clip_frac_low"] == pytest.approx(1 / 6)


def test_sequence_level_importance():
    # row 0: log-ratios [ln 2, 0] (third masked) -> one ratio sqrt(2) > 1.2, A=+1: clipped, -1.2
    # row 1: log-ratios ln 0.9 x3 -> ratio 0.9, A=-1: 0.9 per token
    old = torch.full((2, 3), -1.0, dtype=F64)
    logp = policy(old, [[2.0, 1.0, 7.0], [0.9, 0.9, 0.9]])
    adv = t([1.0, -1.0])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    loss, metrics = grpo_loss(logp, old, None, adv, mask, importance="sequence")
    assert loss.item() == pytest.approx((-1.2 + 0.9) / 2)
    assert metrics["clip_frac_high"] == pytest.approx(2 / 5)  # both active tokens of row 0
    assert metrics["ratio_mean"] == pytest.approx((2 * math.sqrt(2) + 3 * 0.9) / 5)
    loss.backward()
    # row 0 clipped: no gradient; row 1: loss = s with s = exp(mean log-ratio), ds/dlogp_t = s/3
    assert torch.allclose(logp.grad, t([[0.0, 0.0, 0.0], [0.15, 0.15, 0.15]]), atol=1e-12)
    # the same tensors at token level give a different number: row 0 -> (-1.2 - 1.0) / 2
    token_loss, _ = grpo_loss(logp, old, None, adv, mask, importance="token")
    assert token_loss.item() == pytest.approx((-1.1 + 0.9) / 2)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("importance", ["token", "sequence"])
def test_masked_positions_change_nothing(loss_type, importance):
    g = torch.Generator().manual_seed(0)
    old = -torch.rand(3, 5, generator=g, dtype=F64) * 3
    clean = old + 0.3 * torch.randn(3, 5, generator=g, dtype=F64)
    ref = old + 0.3 * torch.randn(3, 5, generator=g, dtype=F64)
    adv = torch.randn(3, 5, generator=g, dtype=F64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)

    def run(values, old_v, ref_v, adv_v):
        logp = values.clone().requires_grad_(True)
        kw = dict(beta=0.04, loss_type=loss_type, importance=importance)
        loss, metrics = grpo_loss(logp, old_v, ref_v, adv_v, mask, **kw)
        loss.backward()
        return loss.item(), metrics, logp.grad

    base = run(clean, old, ref, adv)
    junk = torch.where(mask, 0.0, torch.tensor(float("nan"), dtype=F64))
    big = torch.where(mask, 0.0, torch.tensor(1e4, dtype=F64))
    dirty = run(clean + junk, old - big, ref + big, adv + junk)
    assert dirty[0] == pytest.approx(base[0], abs=1e-12)
    assert dirty[1] == pytest.approx(base[1])
    assert torch.isfinite(dirty[2]).all()
    assert torch.allclose(dirty[2], base[2], atol=1e-12)
    assert (base[2][~mask] == 0).all()
    assert base[2][mask].abs().sum() > 0


def test_on_policy_old_logp_none_means_ratio_one():
    logp = policy(OLD, RATIOS)
    loss, metrics = grpo_loss(logp, None, None, ADV, MASK, loss_type="bnpo")
    assert loss.item() == pytest.approx((-1.0 * 3 + 2.0 * 2) / 5)  # -A per active token
    assert metrics["ratio_mean"] == 1.0 and metrics["clip_frac"] == 0.0


def test_bad_arguments():
    logp = policy(OLD, RATIOS)
    with pytest.raises(ValueError, match="loss_type"):
        grpo_loss(logp, OLD, None, ADV, MASK, loss_type="ppo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="importance"):
        grpo_loss(logp, OLD, None, ADV, MASK, importance="segment")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="advantages"):
        grpo_loss(logp, OLD, None, t([1.0, 2.0, 3.0]), MASK)
    with pytest.raises(ValueError, match="mask"):
        grpo_loss(logp, OLD, None, ADV, MASK[:, :2])


# --------------------------------------------------------------------------- outcome advantages

# group 1 = [1, 2, 3]: mean 2, unbiased std 1; group 2 = [5, 5, 5]: no spread
REWARDS = [1.0, 2.0, 3.0, 5.0, 5.0, 5.0]


def test_outcome_advantages_group_scaling():
    adv, m = outcome_advantages(REWARDS, 3)
    s = 1.0 + 1e-4
    assert adv.tolist() == pytest.approx([-1 / s, 0.0, 1 / s, 0.0, 0.0, 0.0])
    assert adv.dtype == torch.float32
    assert m["frac_zero_spread_groups"] == 0.5
    assert m["reward_mean"] == pytest.approx(3.5)
    assert m["frac_not_applicable"] == 0.0


def test_outcome_advantages_batch_scaling():
    # batch std: mean 3.5, squared deviations 6.25 + 2.25 + 0.25 + 3 * 2.25 = 15.5, / 5 = 3.1
    adv, m = outcome_advantages(REWARDS, 3, scale_rewards="batch")
    s = math.sqrt(3.1) + 1e-4
    assert adv.tolist() == pytest.approx([-1 / s, 0.0, 1 / s, 0.0, 0.0, 0.0])
    assert m["reward_std"] == pytest.approx(math.sqrt(3.1))


def test_outcome_advantages_no_scaling():
    adv, _ = outcome_advantages(REWARDS, 3, scale_rewards="none")
    assert adv.tolist() == pytest.approx([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def test_none_rewards_are_left_out_of_the_baseline():
    # group 1 applicable [1, 3]: mean 2, std sqrt(2); group 2 applicable [2, 2]: no spread
    adv, m = outcome_advantages([1.0, None, 3.0, float("nan"), 2.0, 2.0], 3)
    s = math.sqrt(2) + 1e-4
    assert adv.tolist() == pytest.approx([-1 / s, 0.0, 1 / s, 0.0, 0.0, 0.0])
    assert m["frac_not_applicable"] == pytest.approx(2 / 6)
    assert m["frac_zero_spread_groups"] == 0.5
    assert m["reward_mean"] == pytest.approx(2.0)
    # a group with a single applicable reward has no spread and no advantage
    adv, m = outcome_advantages([None, 4.0, 1.0, 3.0], 2)
    assert adv.tolist() == pytest.approx([0.0, 0.0, -1 / s, 1 / s])
    assert m["frac_zero_spread_groups"] == 0.5


def test_outcome_advantages_reject_bad_input():
    with pytest.raises(ValueError, match="groups of 4"):
        outcome_advantages(REWARDS, 4)
    with pytest.raises(ValueError, match="finite"):
        outcome_advantages([1.0, float("inf")], 2)
    with pytest.raises(ValueError, match="scale_rewards"):
        outcome_advantages(REWARDS, 3, scale_rewards="prompt")  # type: ignore[arg-type]


def test_dynamic_sampling_mask():
    assert dynamic_sampling_mask(REWARDS, 3).tolist() == [True, False]
    assert dynamic_sampling_mask([None, 1.0, None, 0.0, 1.0, None], 3).tolist() == [False, True]
    assert dynamic_sampling_mask(torch.tensor([0.5, 0.5, 0.0, 1.0]), 2).tolist() == [False, True]


# --------------------------------------------------------------------------- process advantages


def test_process_advantages_by_hand():
    # group 1 (G=2): completion 0 has steps [0,2) [2,5) [6,8) with rewards 1, 0, 1 (token 5 is in
    # no step: it counts with the steps ending at or after it); completion 1 has steps [0,3)
    # [3,6) with rewards 0, 1 and padding after.
    # The group's step rewards [1, 0, 1, 0, 1]: mean 0.6, unbiased var 1.2 / 4 = 0.3, so with
    # s = sqrt(0.3) + 1e-4 a reward 1 normalises to 0.4/s and a 0 to -0.6/s.
    # completion 0: step suffix sums 0.2/s, -0.2/s, 0.4/s; completion 1: -0.2/s, 0.4/s.
    # group 2: rewards [2, None] and [4]: applicable [2, 4], mean 3, std sqrt(2).
    spans = [
        [(0, 2), (2, 5), (6, 8)],
        [("text", 0, 3), ("image", 3, 6)],  # DecodeTrace.segments form
        [(0, 1), (1, 2)],
        [(0, 4)],
    ]
    rewards = [[1.0, 0.0, 1.0], [0.0, 1.0], [2.0, None], [4.0]]
    adv = process_advantages(rewards, spans, 2, 8)
    s = math.sqrt(0.3) + 1e-4
    u = math.sqrt(2) + 1e-4
    a, b, c = 0.2 / s, -0.2 / s, 0.4 / s
    expected = [
        [a, a, b, b, b, c, c, c],
        [b, b, b, c, c, c, 0.0, 0.0],
        [-1 / u, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [1 / u, 1 / u, 1 / u, 1 / u, 0.0, 0.0, 0.0, 0.0],
    ]
    assert adv.shape == (4, 8) and adv.dtype == torch.float32
    assert torch.allclose(adv, torch.tensor(expected, dtype=torch.float32), atol=1e-6)


def test_process_advantages_follow_time_order_not_list_order():
    forward = process_advantages([[1.0, 0.0], [0.5]], [[(0, 1), (1, 2)], [(0, 2)]], 2, 2)
    shuffled = process_advantages([[0.0, 1.0], [0.5]], [[(1, 2), (0, 1)], [(0, 2)]], 2, 2)
    assert torch.equal(forward, shuffled)
    # rewards [1, 0, 0.5]: mean 0.5, std 0.5 -> normalised 0.5/s and -0.5/s with s = 0.5001
    assert forward[0].tolist() == pytest.approx([0.0, -0.5 / 0.5001])


def test_process_advantages_reject_bad_spans():
    with pytest.raises(ValueError, match="outside"):
        process_advantages([[1.0], [0.0]], [[(0, 9)], [(0, 1)]], 2, 4)
    with pytest.raises(ValueError, match="overlap"):
        process_advantages([[1.0, 0.0], [0.0]], [[(0, 3), (2, 4)], [(0, 1)]], 2, 4)
    with pytest.raises(ValueError, match="spans"):
        process_advantages([[1.0, 0.0], [0.0]], [[(0, 3)], [(0, 1)]], 2, 4)


def test_process_advantages_feed_the_loss():
    spans = [[(0, 2), (2, 3)], [(0, 3)]]
    adv = process_advantages([[1.0, 0.0], [0.0]], spans, 2, 3).double()
    logp = torch.full((2, 3), -1.0, dtype=F64, requires_grad=True)
    loss, _ = grpo_loss(logp, None, None, adv, torch.ones(2, 3, dtype=torch.bool))
    assert loss.item() == pytest.approx(-(adv.sum(-1) / 3).mean().item())


def test_group_normalise_is_the_one_group_normalisation():
    """The hybrid reward's normalisation is ``outcome_advantages(scale_rewards="group")`` with
    ``None`` kept (one implementation, in ``grpo``)."""
    from interleave_bench.train import rewards
    from interleave_bench.train.grpo import group_normalise

    values = [1.0, None, 3.0, 2.0, 2.0, 7.0]
    adv, _ = outcome_advantages(values, 3)
    got = group_normalise(values, 3)
    assert got[1] is None
    assert [0.0 if v is None else v for v in got] == pytest.approx(adv.tolist(), abs=1e-6)
    assert rewards.group_normalise(values, 3) == got
    with pytest.raises(ValueError, match="groups of 4"):
        group_normalise(values, 4)


def trl_dr_grpo(logp, old, ref, adv, mask, *, eps, beta, max_completion_length):
    """TRL 1.16 ``GRPOTrainer._compute_loss`` for ``loss_type="dr_grpo"``, token importance,
    one process, no gradient accumulation, restated on plain tensors: per-token clipped surrogate
    plus beta * k3, masked sum divided by ``batch * max_completion_length``."""
    coef_1 = torch.exp(logp - old)
    coef_2 = torch.clamp(coef_1, 1 - eps, 1 + eps)
    a = adv.unsqueeze(1)
    per_token_loss = -torch.min(coef_1 * a, coef_2 * a)
    if beta != 0.0:
        per_token_kl = torch.exp(ref - logp) - (ref - logp) - 1
        per_token_loss = per_token_loss + beta * per_token_kl
    m = mask.to(per_token_loss.dtype)
    return (per_token_loss * m).sum() / (per_token_loss.size(0) * max_completion_length)


def test_dr_grpo_uses_a_constant_normaliser_equal_to_trl():
    # issue 14: the normaliser was B x the padded width of the micro-batch (2x TRL's loss here)
    gen = torch.Generator().manual_seed(3)
    old = -torch.rand(3, 4, generator=gen, dtype=F64) - 0.5
    logp = (old + 0.3 * torch.randn(3, 4, generator=gen, dtype=F64)).requires_grad_(True)
    ref = old + 0.1 * torch.randn(3, 4, generator=gen, dtype=F64)
    adv = t([1.0, -0.5, 0.25])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    want = trl_dr_grpo(logp, old, ref, adv, mask, eps=0.2, beta=0.04, max_completion_length=8)
    ours, _ = grpo_loss(
        logp, old, ref, adv, mask, beta=0.04, loss_type="dr_grpo", max_completion_length=8
    )
    assert ours.item() == pytest.approx(want.item(), rel=1e-12, abs=0)
    # padding the same completions wider changes nothing (it did: 4 -> 6 columns)
    pad = torch.nn.functional.pad
    wide, _ = grpo_loss(
        pad(logp, (0, 2)),
        pad(old, (0, 2)),
        pad(ref, (0, 2)),
        adv,
        pad(mask, (0, 2)),
        beta=0.04,
        loss_type="dr_grpo",
        max_completion_length=8,
    )
    assert wide.item() == pytest.approx(want.item(), rel=1e-12, abs=0)
    (g_ours,) = torch.autograd.grad(ours, logp)
    (g_trl,) = torch.autograd.grad(
        trl_dr_grpo(logp, old, ref, adv, mask, eps=0.2, beta=0.04, max_completion_length=8), logp
    )
    assert torch.allclose(g_ours, g_trl, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="below the padded width"):
        grpo_loss(logp, old, ref, adv, mask, loss_type="dr_grpo", max_completion_length=3)
