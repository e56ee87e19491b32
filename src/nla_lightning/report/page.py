"""report.md (tables, plots, metric definitions) and report.json from loaded runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nla_lightning.report.plots import PLOTS
from nla_lightning.report.runs import Results, Run, results

MISSING = "—"

# (heading, [(results key, column header)]); a table no run has numbers for is left out.
TABLES: list[tuple[str, list[tuple[str, str]]]] = [
    (
        "Reconstruction: FVE (higher is better)",
        [
            ("fve_warm_start", "round trip, warm start"),
            ("fve_rl", "round trip, after RL"),
            ("fve_ar_sft", "AR-SFT"),
            ("fve_mean_baseline", "mean baseline"),
            ("fve_shuffled_warm_start", "shuffled, warm start"),
            ("fve_shuffled_rl", "shuffled, after RL"),
            ("fve_shuffled_ar_sft", "shuffled, AR-SFT"),
        ],
    ),
    (
        "Attributes named by the explanations (toy world)",
        [
            (f"{metric}_{condition}", f"{metric} {name}")
            for metric in ("recall", "precision", "confabulation")
            for condition, name in (("warm_start", "WS"), ("rl", "RL"), ("shuffled", "shuf."))
        ],
    ),
    (
        "Fidelity: KL(clean ‖ spliced) (lower is better)",
        [
            (f"kl_{kind}_{checkpoint}", f"{kind}, {name}")
            for checkpoint, name in (("warm_start", "warm start"), ("rl", "after RL"))
            for kind in ("nla", "mean", "shuffled")
        ],
    ),
    (
        "Training cost",
        [
            ("steps_av_sft", "AV-SFT steps"),
            ("steps_ar_sft", "AR-SFT steps"),
            ("steps_rl", "RL steps"),
            ("wall_s_target", "target s"),
            ("wall_s_av_sft", "AV-SFT s"),
            ("wall_s_ar_sft", "AR-SFT s"),
            ("wall_s_rl", "RL s"),
            ("wall_s_eval", "eval s"),
            ("wall_s", "run s"),
        ],
    ),
]

DEFINITIONS = [
    "**FVE** (fraction of variance explained): 1 − Σ‖ĥ − h‖² / Σ‖h − mean(h)‖² over held-out "
    "activations h; 1 is a perfect reconstruction, 0 is no better than predicting the mean.",
    "**round trip, warm start / after RL**: FVE of AR(AV(h)), the AR reading the AV's "
    "explanation, with the SFT checkpoints / the RL checkpoints.",
    "**AR-SFT**: FVE of the warm-start AR reading the target explanations the AV was taught "
    "(not AV samples).",
    "**mean baseline**: FVE of always predicting the mean training activation, the score of an "
    "explanation that carries no information.",
    "**shuffled**: the same measurement with each activation given another row's explanation; "
    "it should stay near or below the mean baseline if explanations are specific.",
    "**recall**: attributes of the text (who, colour, object, where, action) whose true value "
    "the explanation names / attributes the text has.",
    "**precision**: attribute values named that are true / attribute values named.",
    "**confabulation**: values named for attributes the text does not have / values named.",
    "**WS / RL / shuf.**: explanations by the warm-start AV, by the AV after RL, and a shuffled "
    "control (the latest AV explaining another row's activation, scored against this text).",
    "**KL nla / mean / shuffled**: mean KL(clean ‖ spliced) of the target's next-token "
    "distribution when the activation is replaced by AR(AV(h)) / the mean activation / another "
    "position's reconstruction; lower is more faithful.",
    "**steps / s**: optimiser steps and wall-clock seconds of each stage and of the whole run.",
    "**plots**: training `rl/fve` is measured on each RL batch (raw faint, smoothed solid); "
    "`val/fve` on held-out rows every few steps (step 0 is before RL).",
]


def fmt(key: str, value: float | int | None) -> str:
    """3 decimals for metrics; whole steps; seconds to 0.1 s; a dash for missing."""
    if value is None:
        return MISSING
    if key.startswith("steps_"):
        return f"{value:.0f}"
    if key.startswith("wall_s"):
        return f"{value:.1f}"
    return f"{value:.3f}"


def cell(text: object) -> str:
    # A run label is free text (Hydra overrides): keep it from breaking the table.
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]


def _fve_source(res: Results) -> str:
    used = sorted(set(res.sources.values()))
    return " + ".join(used) or MISSING


def markdown(runs: list[Run], numbers: list[Results], plots: dict[str, bool]) -> str:
    """The whole page; images by file name, so it renders from its own directory."""
    lines = ["# NLA training report", ""]
    lines += table(
        ["run", "directory", "model", "layer", "d_model", "seed"],
        [
            [r.label, f"`{r.path}`"]
            + [str(getattr(r.summary, k)) for k in ("model", "layer", "d_model", "seed")]
            for r in runs
        ],
    )
    for heading, columns in TABLES:
        lines += ["", f"## {heading}", ""]
        if all(res.values.get(key) is None for res in numbers for key, _ in columns):
            lines.append(f"_No run has these numbers ({MISSING} everywhere)._")
            continue
        header = ["run"] + [name for _, name in columns]
        rows = [
            [run.label] + [fmt(key, res.values.get(key)) for key, _ in columns]
            for run, res in zip(runs, numbers, strict=True)
        ]
        if heading.startswith("Reconstruction"):
            header.append("from")
            for row, res in zip(rows, numbers, strict=True):
                row.append(_fve_source(res))
        lines += table(header, rows)

    lines += ["", "## Plots"]
    for name, (title, _, missing) in PLOTS.items():
        lines += ["", f"### {title}", ""]
        lines.append(f"![{title}]({name})" if plots.get(name) else f"_Skipped: {missing}._")

    notes = [f"- {cell(run.label)}: {note}" for run in runs for note in run.notes]
    if notes:
        lines += ["", "## Notes", "", *notes]
    lines += ["", "## Metrics", "", *[f"- {d}" for d in DEFINITIONS]]
    return "\n".join(lines) + "\n"


def report_data(runs: list[Run], numbers: list[Results], plots: dict[str, bool]) -> dict:
    """report.json: the table numbers per run (null for missing) and which plots exist."""
    entries: list[dict[str, Any]] = []
    for run, res in zip(runs, numbers, strict=True):
        entries.append(
            {
                "label": run.label,
                "path": str(run.path),
                "overrides": run.overrides,
                **{k: getattr(run.summary, k) for k in ("model", "layer", "d_model", "seed")},
                "values": res.values,
                "fve_sources": res.sources,
                "per_attribute": res.per_attribute,
                "notes": run.notes,
            }
        )
    return {"runs": entries, "plots": plots}


def write_report(runs: list[Run], out: Path) -> dict[str, bool]:
    """Plots, report.md and report.json into out; returns which plots were drawn."""
    out.mkdir(parents=True, exist_ok=True)
    plots = {}
    for name, (_, draw, _) in PLOTS.items():
        plots[name] = draw(runs, out / name)
        if not plots[name]:
            # A stale image of an earlier report would contradict the "skipped" note.
            (out / name).unlink(missing_ok=True)
    numbers = [results(run) for run in runs]
    (out / "report.md").write_text(markdown(runs, numbers, plots))
    (out / "report.json").write_text(json.dumps(report_data(runs, numbers, plots), indent=2))
    return plots
