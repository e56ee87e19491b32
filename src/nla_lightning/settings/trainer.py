"""The Lightning Trainer every stage builds (`trainer.*`, conf/trainer/).

`TrainerSettings` types the keys the presets set, with Lightning's own defaults (what a key
left out means). Any other key is decided here, so none slips past:

- a key that changes the optimisation (REFUSED_TRAINER_KEYS) is refused, naming the stage key
  to set instead: each stage takes it from its own group, so one set here would be honoured by
  some stages and silently dropped by others;
- a key every stage sets itself (STAGE_TRAINER_KEYS: logger, callbacks, ...) is refused, naming
  what sets it, since Lightning would be handed it twice;
- any other parameter of `lightning.pytorch.Trainer.__init__` (e.g. trainer.deterministic=true,
  trainer.limit_train_batches=...) is accepted and handed on as given; Lightning checks its
  value when the stage builds its Trainer. Lightning is imported for this only when such a key
  is set;
- anything else is refused in one line listing the typed keys and where Lightning's are listed.

The composed block is handed on as the plain dict it is; `trainer_settings` only checks it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, fields
from typing import Any

from nla_lightning.errors import NLAConfigError
from nla_lightning.settings import checks

# Lightning's accelerator names ("gpu" = "cuda").
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "tpu", "auto")
# Lightning 2's precision inputs (lightning.fabric.plugins.precision.precision._PRECISION_INPUT).
PRECISIONS = (
    "transformer-engine",
    "transformer-engine-float16",
    "16-true",
    "16-mixed",
    "bf16-true",
    "bf16-mixed",
    "32-true",
    "64-true",
    64,
    32,
    16,
    "64",
    "32",
    "16",
    "bf16",
)
# Trainer keys that would change the optimisation: each stage takes them from its own group
# (SFT clips through Lightning, RL clips itself under manual optimisation), so one set here
# would be honoured by some stages and silently dropped by others.
REFUSED_TRAINER_KEYS = {
    "gradient_clip_val": "sft.av.gradient_clip_val, sft.ar.gradient_clip_val or "
    "rl.gradient_clip_val",
    "gradient_clip_algorithm": "the stages clip by norm",
    "accumulate_grad_batches": "sft.av.accumulate_grad_batches, sft.ar.accumulate_grad_batches "
    "or rl.av_micro_batch / rl.ar_micro_batch (same update, less memory)",
    "max_steps": "sft.av.max_steps, sft.ar.max_steps or rl.steps",
    "max_epochs": "sft.av.max_steps, sft.ar.max_steps or rl.steps",
}
# Trainer keys each stage sets itself (training/trainer.py, stages/rl.py): what sets them.
STAGE_TRAINER_KEYS = {
    "logger": "the logger group (logger=csv, tensorboard, wandb or none)",
    "callbacks": "each stage (its progress bar, checkpoints, held-out curve)",
    "plugins": "the stages (atomic checkpoint files)",
    "enable_checkpointing": "the stages' checkpoint_every keys (rl.checkpoint_every, ...)",
    "enable_model_summary": "the stages (off)",
    "num_sanity_val_steps": "the stages (0: they validate once, after fitting)",
    "default_root_dir": "the run directory (hydra.run.dir)",
}
TRAINER_FLAGS = "https://lightning.ai/docs/pytorch/stable/common/trainer.html#trainer-flags"


@dataclass
class TrainerSettings:
    """The keys the trainer presets set."""

    accelerator: str = "auto"
    devices: int | list[int] | str = "auto"  # a count, device indices, or auto
    precision: str | int = "32-true"
    log_every_n_steps: int = 50
    enable_progress_bar: bool = True  # false: no stage bars either
    # Lightning's registry names (ddp, ddp_spawn, ...) or fsdp (training/sharded_strategy.py)
    strategy: str = "auto"
    num_nodes: int = 1

    def __post_init__(self) -> None:
        checks.one_of("trainer.accelerator", self.accelerator, ACCELERATORS)
        _check_devices(self.devices)
        checks.one_of("trainer.precision", self.precision, PRECISIONS)
        checks.integer("trainer.log_every_n_steps", self.log_every_n_steps, 1)
        checks.boolean("trainer.enable_progress_bar", self.enable_progress_bar)
        checks.text("trainer.strategy", self.strategy)
        checks.integer("trainer.num_nodes", self.num_nodes, 1)


def _check_devices(devices: Any) -> None:
    if devices == "auto":
        return
    if isinstance(devices, list) and devices:
        for i, index in enumerate(devices):
            checks.integer(f"trainer.devices[{i}]", index, 0)
        if len(set(devices)) < len(devices):
            raise NLAConfigError(f"trainer.devices={devices!r} names a device twice")
        return
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise NLAConfigError(
            f"trainer.devices={devices!r}: expected a number of devices >= 1, a non-empty list "
            "of device indices (e.g. [0,1]) or auto"
        )


def lightning_trainer_keys() -> set[str]:
    """The parameters of lightning.pytorch.Trainer (imported here, only when needed)."""
    from lightning.pytorch import Trainer

    return set(inspect.signature(Trainer.__init__).parameters) - {"self"}


def trainer_settings(values: dict[str, Any]) -> TrainerSettings:
    """The `trainer` block: the typed keys checked, every other key decided (module doc)."""
    values = dict(values or {})
    for key, instead in REFUSED_TRAINER_KEYS.items():
        if key in values:
            raise NLAConfigError(
                f"trainer.{key}={values[key]!r} is not honoured by every stage: set {instead} "
                "instead"
            )
    for key, setter in STAGE_TRAINER_KEYS.items():
        if key in values:
            raise NLAConfigError(
                f"trainer.{key}={values[key]!r}: every stage sets it itself, from {setter}; drop it"
            )
    typed = {f.name for f in fields(TrainerSettings)}
    other = sorted(set(values) - typed)
    if other:
        unknown = [key for key in other if key not in lightning_trainer_keys()]
        if unknown:
            raise NLAConfigError(
                f"trainer has unknown keys {unknown}: the keys are {sorted(typed)} and the other "
                f"parameters of lightning.pytorch.Trainer ({TRAINER_FLAGS})"
            )
    return TrainerSettings(**{k: v for k, v in values.items() if k in typed})
