"""The RL step with all its work forced, for benchmarks on an untrained AV: every response
exactly `max_new_tokens` long and every one a valid explanation (a random AV never closes its
<explanation> tag, and without explanations the AR would be neither scored nor trained)."""

from __future__ import annotations

import torch

from nla_lightning.core.verbalizer import Rollout
from nla_lightning.training.rl import NLARLModule


class ForcedLengthRL(NLARLModule):
    """Rollout to the cap, AR scoring and regression step on every sample, GRPO step."""

    def rollout(self, activations: torch.Tensor) -> Rollout:
        self.av.eval()
        with torch.no_grad():
            rollout = self.av.sample(
                activations,
                group_size=self.hp.group_size,
                max_new_tokens=self.hp.max_new_tokens,
                temperature=self.hp.temperature,
                min_new_tokens=self.hp.max_new_tokens,
                compile=self.hp.compile_rollout,
            )
        self.av.train()
        rollout.explanations = self.explanations(rollout)
        return rollout

    def explanations(self, rollout: Rollout) -> list[str]:
        # A plain word at the end keeps the critic template's suffix from merging with the text.
        return [f"{text.strip()} end" for text in rollout.texts]
