"""The `logger` block: a Lightning logger that Hydra instantiates from `_target_`.

Its keys are the logger class's own arguments, so the schema is the class's signature: an
unknown key is refused here, before any model loads, not when the first stage builds the
logger. `save_dir` and `version` are set per stage (each stage logs under its own name), so
`version` is refused. Loggers whose class takes **kwargs (TensorBoard, W&B) pass other keys
on to their backends unchecked, as those libraries do."""

from __future__ import annotations

import inspect
from typing import Any

from nla_lightning.errors import NLAConfigError

# Set by make_logger for each stage (training/trainer.py).
SET_PER_STAGE = ("version",)


def logger_settings(values: dict[str, Any] | None) -> dict[str, Any] | None:
    """The logger block checked against its class (None: logger=none)."""
    if not values:
        return None
    target = values.get("_target_")
    if not isinstance(target, str) or "." not in target:
        raise NLAConfigError(
            f"logger._target_={target!r}: expected a logger class such as "
            "lightning.pytorch.loggers.CSVLogger (or choose logger=csv/tensorboard/wandb/none)"
        )
    from hydra.utils import get_class

    try:
        kind = get_class(target)
    except Exception as err:  # ImportError, or Hydra's wrapper of it
        raise NLAConfigError(
            f"logger._target_={target}: cannot be imported ({str(err).splitlines()[0]}); "
            "install its package (e.g. pip install tensorboard or wandb) or choose logger=csv"
        ) from None
    for key in SET_PER_STAGE:
        if key in values:
            raise NLAConfigError(
                f"logger.{key}={values[key]!r}: each stage logs under its own {key} (its name); "
                f"remove logger.{key}"
            )
    parameters = inspect.signature(kind.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    known = sorted(name for name in parameters if name not in ("self", *SET_PER_STAGE))
    unknown = sorted(set(values) - {"_target_", *known})
    if unknown and not takes_any:
        raise NLAConfigError(
            f"logger has unknown keys {unknown}: {target.rsplit('.', 1)[-1]} takes {known}"
        )
    return values
