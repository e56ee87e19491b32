"""Read training run directories into plain data: summary, optional eval.json, metric logs.

Nothing here draws or formats; the report CLI, notebooks and the README can all share it.
A run directory is whatever `python train.py` wrote: summary.json is the one required file,
everything else (logs/<stage>/metrics.csv, eval.json, .hydra/overrides.yaml) is optional so a
run that stopped early, skipped RL or was never evaluated still reports what it has.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nla_lightning.errors import NLAConfigError
from nla_lightning.stages.summary import EvalSection, RunSummary, section

STAGES = ("target", "av_sft", "ar_sft", "rl")
# eval.json's three conditions of the attribute check, in the order the page shows them.
CONDITIONS = ("warm_start", "rl", "shuffled")


@dataclass
class Series:
    """One logged column: steps ascending, one value per step."""

    steps: list[int]
    values: list[float]


@dataclass
class Run:
    """Everything the report needs from one run directory (missing parts are empty)."""

    path: Path
    label: str
    summary: RunSummary
    # The run's evaluation (see `load_run` for which file); None if it was never evaluated.
    evaluation: EvalSection | None
    logs: dict[str, dict[str, Series]]
    overrides: list[str]
    # Problems with optional files, said on the page instead of failing the whole report.
    notes: list[str] = field(default_factory=list)

    def series(self, stage: str, column: str) -> Series | None:
        return self.logs.get(stage, {}).get(column)

    def stage(self, name: str) -> Any:
        """The typed section of a stage that ran (see stages/summary.py); None if it did not."""
        return self.summary.stages.get(name)


@dataclass
class Results:
    """The table numbers of one run (None where missing) and the file each FVE came from."""

    values: dict[str, float | int | None]
    sources: dict[str, str]
    per_attribute: dict[str, dict[str, dict[str, float | None]]]


def number(tree: Any, *keys: str) -> float | None:
    """tree[k1][k2]... as a float; None when absent, not a number or not finite (NaN in JSON)."""
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    if isinstance(tree, bool) or not isinstance(tree, (int, float)):
        return None
    return float(tree) if math.isfinite(tree) else None


def read_metrics(path: Path) -> dict[str, Series]:
    """A Lightning CSVLogger file as column -> Series.

    CSVLogger writes the union of all logged columns, so most cells are empty; those are dropped
    per column. A step logged twice (a resumed run) keeps its last value."""
    by_column: dict[str, dict[int, float]] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                step = int(float(row.get("step") or ""))
            except ValueError:
                continue
            for column, cell in row.items():
                if column in (None, "step", "epoch") or not cell:
                    continue
                try:
                    value = float(cell)
                except ValueError:
                    continue
                if math.isfinite(value):
                    by_column.setdefault(column, {})[step] = value
    return {
        column: Series(sorted(points), [points[s] for s in sorted(points)])
        for column, points in by_column.items()
    }


def _metrics_file(logs: Path, stage: str) -> Path | None:
    # CSVLogger writes logs/<stage>/metrics.csv here; with its default versioning it would be
    # logs/<stage>/version_N/metrics.csv, of which the newest is the one that matters.
    direct = logs / stage / "metrics.csv"
    if direct.is_file():
        return direct

    def version(file: Path) -> int:
        suffix = file.parent.name.removeprefix("version_")
        return int(suffix) if suffix.isdigit() else -1

    versions = sorted((logs / stage).glob("version_*/metrics.csv"), key=version)
    return versions[-1] if versions else None


def _read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError("the top level is not a JSON object")
    return data


def _overrides(path: Path, notes: list[str]) -> list[str]:
    file = path / ".hydra" / "overrides.yaml"
    if not file.is_file():
        return []
    try:
        data = yaml.safe_load(file.read_text()) or []
    except yaml.YAMLError as err:
        notes.append(f".hydra/overrides.yaml could not be read ({err}); labelled by directory")
        return []
    return [str(item) for item in data] if isinstance(data, list) else []


def load_run(path: str | Path, label: str | None = None) -> Run:
    """One run directory; NLAConfigError (saying what to pass instead) if it is not one."""
    path = Path(path)
    summary_file = path / "summary.json"
    if not path.is_dir():
        raise NLAConfigError(
            f"{path} is not a directory: pass the output directory of a training run "
            "(the folder `python train.py` printed after 'outputs', holding summary.json)"
        )
    if not summary_file.is_file():
        runs = sorted(p.parent for p in path.glob("*/summary.json"))
        hint = (
            f"; it holds runs, pass those instead: {' '.join(str(r) for r in runs[:8])}"
            if runs
            else "; a run writes it when train.py finishes, so an unfinished run has none yet"
        )
        raise NLAConfigError(
            f"{path} is not a training run directory: expected {summary_file} (written by "
            f"`python train.py` in its output directory, e.g. outputs/<date>/<time>){hint}"
        )
    try:
        summary = RunSummary.read(summary_file)
    except (ValueError, OSError) as err:
        raise NLAConfigError(
            f"{summary_file} could not be read as JSON ({err}): rerun the run, or restore the "
            "file, then report again"
        ) from err

    notes: list[str] = []
    evaluation = _evaluation(path, summary, notes)
    logs: dict[str, dict[str, Series]] = {}
    for stage in STAGES:
        file = _metrics_file(path / "logs", stage)
        if file is None:
            continue
        try:
            logs[stage] = read_metrics(file)
        except (OSError, csv.Error, UnicodeDecodeError) as err:
            where = file.relative_to(path)
            notes.append(f"{where} could not be read ({err}); its plots are skipped")
    overrides = _overrides(path, notes)
    return Run(
        path=path,
        label=label or " ".join(overrides) or path.resolve().name,
        summary=summary,
        evaluation=evaluation,
        logs=logs,
        overrides=overrides,
        notes=notes,
    )


def _evaluation(path: Path, summary: RunSummary, notes: list[str]) -> EvalSection | None:
    """The one rule: eval.json when the run directory has it, else summary.json's eval section.

    Both hold the same report when `stage=eval` ran in the run itself; eval.json is the newer
    when another run evaluated this one (`stage=eval from_run=<this run>` writes it here)."""
    file = path / "eval.json"
    if not file.is_file():
        return summary.stages.get("eval")
    try:
        return section(EvalSection, _read_json(file), str(file))
    except (ValueError, OSError, NLAConfigError) as err:
        notes.append(f"eval.json could not be read ({err}); rerun stage=eval to recreate it")
        return summary.stages.get("eval")


def load_runs(paths: list[str | Path]) -> list[Run]:
    """Several runs, each labelled by its Hydra overrides (or directory name), labels unique."""
    runs = [load_run(p) for p in paths]
    # The same overrides twice (e.g. two default runs): their paths tell them apart, and a
    # number does when the same path was given twice.
    for fix in (lambda run, n: f"{run.label} ({run.path})", lambda run, n: f"{run.label} #{n}"):
        counts: dict[str, int] = {}
        for run in runs:
            counts[run.label] = counts.get(run.label, 0) + 1
        seen: dict[str, int] = {}
        for run in runs:
            if counts[run.label] > 1:
                seen[run.label] = seen.get(run.label, 0) + 1
                run.label = fix(run, seen[run.label])
    return runs


def finite(value: Any) -> float | None:
    return number({"v": value}, "v")


def _round_trip(run: Run) -> tuple[dict[str, float | None], str]:
    """The round-trip FVE figures and their file: the evaluation's when the run has one (its own
    held-out rows), else those RL and AR-SFT measured; never a mix, whose rows differ."""
    ev = run.evaluation
    if ev is not None and ev.fve:
        return {
            "fve_warm_start": number(ev.fve, "warm_start", "fve"),
            "fve_rl": number(ev.fve, "rl", "fve"),
            "fve_mean_baseline": number(ev.fve, "mean_baseline"),
            "fve_shuffled_warm_start": number(ev.fve, "warm_start", "fve_shuffled"),
            "fve_shuffled_rl": number(ev.fve, "rl", "fve_shuffled"),
        }, "eval.json"
    rl, ar = run.stage("rl"), run.stage("ar_sft")
    return {
        "fve_warm_start": finite(rl and rl.fve_start),
        "fve_rl": finite(rl and rl.fve),
        "fve_mean_baseline": finite(ar and ar.fve_mean_baseline),
        "fve_shuffled_warm_start": finite(rl and rl.fve_shuffled_start),
        "fve_shuffled_rl": finite(rl and rl.fve_shuffled),
    }, "summary.json"


def results(run: Run) -> Results:
    """The numbers the report tables show for one run; `sources` names each FVE's file.

    Round trip: see `_round_trip`. AR-SFT FVE is its own measurement, always summary.json's."""
    values: dict[str, float | int | None] = {}
    round_trip, source = _round_trip(run)
    ar = run.stage("ar_sft")
    values |= round_trip
    values["fve_ar_sft"] = finite(ar and ar.fve)
    values["fve_shuffled_ar_sft"] = finite(ar and ar.fve_shuffled)
    sources = {k: source for k, v in round_trip.items() if v is not None}
    for key in ("fve_ar_sft", "fve_shuffled_ar_sft"):
        if values[key] is not None:
            sources[key] = "summary.json"

    ev = run.evaluation
    attributes = ev.attributes if ev is not None else {}
    for metric in ("recall", "precision", "confabulation"):
        for condition in CONDITIONS:
            values[f"{metric}_{condition}"] = number(attributes, condition, metric)
    fidelity = ev.fidelity if ev is not None else {}
    for checkpoint in ("warm_start", "rl"):
        for kind in ("nla", "mean", "shuffled"):
            values[f"kl_{kind}_{checkpoint}"] = number(fidelity, checkpoint, f"kl_{kind}")

    for stage in ("av_sft", "ar_sft", "rl"):
        values[f"steps_{stage}"] = getattr(run.stage(stage), "steps", None)
    for stage in STAGES:
        values[f"wall_s_{stage}"] = finite(getattr(run.stage(stage), "wall_s", None))
    values["wall_s_eval"] = finite(ev.wall_s) if ev is not None else None
    values["wall_s"] = finite(run.summary.wall_s)

    per_attribute = {
        condition: {
            name: {m: number(scores, m) for m in ("recall", "precision")}
            for name, scores in attributes[condition].get("per_attribute", {}).items()
        }
        for condition in CONDITIONS
        if isinstance(attributes.get(condition), dict)
        and isinstance(attributes[condition].get("per_attribute"), dict)
    }
    return Results(values, sources, per_attribute)
