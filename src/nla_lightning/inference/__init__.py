"""Using a trained NLA: explain a text's tokens, score explanations, steer, measure fidelity."""

from nla_lightning.inference.fidelity import fidelity, spliced_kl
from nla_lightning.inference.nla import NLA, TokenExplanation
from nla_lightning.inference.steer import (
    compare_steering,
    steer_generate,
    steering,
    steering_vector,
)

__all__ = [
    "NLA",
    "TokenExplanation",
    "compare_steering",
    "fidelity",
    "spliced_kl",
    "steer_generate",
    "steering",
    "steering_vector",
]
