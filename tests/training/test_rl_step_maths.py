"""One real RL step of the tiny NLA against the same step recomputed by hand (rl_by_hand.py):
rewards from the AR before its update, group advantages, the clipped surrogate, the KL to the
reference, the aggregation, and both AdamW updates; and the isolation of the two updates."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch

from nla_lightning.core.reconstructor import ActivationReconstructor
from nla_lightning.core.verbalizer import ActivationVerbalizer
from nla_lightning.settings import RLSettings
from nla_lightning.training.reference import ReferencePolicy
from nla_lightning.training.rl import NLARLModule
from nla_lightning.training.rl_schedule import batch_rows, seed_for
from tests.training.rl_by_hand import (
    TRAINER,
    RecordingRL,
    advantages_by_hand,
    aggregate_by_hand,
    ar_predictions,
    deltas,
    first_adamw_update,
    logprobs_by_hand,
    mse_by_hand,
    normalise_rows,
    relative_error,
    rewards_by_hand,
)

# AdamW's first step is -lr * g / (|g| + eps): with eps near the gradients' own size the
# change keeps the gradient's magnitude, not only its sign, so the comparison sees the loss.
AV_LR, AR_LR, ADAM_EPS = 1e-2, 1e-3, 1e-4
BETA, CLIP = 0.5, 0.2
TOLERANCE = 1e-4  # relative, on the weight changes


def step_settings(**overrides) -> RLSettings:
    settings = {
        "steps": 1,
        "batch_size": 2,
        "group_size": 4,
        "max_new_tokens": 16,
        "av_lr": AV_LR,
        "ar_lr": AR_LR,
        "adam_eps": ADAM_EPS,
        "warmup_steps": 0,
        "beta": BETA,
        "clip_eps": CLIP,
        "seed": 3,
    }
    return RLSettings(**{**settings, **overrides})


def perturbed_reference(av_dir) -> ActivationVerbalizer:
    """A frozen copy of the warm start with noise on its weights, so the KL term and its
    gradient are not 0 at the first step."""
    reference = ActivationVerbalizer.load(av_dir)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.05 * p.std() * torch.randn(p.shape, generator=generator))
    return reference


CASES = {
    "k3-token_mean": {"kl_estimator": "k3", "aggregation": "token_mean", "scale_by_std": False},
    "k1-sequence_mean-std": {
        "kl_estimator": "k1",
        "aggregation": "sequence_mean",
        "scale_by_std": True,
    },
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_one_rl_step_is_the_documented_maths(warm_nla, colour_mapping, case):
    """One real step (Lightning Trainer, max one step) with a frozen reference that differs from
    the AV (so the KL term has a gradient), recomputed by hand from copies of the AV and AR
    taken before the step: the AR's rewards and regression step, the advantages, the AV's loss
    and its gradient; both weight changes must be AdamW's first step on those gradients, and
    the step's logged metrics those of the AR before its update. The same comparison rejects a
    flipped advantage sign, rewards rolled by one group, rewards from the AR after its step, a
    missing KL term and an AR step on targets rolled by one group."""
    av_dir, ar_dir, _ = warm_nla
    hp = step_settings(**case)
    g = hp.group_size
    av, ar = ActivationVerbalizer.load(av_dir), ActivationReconstructor.load(ar_dir)
    reference = perturbed_reference(av_dir)
    activations = colour_mapping[0][:32]
    module = RecordingRL(av, ar, activations, hp, ReferencePolicy("frozen", reference))
    av0, ar0 = copy.deepcopy(av), copy.deepcopy(ar)  # the models before the step
    av_before = [p.detach().clone() for p in av.parameters()]
    ar_before = [p.detach().clone() for p in ar.parameters()]
    trainer = L.Trainer(**TRAINER)
    trainer.fit(module)
    assert module.steps_done == 1
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}

    # --- the rollout: the step's rows, sampled from the AV before the step with the step's seed
    ((batch, rollout),) = module.rollouts
    assert torch.equal(batch, activations[batch_rows(32, hp.batch_size, 0, 1, 0, hp.seed)])
    torch.manual_seed(seed_for(hp.seed, "step", 0, 0))
    again = av0.sample(batch, group_size=g, max_new_tokens=hp.max_new_tokens)
    assert torch.equal(again.response_ids, rollout.response_ids)
    explanations = rollout.explanations
    ids, mask = rollout.response_ids, rollout.response_mask
    targets = batch.repeat_interleave(g, dim=0)  # row i*g + j: sample j of activation i
    valid = [i for i, e in enumerate(explanations) if e is not None]
    assert len(valid) >= 2, explanations

    # --- rewards from the AR BEFORE its step; the AR's step on the same explanations
    rewards, mse = rewards_by_hand(ar0, explanations, targets)
    predicted = ar_predictions(ar0, [explanations[i] for i in valid])
    ar_loss = mse_by_hand(predicted, targets[valid], ar.meta.mse_scale).mean()
    ar_params = list(ar0.parameters())
    ar_grads = torch.autograd.grad(ar_loss, ar_params, retain_graph=True)
    expected_ar = [first_adamw_update(gr, AR_LR, ADAM_EPS) for gr in ar_grads]
    moved_ar = deltas(ar.parameters(), ar_before)

    # --- advantages, log-probs (policy before the step, reference), the loss and its gradient
    advantages = advantages_by_hand(rewards, g, hp.scale_by_std)
    assert advantages.abs().max() > 0.05, rewards  # a learning signal, so the test can see it
    vectors = batch.repeat_interleave(g, dim=0)
    logp = logprobs_by_hand(av0, vectors, ids, mask)
    with torch.no_grad():
        ref = logprobs_by_hand(reference, vectors, ids, mask)
    av_params = list(av0.parameters())

    def av_loss(adv: torch.Tensor, beta: float = BETA):
        """(loss, its policy term alone, per-token KL) of the AV's step for advantages [N]."""
        ratio = torch.exp(logp - logp.detach())  # 1 at the first inner epoch
        a = adv.unsqueeze(1)
        surrogate = torch.maximum(-a * ratio, -a * ratio.clamp(1 - CLIP, 1 + CLIP))
        diff = ref - logp
        kl = diff.exp() - diff - 1 if hp.kl_estimator == "k3" else logp - ref
        loss = aggregate_by_hand(surrogate + beta * kl, mask, hp.aggregation)
        return loss, aggregate_by_hand(surrogate, mask, hp.aggregation), kl

    def av_update(adv: torch.Tensor, beta: float = BETA) -> list[torch.Tensor]:
        grads = torch.autograd.grad(av_loss(adv, beta)[0], av_params, retain_graph=True)
        return [first_adamw_update(x, AV_LR, ADAM_EPS) for x in grads]

    expected_av = av_update(advantages)
    moved_av = deltas(av.parameters(), av_before)
    with torch.no_grad():
        _, policy_loss, kl = av_loss(advantages)

    # The module's updates are those of the maths above (measured: ~2e-6 for the AV, ~3e-7
    # for the AR: float rounding between its shared-prompt forward and this plain one).
    assert relative_error(moved_ar, expected_ar) < TOLERANCE
    assert relative_error(moved_av, expected_av) < TOLERANCE
    # Element by element too: near g = 0 the update's slope is lr / eps, so a few elements
    # carry ~1e-5 lr of rounding.
    for lr, moved, expected in [(AV_LR, moved_av, expected_av), (AR_LR, moved_ar, expected_ar)]:
        for m, e in zip(moved, expected, strict=True):
            torch.testing.assert_close(m, e.double(), rtol=1e-3, atol=1e-4 * lr)

    # ... and not those of a wrong step, which this comparison tells apart (each is off by
    # ~0.1 to 2 relative, 1000x the tolerance).
    rewards_after, mse_after = rewards_by_hand(ar, explanations, targets)
    assert (rewards_after - rewards).abs().max() > 0.05  # the AR's step changed its rewards
    wrong_av = {
        "advantage sign flipped": av_update(-advantages),
        "rewards rolled by one group": av_update(
            advantages_by_hand(rewards.roll(g), g, hp.scale_by_std)
        ),
        "rewards from the AR after its step": av_update(
            advantages_by_hand(rewards_after, g, hp.scale_by_std)
        ),
        "no KL term": av_update(advantages, beta=0.0),
    }
    for name, update in wrong_av.items():
        assert relative_error(moved_av, update) > 100 * TOLERANCE, name
    rolled = mse_by_hand(predicted, targets.roll(g, dims=0)[valid], ar.meta.mse_scale).mean()
    wrong_ar = [
        first_adamw_update(x, AR_LR, ADAM_EPS) for x in torch.autograd.grad(rolled, ar_params)
    ]
    assert relative_error(moved_ar, wrong_ar) > 100 * TOLERANCE

    # The logged metrics are the step's, with the rewards of the AR before its update.
    variance = float(
        normalise_rows(activations.double(), ar.meta.mse_scale).var(dim=0, unbiased=False).mean()
    )
    keep = mask.bool()
    expected_logs = {
        "rl/reward": float(rewards.mean()),
        "rl/fve": 1.0 - float(mse.mean()) / variance,
        "rl/ar_loss": float(ar_loss.detach()),
        "rl/failure_rate": 1.0 - len(valid) / len(explanations),
        "rl/policy_loss": float(policy_loss),
        "rl/kl": float(torch.where(keep, kl, torch.zeros_like(kl)).sum() / keep.sum()),
        "rl/clip_fraction": 0.0,  # ratio 1 at the first inner epoch
    }
    for key, value in expected_logs.items():
        assert logged[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert abs(logged["rl/reward"] - float(rewards_after.mean())) > 1e-3
    assert abs(logged["rl/fve"] - (1.0 - float(mse_after.mean()) / variance)) > 1e-3


def _state(model) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Every parameter's value and gradient (None: no gradient), copied."""
    return [
        (p.detach().clone(), None if p.grad is None else p.grad.detach().clone())
        for p in model.parameters()
    ]


def _same(before, after) -> bool:
    """Bit for bit the same values and gradients (None stays None)."""
    return all(
        torch.equal(v0, v1) and (g0 is None) == (g1 is None) and (g0 is None or torch.equal(g0, g1))
        for (v0, g0), (v1, g1) in zip(before, after, strict=True)
    )


class WatchedRL(NLARLModule):
    """The RL module unchanged, watched: around its AR step and its AV step it records whether
    the OTHER model's weights and gradients stayed bit for bit the same, whether its own
    weights moved, and which models' parameters received a gradient during the step."""

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self.phase, self.records = None, []
        self.touched: set[tuple[str, str]] = set()
        for name, model in (("av", self.av), ("ar", self.ar)):
            for p in model.parameters():
                if p.requires_grad:
                    p.register_post_accumulate_grad_hook(
                        lambda _p, name=name: self.touched.add((self.phase, name))
                    )

    def _watch(self, phase: str, own, other, update, *args):
        other_before, own_before = _state(other), [p.detach().clone() for p in own.parameters()]
        self.phase = phase
        try:
            return update(*args)
        finally:
            self.phase = None
            own_moved = any(
                not torch.equal(a, p) for a, p in zip(own_before, own.parameters(), strict=True)
            )
            self.records.append((phase, _same(other_before, _state(other)), own_moved))

    def score_and_update_ar(self, *args):
        return self._watch("ar step", self.ar, self.av, super().score_and_update_ar, *args)

    def update_av(self, *args):
        return self._watch("av step", self.av, self.ar, super().update_av, *args)


def test_the_av_step_never_touches_the_ar_nor_the_ar_step_the_av(warm_nla, colour_mapping):
    """Two real steps. The AR's step leaves the AV's weights AND gradients bit for bit as they
    were (at step 1 the AV still holds step 0's gradient, so clearing it shows too), and the
    AV's step the AR's; no backward pass of one step accumulates into the other model; and
    each optimiser holds exactly its own model's trainable parameters."""
    av_dir, ar_dir, _ = warm_nla
    hp = step_settings(steps=2, av_lr=1e-3)
    av, ar = ActivationVerbalizer.load(av_dir), ActivationReconstructor.load(ar_dir)
    reference = ReferencePolicy("frozen", perturbed_reference(av_dir))
    module = WatchedRL(av, ar, colour_mapping[0][:32], hp, reference)
    trainer = L.Trainer(**TRAINER)
    trainer.fit(module)
    assert module.steps_done == 2
    assert [r[0] for r in module.records] == ["ar step", "av step"] * 2
    for phase, other_untouched, own_moved in module.records:
        assert own_moved, f"the {phase} did not update its own model: the check would be vacuous"
        assert other_untouched, f"the {phase} changed the other model's weights or gradients"
    assert module.touched == {("ar step", "ar"), ("av step", "av")}
    held = [
        {id(p) for group in opt.param_groups for p in group["params"]} for opt in trainer.optimizers
    ]
    own = [{id(p) for p in m.parameters() if p.requires_grad} for m in (av, ar)]
    assert held == own and not held[0] & held[1]
