"""What every stage receives: the settings, this run's directory, the run it continues, and
what earlier stages of this process already hold (the target, the NLA's metadata)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nla_lightning.core.meta import NLAMeta
from nla_lightning.core.target import Target
from nla_lightning.errors import NLAConfigError
from nla_lightning.settings import RunSettings
from nla_lightning.stages.run_dir import RunDir

# The split whose activations `model.injection_scale=auto` is taken from: the first present.
SCALE_SPLITS = ("av_sft", "ar_sft", "rl", "eval")


@dataclass(frozen=True)
class Need:
    """An input of a stage: one of `alternatives` (each a list of run-relative paths) must
    exist in this run (or be made by an earlier stage of it) or in `from_run`."""

    what: str
    alternatives: tuple[tuple[str, ...], ...]
    made_by: str  # the stages that make it, for the error message

    @classmethod
    def all_of(cls, what: str, made_by: str, *paths: str) -> Need:
        return cls(what, (tuple(paths),), made_by)


def warm_start_needs(settings: RunSettings, what: str, split: str) -> list[Need]:
    """A warm start reads its split, the held-out split and (toy world) the run's target."""
    data = Need.all_of(what, "data", f"data/{split}.parquet", "data/eval.parquet")
    if settings.model["source"] == "hub":
        return [data]
    return [Need.all_of("the toy target", "target", "target"), data]


@dataclass
class StageContext:
    settings: RunSettings
    run: RunDir
    source: RunDir | None = None  # from_run
    target: Target | None = None
    meta: NLAMeta | None = None
    documents: list | None = None
    logs: dict[str, Any] = field(default_factory=dict)

    command: str | None = None  # the command that continues this run (train.py's)

    def continue_hint(self) -> str:
        """How to continue this run after a stop."""
        if self.command:
            return f"continue with: {self.command}"
        return f"continue by running it again with the same settings and {self.run.root}"

    def graceful_stop(self, stage: str, on_stop: Any = None, checkpoint: Any = None) -> Any:
        """Ctrl-C during `stage`'s fit: stop after the step, `on_stop` (a checkpoint at
        `checkpoint`), then say how to go on."""
        from nla_lightning.training.interrupt import GracefulStop

        kept = f"Its steps so far are in {checkpoint}; " if checkpoint else ""
        return GracefulStop(stage, kept + self.continue_hint(), on_stop)

    def find(self, relative: str) -> Path | None:
        """A run-relative path in this run, else in from_run; None where neither has it."""
        for run in (self.run, self.source):
            if run is not None and (run.root / relative).exists():
                return run.root / relative
        return None

    def require(self, relative: str) -> Path:
        path = self.find(relative)
        if path is None:
            where = f"{self.run.root}" + (f" or {self.source.root}" if self.source else "")
            raise NLAConfigError(f"{relative} is in neither {where}")
        return path

    def split(self, name: str) -> Path:
        return self.require(f"data/{name}.parquet")

    def load_target(self) -> Target:
        """The target an earlier stage prepared, or: a real one from the config; the toy
        world's from this run or from_run."""
        if self.target is None:
            model = self.settings.model
            if model["source"] == "hub":
                from nla_lightning.core.target import load_hub_target

                self.target = load_hub_target(model, self.settings.cache_dir)
            else:
                from nla_lightning.core.target import load_local_target

                self.target = load_local_target(model["name"], self.require("target"))
        return self.target

    def load_meta(self) -> NLAMeta:
        """The NLA's metadata: from the data stage of this process, else a warm-start AV's
        sidecar, else the eval split's dataset sidecar (which, in the release's format, has no
        injection scale: it is derived again by `injection_scale`)."""
        if self.meta is None:
            av = self.find("checkpoints/av") or self.find("checkpoints/rl/av")
            if av is not None:
                self.meta = NLAMeta.load(av)
            else:
                from nla_lightning.data.store import sidecar_path

                meta = NLAMeta.load(sidecar_path(self.split("eval")))
                if meta.injection_scale is None:
                    meta = dataclasses.replace(meta, injection_scale=self.injection_scale(meta))
                self.meta = meta
        return self.meta

    def injection_scale(self, meta: NLAMeta) -> float:
        """model.injection_scale resolved (core/injection_scale.py): a number as it is, `auto`
        from the activations of the run's first training split, `embedding` from the target."""
        from nla_lightning.core import injection_scale

        setting = self.settings.model["injection_scale"]
        if setting == "auto":
            from nla_lightning.data.store import read_activations

            split = next(
                (path for name in SCALE_SPLITS if (path := self.find(f"data/{name}.parquet"))),
                None,
            )
            if split is None:
                raise NLAConfigError(
                    "model.injection_scale=auto is taken from the extracted activations, and "
                    "this run has no data/*.parquet: run the data stage or pass from_run"
                )
            table = read_activations(split, expect=meta)
            return injection_scale.from_activations(table.activations)
        model = None
        if setting == "embedding":
            from nla_lightning.core.models import load_causal_lm

            model = load_causal_lm(self.load_target().path, dtype=self.settings.model["dtype"])
        return injection_scale.known_before_extraction(setting, model)
