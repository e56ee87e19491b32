"""Whole-pipeline wall time: `python train.py` in a subprocess, then its summary.json per stage.

Usage: python benchmarks/pipeline.py [--quick] [--output-dir DIR] [--device cpu|cuda]
       [--threads N] [--json PATH] [-- HYDRA_OVERRIDES...]
Runs the default config (toy world on the CPU; `--device cuda` adds trainer=gpu) with the run
directory in a temporary directory (kept only with --output-dir). Hydra overrides after `--` are
passed on, e.g. `-- rl.steps=50`. `--quick` shrinks every stage to a smoke test.
The table gives each stage's wall time from summary.json; "data and other" is the rest of the
run's own total (toy data extraction and setup), and "process" adds interpreter and import
start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import REPO, add_common_args, markdown_table, setup, write_json

# Tiny sizes (conf/debug/smoke.yaml): every stage runs, in seconds rather than minutes.
QUICK_RUN = ["debug=smoke"]


def run_training(out_dir: Path, overrides: list[str], threads: int | None) -> tuple[float, str]:
    """Run train.py into `out_dir`; returns (wall seconds, combined output)."""
    command = [
        sys.executable,
        str(REPO / "train.py"),
        f"paths.output_dir={out_dir}",
        f"hydra.run.dir={out_dir}",
        "trainer.enable_progress_bar=false",
        *overrides,
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stdout[-4000:], file=sys.stderr)
        raise SystemExit(f"train.py failed with exit status {done.returncode}: {command}")
    return wall, done.stdout


def stage_rows(summary: dict[str, Any], process_s: float) -> list[dict[str, Any]]:
    total = float(summary["wall_s"])
    rows = [
        {"stage": name, "wall_s": float(stage["wall_s"])}
        for name, stage in summary["stages"].items()
        if isinstance(stage, dict) and "wall_s" in stage
    ]
    rows.append(
        {"stage": "data and other", "wall_s": max(0.0, total - sum(r["wall_s"] for r in rows))}
    )
    for row in rows:
        row["share"] = row["wall_s"] / total if total > 0 else 0.0
    rows.append({"stage": "total (summary.json)", "wall_s": total, "share": 1.0})
    rows.append({"stage": "process (with start-up)", "wall_s": process_s, "share": None})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output-dir", type=Path, default=None, help="keep the run here")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (after --)")
    add_common_args(parser)
    args = parser.parse_args()
    info = setup(args)
    overrides = list(QUICK_RUN if args.quick else [])
    if args.device.startswith("cuda") and not any(o.startswith("trainer=") for o in args.overrides):
        overrides.append("trainer=gpu")
    overrides += args.overrides
    with tempfile.TemporaryDirectory(prefix="nla-bench-run-") as scratch:
        out_dir = (args.output_dir or Path(scratch) / "run").resolve()
        print(f"python train.py {' '.join(overrides) or '(defaults)'}\nrun directory {out_dir}\n")
        process_s, _ = run_training(out_dir, overrides, args.threads)
        summary = json.loads((out_dir / "summary.json").read_text())
    rows = stage_rows(summary, process_s)
    table = [
        [r["stage"], r["wall_s"], "" if r["share"] is None else f"{r['share']:.1%}"] for r in rows
    ]
    print(markdown_table(["stage", "wall s", "share"], table))
    write_json(
        args.json,
        {
            "benchmark": "pipeline",
            "machine": info,
            "quick": args.quick,
            "overrides": overrides,
            "stages": {r["stage"]: r["wall_s"] for r in rows},
            "summary": {k: summary.get(k) for k in ("model", "layer", "d_model", "seed", "wall_s")},
        },
    )


if __name__ == "__main__":
    main()
