"""One evaluator of a whole NLA on held-out activations, for the RL stage's curve and the eval
stage alike: round-trip FVE beside the shuffled control, failures, response length and, in the
toy world, the attribute scores of the explanations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from nla_lightning.core.metrics import fve
from nla_lightning.core.reconstructor import ActivationReconstructor
from nla_lightning.core.verbalizer import MAX_NEW_TOKENS, ActivationVerbalizer
from nla_lightning.data.datasets import derangement
from nla_lightning.evaluation.round_trip import round_trip

ATTRIBUTE_KEYS = ("recall", "precision", "confabulation")


@dataclass
class Scores:
    """An NLA's scores on one set of held-out rows."""

    fve: float
    fve_shuffled: float  # each AV fed another row's activation: the control
    failure_rate: float
    response_length: float  # response tokens per row
    explanations: list[str | None]
    predicted: torch.Tensor  # [N, d] AR(AV(h)), float32 on the CPU
    attributes: dict[str, Any] | None = None  # toy world: recall, precision, confabulation
    attributes_shuffled: dict[str, Any] | None = None

    def curve_point(self) -> dict[str, float]:
        """The numbers one point of the RL curve records (val/* in the logs)."""
        point = {
            "fve": self.fve,
            "fve_shuffled": self.fve_shuffled,
            "failure_rate": self.failure_rate,
            "response_length": self.response_length,
        }
        if self.attributes is not None:
            point.update({k: self.attributes[k] for k in ATTRIBUTE_KEYS})
        return point


@torch.no_grad()
def evaluate_nla(
    av: ActivationVerbalizer,
    ar: ActivationReconstructor,
    activations: torch.Tensor,
    batch_size: int = 64,
    max_new_tokens: int = MAX_NEW_TOKENS,
    temperature: float = 0.0,
    seed: int = 0,
    snippets: list | None = None,
) -> Scores:
    """Score AR(AV(h)) against h, and the same with each AV fed another row's activation.
    Temperature 0 scores the AV's greedy explanation; sampling is seeded by `seed`. With the
    rows' toy-world `snippets`, also the attribute scores of both sets of explanations."""
    was_training = av.training, ar.training
    av.eval()
    ar.eval()
    order = derangement(len(activations), seed)
    torch.manual_seed(seed)
    trip = round_trip(av, ar, activations, batch_size, max_new_tokens, temperature)
    if temperature == 0:
        # Greedy: a row's explanation is a function of its own activation, so the AV fed the
        # shuffled rows writes the same explanations in the shuffled order (half the work).
        control = trip.reordered(order)
    else:
        torch.manual_seed(seed)
        shuffled = activations[order]
        control = round_trip(av, ar, shuffled, batch_size, max_new_tokens, temperature)
    av.train(was_training[0])
    ar.train(was_training[1])
    scale = av.meta.mse_scale
    scores = Scores(
        fve=fve(trip.predicted, activations, scale),
        fve_shuffled=fve(control.predicted, activations, scale),
        failure_rate=trip.failures / len(activations),
        response_length=trip.tokens / len(activations),
        explanations=trip.explanations,
        predicted=trip.predicted,
    )
    if snippets is not None:
        from nla_lightning.toy.scoring import score_attributes

        rows = snippets[: len(activations)]
        scores.attributes = score_attributes(trip.explanations, rows)
        scores.attributes_shuffled = score_attributes(control.explanations, rows)
    return scores
