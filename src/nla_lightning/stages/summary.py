"""summary.json, typed: one section per stage that ran, the NLA it describes, where its files
are. Stages return their section; `RunSummary.read` gives the report the same objects back."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from nla_lightning.errors import NLAConfigError

SCHEMA_VERSION = 2


@dataclass
class TargetSection:
    """The toy world's pretraining (empty for a real model, which is only named)."""

    params: int | None = None
    pretrain_loss: float | None = None
    pretrain_steps: int | None = None
    corpus_tokens: int | None = None
    wall_s: float | None = None


@dataclass
class DataSection:
    rows: dict[str, int] = field(default_factory=dict)  # rows per split
    injection_scale: float | None = None  # model.injection_scale resolved (core/injection_scale)
    extraction: str | None = None  # corpus: what extraction did
    writer: dict[str, str] = field(default_factory=dict)  # corpus: the writer's counts per split


@dataclass
class AVSFTSection:
    loss: float  # held-out response loss
    loss_shuffled: float  # the same with each row fed another row's activation
    train_loss: float
    steps: int
    train_rows: int
    eval_rows: int
    examples: list[dict[str, Any]]
    wall_s: float


@dataclass
class ARSFTSection:
    fve: float  # held-out FVE of AR(explanation)
    fve_shuffled: float
    fve_mean_baseline: float
    loss: float
    train_loss: float
    steps: int
    train_rows: int
    eval_rows: int
    wall_s: float


@dataclass
class RLSection:
    fve_start: float  # held-out FVE of AR(AV(h)) before RL
    fve_shuffled_start: float
    fve: float  # ... and after
    fve_shuffled: float
    failure_rate: float
    response_length: float
    steps: int
    eval_rows: int
    curve: list[dict[str, float]]  # {"step", "fve", ...} per held-out evaluation
    checkpoints: dict[str, str]
    wall_s: float


@dataclass
class EvalSection:
    """eval.json: per condition (warm_start, rl) the round trip, attributes and fidelity."""

    model: str
    layer: int
    eval_rows: int
    fve: dict[str, Any]  # condition -> {fve, fve_shuffled, failure_rate}; mean_baseline -> x
    attributes: dict[str, Any]  # condition or "shuffled" -> scores (toy world)
    fidelity: dict[str, Any]  # condition -> {kl_nla, kl_mean, kl_shuffled, rows}
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    wall_s: float = 0.0


SECTIONS = {
    "target": TargetSection,
    "data": DataSection,
    "av_sft": AVSFTSection,
    "ar_sft": ARSFTSection,
    "rl": RLSection,
    "eval": EvalSection,
}


def section(kind: type, values: dict[str, Any], where: str) -> Any:
    """A section from its JSON object; a missing or unknown key names the file and stage."""
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(values) - known)
    try:
        if unknown:
            raise TypeError(f"unknown keys {unknown}")
        return kind(**values)
    except TypeError as err:
        raise NLAConfigError(
            f"{where} does not match {kind.__name__} ({err}): it was written by another "
            "version of nla_lightning; rerun the stage to rewrite it"
        ) from None


@dataclass
class RunSummary:
    seed: int
    from_run: str | None = None
    model: str = ""
    layer: int = -1
    d_model: int = 0
    stages: dict[str, Any] = field(default_factory=dict)  # stage name -> its section
    data: dict[str, str] = field(default_factory=dict)  # split -> Parquet file
    checkpoints: dict[str, str] = field(default_factory=dict)  # av, ar, rl/av, rl/ar -> dir
    wall_s: float = 0.0
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "summary.json") -> RunSummary:
        values = dict(values)
        values.setdefault("schema_version", 1)
        stages = {
            name: section(SECTIONS[name], body, f"{where} stages.{name}")
            for name, body in (values.pop("stages", None) or {}).items()
            if name in SECTIONS
        }
        return section(cls, {**values, "stages": stages}, where)

    @classmethod
    def read(cls, path: Path) -> RunSummary:
        return cls.from_dict(json.loads(Path(path).read_text()), str(path))


def human_summary(summary: RunSummary, out_dir: Path) -> str:
    """What a run did, in a few lines for the console."""
    stages = summary.stages
    lines = [
        "",
        f"NLA for {summary.model} at layer {summary.layer} (d_model {summary.d_model})"
        f" - {summary.wall_s:.0f} s",
    ]
    target = stages.get("target")
    if target is not None and target.pretrain_steps is not None:
        lines.append(
            f"  target   pretrained {target.pretrain_steps} steps, loss {target.pretrain_loss:.3f}"
        )
    if "av_sft" in stages:
        a = stages["av_sft"]
        lines.append(
            f"  AV SFT   held-out loss {a.loss:.3f}  (shuffled activations {a.loss_shuffled:.3f})"
        )
        for ex in a.examples[:2]:
            lines.append(f"    text: ...{ex['text'][-60:]}")
            lines.append(f"    AV  : {ex['sampled']}")
    if "ar_sft" in stages:
        r = stages["ar_sft"]
        lines.append(
            f"  AR SFT   held-out FVE {r.fve:.3f}  (shuffled {r.fve_shuffled:.3f}, "
            f"mean {r.fve_mean_baseline:.3f})"
        )
    if "rl" in stages:
        r = stages["rl"]
        lines.append(
            f"  RL       {r.steps} steps: held-out FVE of AR(AV(h)) {r.fve_start:.3f} -> "
            f"{r.fve:.3f}  (shuffled control {r.fve_shuffled_start:.3f} -> {r.fve_shuffled:.3f})"
        )
    if "eval" in stages:
        lines.extend(_eval_lines(stages["eval"]))
    lines.append(f"  outputs  {out_dir}")
    return "\n".join(lines)


def _eval_lines(report: EvalSection) -> list[str]:
    """One line per NLA of eval.json: FVE, attributes (toy world) and fidelity."""
    names = {"warm_start": "warm start", "rl": "after RL"}
    lines = [f"  eval     {report.eval_rows} held-out rows (eval.json)"]
    for condition, name in names.items():
        if condition not in report.fve:
            continue
        parts = [f"FVE {report.fve[condition]['fve']:.3f}"]
        scores = report.attributes.get(condition)
        if scores and scores["recall"] is not None:
            precision = scores["precision"]
            shown = "-" if precision is None else f"{precision:.3f}"
            parts.append(f"recall {scores['recall']:.3f} precision {shown}")
        kl = report.fidelity.get(condition)
        if kl:
            parts.append(f"KL {kl['kl_nla']:.3f} (mean {kl['kl_mean']:.3f})")
        lines.append(f"    {name:<11}" + ", ".join(parts))
    return lines
