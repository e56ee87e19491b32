"""RL step-time split and throughput of the tiny toy NLA on this machine.

Usage: python benchmarks/rl_step.py [--run outputs/DATE/TIME] [--steps 30] [--warmup 5]
`--run` is a finished warm start (default: the newest run under outputs/ that has one).
"""

from __future__ import annotations

import argparse
import platform
import statistics
from pathlib import Path

import lightning as L
import torch

from nla_lightning.data.store import read_activations
from nla_lightning.modules.rl import NLARLModule, RLHyperparams
from nla_lightning.reconstructor import ActivationReconstructor
from nla_lightning.rl_stage import build_av


def newest_run() -> Path:
    runs = sorted(Path("outputs").glob("*/*/checkpoints/ar"))
    if not runs:
        raise SystemExit("no warm-start run under outputs/: run `python train.py` first")
    return runs[-1].parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--reference", default="quantized_4bit")
    args = parser.parse_args()
    run = args.run or newest_run()
    train = {
        "dtype": "float32",
        "av_mode": "full",
        "reference": args.reference,
        "lora_rank": 16,
        "gradient_checkpointing": False,
    }
    av, reference = build_av(run / "checkpoints" / "av", train, "cpu")
    ar = ActivationReconstructor.load(run / "checkpoints" / "ar")
    data = read_activations(run / "data" / "rl.parquet", expect=av.meta)
    hp = RLHyperparams(
        steps=args.warmup + args.steps,
        batch_size=args.batch_size,
        group_size=args.group_size,
        av_lr=1e-4,
        ar_lr=3e-4,
        beta=0.0 if args.reference == "none" else 0.01,
        examples_every=0,
    )
    module = NLARLModule(av, ar, data.activations, hp, reference)
    L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(module)
    timed = module.timings[args.warmup :]
    phases = ["rollout", "score", "ar", "av"]
    means = {p: statistics.mean(t[f"time/{p}_s"] for t in timed) for p in phases}
    step_s = sum(means.values())
    samples = statistics.mean(t["samples"] for t in timed)
    tokens = statistics.mean(t["tokens"] for t in timed)
    print(
        f"machine: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(
        f"run: {run}  d_model {av.meta.d_model}  reference {args.reference}  "
        f"batch {args.batch_size} x group {args.group_size}, {len(timed)} timed steps\n"
    )
    print(f"{'phase':<10}{'mean s':>10}{'share':>9}")
    for p in phases:
        print(f"{p:<10}{means[p]:>10.4f}{means[p] / step_s:>9.1%}")
    print(f"{'step':<10}{step_s:>10.4f}")
    print(f"\nsamples/s {samples / step_s:.1f}   response tokens/s {tokens / step_s:.0f}")


if __name__ == "__main__":
    main()
