"""Settings of the two warm-start stages (`sft.av.*`, `sft.ar.*`) with their one default."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nla_lightning.settings import checks

LR_SCHEDULES = ("cosine", "constant")


@dataclass
class SFTSettings:
    """One supervised warm start: AdamW with a linear warm-up, then cosine decay or constant."""

    max_steps: int = 800  # optimiser steps
    batch_size: int = 32  # rows per device and forward pass
    accumulate_grad_batches: int = 1  # batches per optimiser step (same update, less memory)
    lr: float = 2.0e-3
    weight_decay: float = 0.0
    warmup_steps: int = 20
    lr_schedule: str = "cosine"  # cosine (decays to 0.1 x lr) | constant (the release's)
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    gradient_clip_val: float | None = 1.0  # Lightning clips by norm; None = off
    max_new_tokens: int = 40  # AV only: length of the sampled examples in summary.json
    # A mid-stage checkpoint every N optimiser steps (0 = none): a killed or stopped warm start
    # continues from it, on the batches it would have seen, when the run is started again.
    checkpoint_every: int = 200

    def optimiser(self) -> dict[str, Any]:
        """The optimiser's settings, as the warm-start modules take them."""
        return {
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "warmup_steps": self.warmup_steps,
            "max_steps": self.max_steps,
            "adam_betas": tuple(self.adam_betas),
            "lr_schedule": self.lr_schedule,
        }

    def check(self, prefix: str) -> None:
        for key in ("max_steps", "batch_size", "lr", "max_new_tokens", "accumulate_grad_batches"):
            checks.positive(f"{prefix}.{key}", getattr(self, key))
        for key in ("weight_decay", "warmup_steps", "checkpoint_every"):
            checks.non_negative(f"{prefix}.{key}", getattr(self, key))
        checks.optional_positive(f"{prefix}.gradient_clip_val", self.gradient_clip_val)
        checks.one_of(f"{prefix}.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        self.adam_betas = checks.betas(f"{prefix}.adam_betas", self.adam_betas)


@dataclass
class WarmStartSettings:
    """The AV's and the AR's warm start (the toy world's values)."""

    av: SFTSettings = field(default_factory=SFTSettings)
    ar: SFTSettings = field(default_factory=lambda: SFTSettings(max_steps=1500, lr=3.0e-3))

    def __post_init__(self) -> None:
        self.av.check("sft.av")
        self.ar.check("sft.ar")
