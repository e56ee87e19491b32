"""Held-out FVE of AR(AV(h)) along an RL run, from its exports (rl.export_every_checkpoint).

Usage: python benchmarks/rl_curve.py RUN_DIR [--warm-start WARM_RUN_DIR] [--rows 512]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nla_lightning.core.reconstructor import ActivationReconstructor
from nla_lightning.core.verbalizer import ActivationVerbalizer
from nla_lightning.data.store import read_activations
from nla_lightning.evaluation.evaluator import evaluate_nla


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", type=Path)
    parser.add_argument("--warm-start", type=Path, default=None)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    args = parser.parse_args()
    points = []
    if args.warm_start:
        points.append((0, args.warm_start / "checkpoints"))
    exports = sorted(
        (int(p.name.split("-")[1]), p) for p in (args.run / "rl_exports").glob("step-*")
    )
    points += exports
    data_dir = (args.warm_start or args.run) / "data"
    print(f"{'step':>6}{'fve':>9}{'shuffled':>10}{'failures':>10}{'length':>8}")
    for step, directory in points:
        av = ActivationVerbalizer.load(directory / "av")
        ar = ActivationReconstructor.load(directory / "ar")
        held_out = read_activations(data_dir / "eval.parquet", expect=av.meta).activations
        r = evaluate_nla(
            av, ar, held_out[: args.rows], max_new_tokens=args.max_new_tokens
        ).curve_point()
        print(
            f"{step:>6}{r['fve']:>9.3f}{r['fve_shuffled']:>10.3f}"
            f"{r['failure_rate']:>10.3f}{r['response_length']:>8.1f}"
        )


if __name__ == "__main__":
    main()
