"""Build a summary writer from a config dict such as {"name": "openai", ...}."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from nla_lightning.writers.anthropic import AnthropicWriter
from nla_lightning.writers.base import SummaryWriter
from nla_lightning.writers.local import LocalWriter
from nla_lightning.writers.openai import OpenAIWriter

WRITERS: dict[str, type[SummaryWriter]] = {
    "openai": OpenAIWriter,
    "anthropic": AnthropicWriter,
    "local": LocalWriter,
}


def build_writer(cfg: Mapping[str, Any]) -> SummaryWriter:
    """Instantiate the writer named by cfg["name"] with the remaining keys as kwargs."""
    kwargs = dict(cfg)
    name = kwargs.pop("name", None)
    if name not in WRITERS:
        raise ValueError(
            f"writer name must be one of {sorted(WRITERS)}, got {name!r}; "
            'set e.g. {"name": "openai", "base_url": ..., "model": ...}'
        )
    cls = WRITERS[name]
    try:
        return cls(**kwargs)
    except TypeError as err:
        params = ", ".join(inspect.signature(cls.__init__).parameters)
        raise ValueError(f"bad options for writer {name!r}: {err}; it accepts: {params}") from err
