"""Tables of sampled explanations with their scores, through whichever Lightning logger runs."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

COLUMNS = ("step", "reward", "mse", "explanation")


def log_examples(logger: Any, rows: list[dict[str, Any]], step: int) -> None:
    """TensorBoard: a Markdown table as text; W&B: a table; CSV: rows appended to
    examples.csv beside metrics.csv; no logger: nothing."""
    if logger is None or not rows:
        return
    name = type(logger).__name__
    if name == "TensorBoardLogger":
        lines = ["| reward | mse | explanation |", "|---|---|---|"]
        lines += [f"| {r['reward']:.3f} | {r['mse']:.3f} | {r['explanation']} |" for r in rows]
        logger.experiment.add_text("rl/examples", "\n".join(lines), step)
    elif name == "WandbLogger":
        logger.log_table(
            "rl/examples", columns=list(COLUMNS), data=[[r[c] for c in COLUMNS] for r in rows]
        )
    elif getattr(logger, "log_dir", None):
        path = Path(logger.log_dir) / "examples.csv"
        new = not path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            if new:
                writer.writeheader()
            writer.writerows({c: r[c] for c in COLUMNS} for r in rows)
