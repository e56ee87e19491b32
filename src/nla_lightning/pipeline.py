"""`run(cfg)`: the whole job a config describes, from target to evaluated NLA and summary.json.

Hydra stops here: the config (plain dicts) is validated into typed settings before anything
loads, every stage's inputs are checked, then the stages run in the configured order."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import pyarrow.parquet as pq

from nla_lightning.core.console import quiet_libraries
from nla_lightning.errors import NLAConfigError
from nla_lightning.settings import RunSettings, validate
from nla_lightning.stages import stage
from nla_lightning.stages.context import StageContext
from nla_lightning.stages.run_dir import CONDITIONS, RunDir
from nla_lightning.stages.run_state import RunState
from nla_lightning.stages.summary import SECTIONS, RunSummary, human_summary, section
from nla_lightning.training.launched import pipeline_ranks


def run(cfg: dict[str, Any], command: str | None = None) -> dict[str, Any]:
    """Run the configured stages; writes every output and summary.json under
    cfg.paths.output_dir and returns the summary as a dict.

    Started again on the same directory with the same settings, a run skips the stages an
    earlier start finished and continues the one it was in (stages/run_state.py). `command`:
    the command line that does that, for messages and <run>/command.txt."""
    started = time.time()
    settings = validate(cfg)
    with pipeline_ranks(settings.trainer):  # under torchrun / srun: this is rank 0
        return _run(cfg, settings, command, started)


def _run(cfg: dict[str, Any], settings: RunSettings, command: str | None, started: float) -> dict:
    quiet_libraries(settings.verbose)
    ctx = StageContext(
        settings=settings,
        run=RunDir(settings.output_dir),
        source=RunDir(settings.from_run) if settings.from_run else None,
        command=command,
    )
    check_inputs(settings, ctx)
    check_writable(ctx.run.root)
    check_split_sizes(settings, ctx)  # data from from_run or an earlier start
    state = RunState(ctx.run)
    state.start(cfg, command)
    summary = RunSummary(seed=settings.seed, from_run=_str(settings.from_run))
    for name in settings.stages:
        result = state.finished(name)
        if result is None:
            state.begin(name)
            # Each stage from the same seed: its result does not depend on which stages ran
            # before it in this process (a continued or split run equals a whole one).
            L.seed_everything(settings.seed, workers=True, verbose=False)
            result = stage(name).run(ctx)
            state.finish(name, result)
        else:
            print(f"{name}: finished by an earlier start of this run (kept)", flush=True)
        summary.stages[name] = section(SECTIONS[name], result, f"the {name} stage's summary")
        if name == "data":
            check_split_sizes(settings, ctx)  # before any training stage loads a model
    if ctx.find("data/eval.parquet") or ctx.find("checkpoints/av"):
        meta = ctx.load_meta()
        summary.model, summary.layer, summary.d_model = meta.base_model, meta.layer, meta.d_model
    else:  # a run of the target alone: no NLA metadata yet
        summary.model, summary.layer = settings.model["name"], settings.layer
    summary.data = {name: str(path) for name, path in _splits(ctx).items()}
    summary.checkpoints = {
        name: str(path)
        for condition, pair in ctx.run.pairs().items()
        for name, path in zip(CONDITIONS[condition], pair, strict=True)
    }
    summary.wall_s = round(time.time() - started, 1)
    summary.write(ctx.run.summary_json)
    print(human_summary(summary, ctx.run.root))
    return summary.to_dict()


def check_inputs(settings: RunSettings, ctx: StageContext) -> None:
    """Fail before any work when a stage would miss an input: each must be made by an earlier
    stage of this run, or already be in this run's directory or in from_run."""
    made: set[str] = set()
    for name in settings.stages:
        module = stage(name)
        for need in module.needs(settings):
            if not any(
                all(path in made or ctx.find(path) is not None for path in paths)
                for paths in need.alternatives
            ):
                wanted = " or ".join(", ".join(paths) for paths in need.alternatives)
                where = "from_run" if ctx.source else "this run"
                raise NLAConfigError(
                    f"stage {name} needs {need.what} ({wanted}), which no earlier stage of "
                    f"stage.run={settings.stages} makes and {where} does not hold: add "
                    f"{need.made_by} before {name}, or pass from_run=<a run dir that holds it>"
                )
        made.update(module.makes(settings))


def check_split_sizes(settings: RunSettings, ctx: StageContext) -> None:
    """Each training stage's split holds at least one batch: with fewer rows every step would
    see the same few rows again (and a typo in a fraction would go unnoticed)."""
    batches = {
        "av_sft": (settings.sft.av.batch_size, "sft.av.batch_size"),
        "ar_sft": (settings.sft.ar.batch_size, "sft.ar.batch_size"),
        "rl": (settings.rl.batch_size, "rl.batch_size"),
    }
    for name in settings.stages:
        if name not in batches or (path := ctx.find(f"data/{name}.parquet")) is None:
            continue
        rows = pq.read_metadata(path).num_rows
        size, key = batches[name]
        if rows < size:
            raise NLAConfigError(
                f"{path} has {rows} rows, fewer than one batch ({key}={size}): lower {key} to "
                f"at most {rows}, or give the {name} split more data (data.n_docs, "
                "data.fractions)"
            )


def check_writable(directory: Path) -> None:
    """Make the output directory and write a file there, before any work: a read-only or
    missing mount fails here, in one line, not after the first stage."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-check-"):
            pass
    except OSError as err:
        raise NLAConfigError(
            f"the output directory {directory} cannot be written ({err.strerror}): choose "
            "another with hydra.run.dir=... (or paths.output_dir), or fix its permissions"
        ) from err


def _splits(ctx: StageContext) -> dict:
    source = ctx.source.splits() if ctx.source else {}
    return {**source, **ctx.run.splits()}


def _str(value: Any) -> str | None:
    return None if value is None else str(value)
