"""The report's PNG plots, one line (or bar group) per run, drawn off-screen with Agg.

Each `plot_*` returns False, writing nothing, when no run has the data it needs, so the page
can say the plot was skipped instead of showing an empty frame.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from nla_lightning.report.runs import CONDITIONS, Run, Series, finite, number

CONDITION_NAMES = {"warm_start": "warm start", "rl": "after RL", "shuffled": "shuffled control"}
DPI = 120


def figure(width: float, height: float) -> Figure:
    """A figure on its own Agg canvas: no display needed, and pyplot's global backend (a
    notebook's, say) is left alone."""
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def colour(index: int) -> str:
    return f"C{index % 10}"


def legend_label(label: str) -> str:
    # Hydra override lists can be long; wrapped they keep the legend narrower than the plot.
    return "\n".join(textwrap.wrap(label, 60)) or label


def smooth(values: list[float]) -> list[float]:
    """A light centred moving average (about 1/20 of the run wide): noise goes, and unlike an
    exponential average it does not shift a fast early drop to later steps."""
    half = len(values) // 40
    return [
        sum(window) / len(window)
        for i in range(len(values))
        if (window := values[max(0, i - half) : i + half + 1])
    ]


def _training_line(ax, series: Series, index: int, label: str | None) -> None:
    """Raw values faint, smoothed on top (raw alone when there is too little to smooth)."""
    smoothed = smooth(series.values)
    if smoothed != series.values:
        ax.plot(series.steps, series.values, color=colour(index), alpha=0.25, linewidth=0.8)
    marker = "o" if len(smoothed) == 1 else None  # a lone point draws no line
    ax.plot(series.steps, smoothed, color=colour(index), linewidth=1.6, label=label, marker=marker)


def _clip_low(ax, values: list[float], floor: float) -> None:
    """Keep the interesting range readable: an untrained or failing run can score FVE of -50,
    which would flatten every other line. Values below `floor` are cut off, and the plot says so."""
    if values and min(values) < floor:
        top = max(max(values), floor + 0.5)
        ax.set_ylim(floor, top + 0.05 * (top - floor))
        ax.text(
            0.99,
            0.01,
            f"values below {floor:.1f} not shown",
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize="small",
            color="dimgrey",
        )


def _steps_axis(ax) -> None:
    # Steps are whole numbers; a three-step run would otherwise get ticks at 0.25, 0.5...
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")


def _run_legend(ax, runs: list[Run], indices: list[int]) -> None:
    handles = [Line2D([], [], color=colour(i), linewidth=2) for i in indices]
    ax.legend(
        handles,
        [legend_label(runs[i].label) for i in indices],
        title="run",
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        fontsize="small",
    )


def plot_fve(runs: list[Run], path: Path) -> bool:
    """FVE vs RL step: training rl/fve, held-out val/fve, and dashed baselines per run."""
    drawn = [i for i, r in enumerate(runs) if r.series("rl", "rl/fve") or r.series("rl", "val/fve")]
    if not drawn:
        return False
    fig = figure(9, 4.8)
    ax = fig.add_subplot()
    styles: dict[str, Line2D] = {}
    plotted: list[float] = []  # every y drawn, to choose the axis range
    levels: list[float] = []  # the baselines, which must stay in view
    for i in drawn:
        run = runs[i]
        ar_sft, rl = run.stage("ar_sft"), run.stage("rl")
        if train := run.series("rl", "rl/fve"):
            _training_line(ax, train, i, None)
            plotted += train.values
            styles["training rl/fve (smoothed)"] = Line2D([], [], color="grey")
        if held_out := run.series("rl", "val/fve"):
            ax.plot(held_out.steps, held_out.values, "o-", color=colour(i), markersize=5)
            plotted += held_out.values
            styles["held-out val/fve"] = Line2D([], [], color="grey", marker="o")
        if shuffled := run.series("rl", "val/fve_shuffled"):
            ax.plot(shuffled.steps, shuffled.values, "x:", color=colour(i), markersize=6)
            plotted += shuffled.values
            styles["held-out, shuffled"] = Line2D([], [], color="grey", marker="x", ls=":")
        baselines = [
            ("mean-vector baseline", finite(ar_sft and ar_sft.fve_mean_baseline), (0, (5, 3))),
            ("warm-start AR-SFT FVE", finite(ar_sft and ar_sft.fve), (0, (8, 2, 2, 2))),
        ]
        if not shuffled:  # the logged series already shows the shuffled control
            start = finite(rl and rl.fve_shuffled_start)
            baselines.append(("shuffled control", start, (0, (2, 2))))
        for name, value, style in baselines:
            if value is not None:
                ax.axhline(value, color=colour(i), linestyle=style, linewidth=1, alpha=0.8)
                styles[name] = Line2D([], [], color="grey", linestyle=style)
                levels.append(value)
    ax.set(xlabel="RL step", ylabel="FVE", title="Round-trip FVE of AR(AV(h)) during RL")
    # FVE below -1 is already far worse than the mean baseline; show down to the lowest baseline.
    _clip_low(ax, plotted + levels, min(-1.0, *levels) - 0.2)
    ax.grid(alpha=0.3)
    _steps_axis(ax)
    _run_legend(ax, runs, drawn)
    fig.legend(
        list(styles.values()),
        list(styles),
        loc="upper left",
        bbox_to_anchor=(0.0, -0.02),
        ncol=3,
        fontsize="small",
    )
    _save(fig, path)
    return True


def _panels(runs: list[Run], path: Path, stage: str, panels: list[tuple[str, str]]) -> bool:
    """One panel per (column, ylabel) over step, a line per run that logged it."""
    drawn = [i for i, r in enumerate(runs) if any(r.series(stage, c) for c, _ in panels)]
    if not drawn:
        return False
    fig = figure(9, 2.8 * len(panels))
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (column, ylabel) in zip(axes, panels, strict=True):
        for i in drawn:
            if series := runs[i].series(stage, column):
                _training_line(ax, series, i, None)
        ax.set(ylabel=ylabel)
        if "rate" in column or column in SHARES:  # the whole 0..1 range: 0.96 is not 0
            ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
        _steps_axis(ax)
    axes[-1].set_xlabel(f"{stage.replace('_', '-').upper()} step")
    _run_legend(axes[0], runs, drawn)
    _save(fig, path)
    return True


# Held-out scores that are shares of a whole, drawn on 0..1 like the rates.
SHARES = ("val/recall", "val/precision", "val/confabulation")


def plot_attribute_curve(runs: list[Run], path: Path) -> bool:
    return _panels(
        runs,
        path,
        "rl",
        [
            ("val/recall", "attribute recall"),
            ("val/precision", "precision"),
            ("val/confabulation", "confabulation"),
        ],
    )


def plot_reward_kl(runs: list[Run], path: Path) -> bool:
    return _panels(runs, path, "rl", [("rl/reward", "reward"), ("rl/kl", "KL to reference")])


def plot_response_length(runs: list[Run], path: Path) -> bool:
    return _panels(
        runs,
        path,
        "rl",
        [("rl/response_length", "response length (tokens)"), ("rl/failure_rate", "failure rate")],
    )


def plot_sft_loss(runs: list[Run], path: Path) -> bool:
    """Warm-start losses: AV-SFT and AR-SFT train loss (line) and held-out loss (markers)."""
    stages = [
        s
        for s in ("av_sft", "ar_sft")
        if any(r.series(s, "train/loss") or r.series(s, "val/loss") for r in runs)
    ]
    if not stages:
        return False
    fig = figure(9, 2.8 * len(stages))
    axes = fig.subplots(len(stages), 1, squeeze=False)[:, 0]
    drawn: set[int] = set()
    for ax, stage in zip(axes, stages, strict=True):
        for i, run in enumerate(runs):
            if train := run.series(stage, "train/loss"):
                _training_line(ax, train, i, None)
                drawn.add(i)
            if val := run.series(stage, "val/loss"):
                ax.plot(val.steps, val.values, "o", color=colour(i), markersize=5)
                drawn.add(i)
        name = stage.replace("_", "-").upper()
        ax.set(ylabel=f"{name} loss", xlabel=f"{name} step")
        ax.grid(alpha=0.3)
        _steps_axis(ax)
    _run_legend(axes[0], runs, sorted(drawn))
    fig.tight_layout()
    _save(fig, path)
    return True


def attribute_recall(run: Run) -> dict[str, dict[str, float | None]] | None:
    """condition -> {attribute..., "overall"} -> recall, from eval.json; None without it."""
    attributes = run.evaluation.attributes if run.evaluation is not None else None
    if not attributes:
        return None
    table: dict[str, dict[str, float | None]] = {}
    for condition in CONDITIONS:
        scores = attributes.get(condition)
        if not isinstance(scores, dict):
            continue
        per = scores.get("per_attribute") if isinstance(scores.get("per_attribute"), dict) else {}
        table[condition] = {name: number(per, name, "recall") for name in per}
        table[condition]["overall"] = number(scores, "recall")
    has_numbers = any(v is not None for row in table.values() for v in row.values())
    return table if has_numbers else None


def plot_attribute_recall(runs: list[Run], path: Path) -> bool:
    """Grouped bars (attribute x condition), one small panel per run that has attributes."""
    panels = [(run, t) for run in runs if (t := attribute_recall(run)) is not None]
    if not panels:
        return False
    fig = figure(9, 3.2 * len(panels))
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, (run, table) in zip(axes, panels, strict=True):
        names = [n for row in table.values() for n in row if n != "overall"]
        names = [*dict.fromkeys(names), "overall"]  # attribute order as in eval.json
        width = 0.8 / len(table)
        for k, (condition, row) in enumerate(table.items()):
            xs = [j + (k - (len(table) - 1) / 2) * width for j in range(len(names))]
            # NaN draws no bar: a missing score must not look like a recall of 0.
            heights = [v if (v := row.get(n)) is not None else float("nan") for n in names]
            ax.bar(
                xs,
                heights,
                width,
                label=CONDITION_NAMES.get(condition, condition),
                color=f"C{CONDITIONS.index(condition)}",
            )
        ax.set_xticks(range(len(names)), names)
        ax.set(ylim=(0, 1.05), ylabel="recall")
        ax.grid(axis="y", alpha=0.3)
        if len(runs) > 1:  # say whose bars these are
            ax.set_title(legend_label(run.label), fontsize="small")
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small")
    fig.suptitle("Attribute recall of the explanations (toy world)")
    fig.tight_layout()
    _save(fig, path)
    return True


# filename -> (title on the page, drawing function, what is missing when it is skipped)
PLOTS = {
    "fve.png": ("Round-trip FVE during RL", plot_fve, "no run has RL logs (logs/rl/metrics.csv)"),
    "reward_kl.png": ("Reward and KL during RL", plot_reward_kl, "no run has RL logs"),
    "response_length.png": (
        "Explanation length and failure rate during RL",
        plot_response_length,
        "no run has RL logs",
    ),
    "attribute_recall.png": (
        "Attribute recall: warm start, after RL, shuffled control",
        plot_attribute_recall,
        "no run has attribute scores in eval.json (toy world, stage=eval)",
    ),
    "attribute_curve.png": (
        "Held-out attribute recall, precision and confabulation during RL",
        plot_attribute_curve,
        "no run logged attribute scores during RL (toy world)",
    ),
    "sft_loss.png": (
        "Warm-start (SFT) losses",
        plot_sft_loss,
        "no run has SFT logs (logs/av_sft, logs/ar_sft)",
    ),
}
