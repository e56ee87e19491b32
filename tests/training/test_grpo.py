"""GRPO functions against hand-computed values on tiny tensors (no models)."""

from __future__ import annotations

import math

import pytest
import torch

from nla_lightning.training.grpo import (
    REWARD_KINDS,
    GRPOLoss,
    aggregate,
    chunk_weight,
    clipped_policy_loss,
    failure_reward,
    finite_or_none,
    group_advantages,
    grpo_loss,
    k1_kl,
    k3_kl,
    rewards_from_mse,
)


def close(actual: torch.Tensor, expected, atol: float = 1e-6) -> None:
    torch.testing.assert_close(
        actual.float(), torch.as_tensor(expected, dtype=torch.float32), atol=atol, rtol=0
    )


# --- advantages ----------------------------------------------------------------------------


def test_group_advantages_centres_per_group():
    adv = group_advantages(torch.tensor([1.0, 2.0, 3.0, 3.0, 3.0, 3.0]), group_size=3)
    assert torch.equal(adv, torch.tensor([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0]))


def test_group_advantages_scaled_by_unbiased_std():
    adv = group_advantages(
        torch.tensor([1.0, 2.0, 4.0, 3.0, 3.0, 3.0]), group_size=3, scale_by_std=True, eps=0.0
    )
    # Group [1, 2, 4]: mean 7/3, deviations -4/3, -1/3, 5/3, unbiased var (16+1+25)/9/2 = 7/3.
    s = math.sqrt(7.0 / 3.0)
    close(adv, [-4 / 3 / s, -1 / 3 / s, 5 / 3 / s, 0.0, 0.0, 0.0])
    # Group of 2 [0, 4]: unbiased std 2*sqrt(2) -> +-1/sqrt(2) (population std would give +-1).
    adv2 = group_advantages(torch.tensor([0.0, 4.0]), group_size=2, scale_by_std=True, eps=0.0)
    close(adv2, [-1 / math.sqrt(2), 1 / math.sqrt(2)])
    # The release's eps (1e-6) enters the denominator; a large eps shows it: 2*sqrt(2) + 2.
    adv3 = group_advantages(torch.tensor([0.0, 4.0]), group_size=2, scale_by_std=True, eps=2.0)
    close(adv3, [-2 / (2 * math.sqrt(2) + 2), 2 / (2 * math.sqrt(2) + 2)])


@pytest.mark.parametrize("scale", [False, True])
def test_equal_reward_groups_give_exact_zeros(scale):
    # For -1.3526537 the float32 mean of three copies is off by one ulp, so a naive
    # (r - mean) / std is a residue / 0 = +-inf. Equal groups must give exact zeros, no NaN.
    x = -1.3526537418365479
    rewards = torch.tensor([x, x, x, 0.7, 0.7, 0.7, -2.3, 5.0, 1.0])
    adv = group_advantages(rewards, group_size=3, scale_by_std=scale, eps=0.0)
    assert torch.isfinite(adv).all()
    assert torch.equal(adv[:6], torch.zeros(6))
    assert adv[6:].abs().sum() > 1.0


def test_group_size_one_gives_zeros():
    adv = group_advantages(torch.tensor([1.0, -5.0, 3.0]), group_size=1, scale_by_std=True)
    assert torch.equal(adv, torch.zeros(3))


def test_group_advantages_rejects_bad_group_size():
    with pytest.raises(ValueError, match="multiple of group_size"):
        group_advantages(torch.zeros(5), group_size=2)
    with pytest.raises(ValueError, match="group_size must be >= 1"):
        group_advantages(torch.zeros(4), group_size=0)


# --- k3 KL ---------------------------------------------------------------------------------


def test_k3_known_values():
    # logp=-1, ref=-2: d = -1, exp(-1) + 1 - 1 = exp(-1).
    # logp=-2, ref=-1: d = 1, e - 1 - 1 = e - 2. Equal: 0.
    logp = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-2.0, -1.0, -0.5])
    kl = k3_kl(logp, ref)
    assert kl.dtype == torch.float32
    close(kl, [math.exp(-1.0), math.e - 2.0, 0.0])
    assert kl[2] == 0.0


def test_k3_bf16_input_computed_in_float32():
    kl = k3_kl(torch.tensor([-1.0], dtype=torch.bfloat16), torch.tensor([-2.0]))
    assert kl.dtype == torch.float32
    close(kl, [math.exp(-1.0)])


def test_k3_gradient_only_through_logprobs():
    logp = torch.tensor([-1.0], requires_grad=True)
    ref = torch.tensor([-2.0], requires_grad=True)
    k3_kl(logp, ref).sum().backward()
    # d/dlogp [exp(ref - logp) - (ref - logp) - 1] = -exp(ref - logp) + 1 = 1 - exp(-1).
    close(logp.grad, [1.0 - math.exp(-1.0)])
    assert ref.grad is None


# --- clipped policy loss -------------------------------------------------------------------


def test_clipped_policy_loss_hand_values():
    # Row 0: A = +1, row 1: A = -1. Tokens: ratio 1.5, 0.5, 1.0.
    log_r = torch.log(torch.tensor([1.5, 0.5, 1.0]))
    old = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -1.5, -2.5]])
    logp = old + log_r
    loss, clipped = clipped_policy_loss(logp, old, torch.tensor([1.0, -1.0]), clip_eps=0.2)
    # A=+1: r=1.5 -> max(-1.5, -1.2) = -1.2 clipped; r=0.5 -> max(-0.5, -0.8) = -0.5; r=1 -> -1.
    # A=-1: r=1.5 -> max(1.5, 1.2) = 1.5; r=0.5 -> max(0.5, 0.8) = 0.8 clipped; r=1 -> 1.
    close(loss, [[-1.2, -0.5, -1.0], [1.5, 0.8, 1.0]], atol=1e-5)
    assert clipped.dtype == torch.bool
    assert clipped.tolist() == [[True, False, False], [False, True, False]]


def test_clip_eps_high():
    old = torch.zeros(1, 2)
    logp = torch.log(torch.tensor([[1.25, 0.75]]))
    adv = torch.tensor([1.0])
    loss, clipped = clipped_policy_loss(logp, old, adv, clip_eps=0.2)
    close(loss, [[-1.2, -0.75]], atol=1e-5)
    assert clipped.tolist() == [[True, False]]
    loss, clipped = clipped_policy_loss(logp, old, adv, clip_eps=0.2, clip_eps_high=0.28)
    close(loss, [[-1.25, -0.75]], atol=1e-5)
    assert clipped.tolist() == [[False, False]]
    # The low side still uses clip_eps: A=-1, r=0.75 -> max(0.75, 0.8) = 0.8 clipped.
    loss, clipped = clipped_policy_loss(logp, old, -adv, clip_eps=0.2, clip_eps_high=0.28)
    close(loss, [[1.25, 0.8]], atol=1e-5)
    assert clipped.tolist() == [[False, True]]


def test_clipped_policy_gradient_only_through_logprobs():
    old = torch.zeros(1, 2, requires_grad=True)
    adv = torch.tensor([2.0], requires_grad=True)
    logp = torch.log(torch.tensor([[1.5, 1.1]])).requires_grad_(True)
    loss, _ = clipped_policy_loss(logp, old, adv, clip_eps=0.2)
    loss.sum().backward()
    # Token 0 clipped (r=1.5 > 1.2 with A>0): zero grad. Token 1: d(-A r)/dlogp = -A r = -2.2.
    close(logp.grad, [[0.0, -2.2]], atol=1e-5)
    assert old.grad is None and adv.grad is None


# --- aggregation ---------------------------------------------------------------------------

PER_TOKEN = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, 100.0]])
MASK = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)


def test_aggregate_token_mean():
    close(aggregate(PER_TOKEN, MASK, "token_mean"), (1 + 2 + 3 + 4) / 4)


def test_aggregate_sequence_mean():
    close(aggregate(PER_TOKEN, MASK, "sequence_mean"), ((1 + 2 + 3) / 3 + 4 / 1) / 2)


def test_aggregate_constant_norm():
    close(aggregate(PER_TOKEN, MASK, "constant_norm", max_length=5), (1 + 2 + 3 + 4) / (2 * 5))
    with pytest.raises(ValueError, match="max_length"):
        aggregate(PER_TOKEN, MASK, "constant_norm")


def test_aggregate_float_mask_and_nan_padding():
    per_token = PER_TOKEN.clone()
    per_token[1, 2] = float("nan")
    close(aggregate(per_token, MASK.float(), "token_mean"), 2.5)


def test_aggregate_unknown_mode_lists_modes():
    with pytest.raises(ValueError, match="token_mean.*sequence_mean.*constant_norm"):
        aggregate(PER_TOKEN, MASK, "mean")


@pytest.mark.parametrize("mode", ["token_mean", "sequence_mean", "constant_norm"])
def test_aggregate_empty_mask_is_zero(mode):
    out = aggregate(PER_TOKEN, torch.zeros_like(MASK), mode, max_length=3)
    assert out.item() == 0.0


# --- grpo_loss -----------------------------------------------------------------------------


def test_zero_advantages_give_exactly_zero_gradient():
    adv = group_advantages(torch.tensor([0.3, 0.3, 0.3, 0.3]), group_size=4)
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -0.1], [-3.0, -1.0], [-2.0, -2.0]])
    logp.requires_grad_(True)
    old = logp.detach() + 0.3  # ratio != 1, including clipped tokens
    mask = torch.ones(4, 2, dtype=torch.bool)
    out = grpo_loss(logp, old, adv, mask, ref_logprobs=old - 1.0, beta=0.0)
    out.loss.backward()
    assert torch.equal(logp.grad, torch.zeros(4, 2))
    assert out.loss.item() == 0.0
    assert out.kl.item() > 0.0  # still reported with beta 0


def test_grpo_loss_gradient_at_ratio_one_token_mean():
    # At ratio 1, d loss / d logp_t = -A_i / num_tokens for unmasked tokens, 0 for padding.
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, -9.0]], requires_grad=True)
    adv = torch.tensor([2.0, -1.0])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    out = grpo_loss(logp, logp.detach(), adv, mask)
    out.loss.backward()
    close(logp.grad, [[-2 / 5, -2 / 5, -2 / 5], [1 / 5, 1 / 5, 0.0]])
    close(out.loss, (3 * -2.0 + 2 * 1.0) / 5)
    close(out.policy_loss, (3 * -2.0 + 2 * 1.0) / 5)
    assert out.clip_fraction.item() == 0.0
    assert out.kl.item() == 0.0
    assert out.loss.requires_grad
    assert not out.policy_loss.requires_grad


def test_grpo_loss_gradient_sequence_mean():
    # sequence_mean at ratio 1: d/dlogp = -A_i / (N * len_i).
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, -9.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    out = grpo_loss(
        logp, logp.detach(), torch.tensor([2.0, -1.0]), mask, aggregation="sequence_mean"
    )
    out.loss.backward()
    close(logp.grad, [[-2 / 6, -2 / 6, -2 / 6], [1 / 4, 1 / 4, 0.0]])


def test_grpo_loss_with_kl_and_clipping():
    old = torch.zeros(2, 2)
    # ratios: row 0 [1.5, 1.0], row 1 [1.0, 0.5]; row 1 token 1 is padding.
    logp = torch.log(torch.tensor([[1.5, 1.0], [1.0, 0.5]])).requires_grad_(True)
    ref = logp.detach() - 1.0  # ref - logp = -1 everywhere -> k3 = exp(-1)
    mask = torch.tensor([[1, 1], [1, 0]], dtype=torch.bool)
    adv = torch.tensor([1.0, -1.0])
    out = grpo_loss(logp, old, adv, mask, ref_logprobs=ref, beta=0.5)
    assert isinstance(out, GRPOLoss)
    policy = (-1.2 + -1.0 + 1.0) / 3
    close(out.policy_loss, policy, atol=1e-5)
    close(out.kl, math.exp(-1.0))
    close(out.loss, policy + 0.5 * math.exp(-1.0), atol=1e-5)
    close(out.clip_fraction, 1 / 3)
    out.loss.backward()
    # KL grad per token: beta * (1 - exp(-1)) / 3; clipped token gets only that.
    g_kl = 0.5 * (1 - math.exp(-1.0)) / 3
    close(logp.grad, [[g_kl, -1 / 3 + g_kl], [1 / 3 + g_kl, 0.0]], atol=1e-5)


def test_grpo_loss_beta_without_ref_raises():
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="ref_logprobs"):
        grpo_loss(x, x, torch.zeros(1), torch.ones(1, 2), beta=0.1)


# --- rewards -------------------------------------------------------------------------------


def test_failure_reward_values():
    assert failure_reward("neg_log_mse") == pytest.approx(-0.6931471805599453, abs=1e-12)
    assert failure_reward("neg_mse") == -2.0
    assert REWARD_KINDS == ("neg_log_mse", "neg_mse")
    with pytest.raises(ValueError, match="neg_log_mse"):
        failure_reward("mse")


def test_rewards_from_mse():
    mse = torch.tensor([0.5, float("nan"), 1.0, 2.0])
    valid = torch.tensor([True, False, True, False])
    r = rewards_from_mse(mse, valid, "neg_log_mse", eps=0.0)
    close(r, [math.log(2.0), -math.log(2.0), 0.0, -math.log(2.0)])
    r = rewards_from_mse(mse, valid, "neg_mse")
    close(r, [-0.5, -2.0, -1.0, -2.0])
    # eps keeps a perfect reconstruction finite: -log(0 + 1e-8) = 8 log 10.
    r = rewards_from_mse(torch.tensor([0.0]), torch.tensor([True]), eps=1e-8)
    close(r, [8 * math.log(10.0)], atol=1e-4)
    with pytest.raises(ValueError, match="unknown reward kind"):
        rewards_from_mse(mse, valid, "log_mse")


def test_failure_reward_matches_orthogonal_reconstruction():
    # Two orthogonal vectors rescaled to norm sqrt(d): per-dim MSE = (d + d) / d = 2.
    d = 4
    a = torch.tensor([2.0, 0.0, 0.0, 0.0])
    b = torch.tensor([0.0, 2.0, 0.0, 0.0])
    mse = ((a - b) ** 2).mean().reshape(1)
    assert mse.item() == 2.0 and a.norm().item() == math.sqrt(d)
    r = rewards_from_mse(mse, torch.tensor([True]), "neg_log_mse", eps=0.0)
    assert r.item() == pytest.approx(failure_reward("neg_log_mse"), abs=1e-6)


# --- finite check --------------------------------------------------------------------------


def test_finite_or_none():
    ok = torch.tensor([1.0, -2.0])
    assert finite_or_none(ok, torch.tensor(3.0), None) is True
    assert finite_or_none(ok, torch.tensor([0.0, float("nan")])) is False
    assert finite_or_none(torch.tensor(float("inf"))) is False
    assert finite_or_none(torch.tensor(float("-inf")), ok) is False
    assert finite_or_none() is True


# --- release options: k1, sum, chunk weights -----------------------------------------------


def test_k1_is_logp_minus_ref_with_gradient_one():
    logp = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    ref = torch.tensor([-2.0, -1.0, -0.5], requires_grad=True)
    kl = k1_kl(logp, ref)
    close(kl, [1.0, -1.0, 0.0])  # negative where the reference likes the token more
    kl.sum().backward()
    close(logp.grad, [1.0, 1.0, 1.0])
    assert ref.grad is None


def test_grpo_loss_with_k1_adds_beta_times_the_token_difference():
    # One row, two real tokens and one pad; ratio 1 and advantage 0, so only the KL remains.
    logp = torch.tensor([[-1.0, -3.0, 9.0]])
    ref = torch.tensor([[-1.5, -2.0, 0.0]])
    mask = torch.tensor([[1, 1, 0]])
    common = dict(ref_logprobs=ref, beta=0.1, aggregation="sequence_mean")
    k1 = grpo_loss(logp, logp, torch.zeros(1), mask, kl_estimator="k1", **common)
    # k1 per token: 0.5, -1.0 -> mean -0.25; loss = 0.1 * -0.25.
    close(k1.kl, -0.25)
    close(k1.loss, -0.025)
    k3 = grpo_loss(logp, logp, torch.zeros(1), mask, kl_estimator="k3", **common)
    # k3: d = ref - logp = -0.5 and 1.0 -> exp(-0.5) + 0.5 - 1 and e - 1 - 1.
    expected = ((math.exp(-0.5) - 0.5) + (math.e - 2.0)) / 2
    close(k3.kl, expected)
    close(k3.loss, 0.1 * expected)
    with pytest.raises(ValueError, match="kl_estimator"):
        grpo_loss(logp, logp, torch.zeros(1), mask, kl_estimator="k2", **common)


def test_sum_and_sequence_mean_aggregations_by_hand():
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, 100.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    close(aggregate(per_token, mask, "sum"), 10.0)
    close(aggregate(per_token, mask, "token_mean"), 10.0 / 4)
    # Per-sample token means 2 and 4, then their mean: the release's aggregation.
    close(aggregate(per_token, mask, "sequence_mean"), 3.0)
    close(aggregate(per_token, mask, "constant_norm", max_length=5), 10.0 / (2 * 5))


@pytest.mark.parametrize("mode", ["token_mean", "sequence_mean", "constant_norm", "sum"])
def test_chunk_weights_make_micro_batches_sum_to_the_batch_loss(mode):
    generator = torch.Generator().manual_seed(0)
    per_token = torch.randn(6, 5, generator=generator)
    mask = (torch.rand(6, 5, generator=generator) > 0.3).int()
    whole = aggregate(per_token, mask, mode, max_length=5)
    parts = [slice(0, 4), slice(4, 6)]
    summed = sum(
        aggregate(per_token[p], mask[p], mode, max_length=5) * chunk_weight(mode, mask[p], mask)
        for p in parts
    )
    close(summed, float(whole), atol=1e-5)
