"""rl.gradient_clip_val: under manual optimisation the RL stage clips itself; every AV and AR
optimiser step then sees a gradient norm no larger than the cap."""

from __future__ import annotations

import lightning as L
import torch

from tests.training.test_rl import TRAINER, make_module

CAP = 1e-3  # far below any real gradient of the tiny NLA, so clipping always acts


class GradNorms(L.Callback):
    """The total gradient norm each optimiser sees at the moment it steps."""

    def __init__(self) -> None:
        self.norms: dict[str, list[float]] = {"av": [], "ar": []}

    def on_train_start(self, trainer, module) -> None:
        for name, optimizer in zip(("av", "ar"), trainer.optimizers, strict=True):
            optimizer.register_step_pre_hook(self._record(name))

    def _record(self, name: str):
        def hook(optimizer, args, kwargs) -> None:
            grads = [p.grad for g in optimizer.param_groups for p in g["params"]]
            grads = [g for g in grads if g is not None]
            self.norms[name].append(
                torch.linalg.vector_norm(
                    torch.stack([torch.linalg.vector_norm(g) for g in grads])
                ).item()
            )

        return hook


def steps_with(warm_nla, colour_mapping, clip: float | None) -> dict[str, list[float]]:
    # Long enough responses that explanations end and the AR has rows to regress on.
    module = make_module(
        warm_nla, colour_mapping, steps=3, max_new_tokens=12, gradient_clip_val=clip
    )
    norms = GradNorms()
    L.Trainer(**TRAINER, callbacks=[norms]).fit(module)
    return norms.norms


def test_rl_clips_both_optimisers_to_the_cap(warm_nla, colour_mapping):
    clipped = steps_with(warm_nla, colour_mapping, CAP)
    unclipped = steps_with(warm_nla, colour_mapping, None)
    for side in ("av", "ar"):
        assert clipped[side], f"no {side} optimiser step was taken"
        assert max(clipped[side]) <= CAP * (1 + 1e-4)
        # Without the cap the same steps are far larger: the cap, not chance, kept them small.
        assert max(unclipped[side]) > 10 * CAP
