"""The stages of a run, one module each, all with the same face:

- `NAME`: the name `stage.run` lists;
- `needs(settings) -> list[Need]`: the inputs it reads from the run directory;
- `makes(settings) -> list[str]`: the run-relative paths it writes;
- `run(ctx: StageContext) -> dict`: does the work; the dict is its part of summary.json.

`pipeline.run` takes them in the configured order after checking every input exists."""

from __future__ import annotations

import importlib
from types import ModuleType

from nla_lightning.settings.run import STAGE_NAMES

# Stage name -> its module (imported on demand: each pulls in only what it needs).
REGISTRY = {name: f"nla_lightning.stages.{name}" for name in STAGE_NAMES}


def stage(name: str) -> ModuleType:
    """The module of the stage `name`."""
    if name not in REGISTRY:
        raise KeyError(f"unknown stage {name!r}: the stages are {list(REGISTRY)}")
    return importlib.import_module(REGISTRY[name])
