"""Settings of the eval stage and of the RL stage's held-out curve (`eval.*`)."""

from __future__ import annotations

from dataclasses import dataclass

from nla_lightning.settings import checks


@dataclass
class EvalSettings:
    """Held-out evaluation of every NLA a run holds (eval.json)."""

    rows: int = 512
    batch_size: int = 64
    max_new_tokens: int = 200  # the release's inference cap; longer is a failure
    temperature: float = 0.0  # the AV's greedy explanation (also for the RL curve)
    fidelity_rows: int = 256  # held-out texts re-run through the target with h spliced; 0 = skip

    def __post_init__(self) -> None:
        for key in ("rows", "batch_size", "max_new_tokens"):
            checks.positive(f"eval.{key}", getattr(self, key))
        checks.non_negative("eval.temperature", self.temperature)
        checks.non_negative("eval.fidelity_rows", self.fidelity_rows)
