"""RL step-time split and throughput of the tiny toy NLA on this machine.

Usage: python benchmarks/rl_step.py [--run outputs/DATE/TIME] [--steps 30] [--warmup 5]
       [--batch-size 8] [--group-size 4] [--max-new-tokens 40] [--reference quantized_4bit]
       [--synthetic] [--device cpu|cuda] [--threads N] [--json PATH] [--quick]
`--run` is a finished warm start (default: the newest run under outputs/ that has one).
`--synthetic` times an untrained NLA built on the spot instead (the default run's tiny target
architecture, random weights, random activations): no run needed, but its responses are not the
lengths a trained AV writes. `--quick` is a few tiny steps, on a synthetic NLA unless --run is
given.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from _common import (
    add_common_args,
    bench_trainer,
    markdown_table,
    setup,
    synthetic_run,
    write_json,
)

from nla_lightning.core.reconstructor import ActivationReconstructor
from nla_lightning.data.store import read_activations
from nla_lightning.settings import RLSettings
from nla_lightning.training.builders import rl_av
from nla_lightning.training.rl import NLARLModule

# rollout; ar = the AR forward that scores every sample and its regression step; av = GRPO.
PHASES = ["rollout", "ar", "av"]


def newest_run() -> Path:
    runs = sorted(Path("outputs").glob("*/*/checkpoints/ar"))
    if not runs:
        raise SystemExit(
            "no warm-start run under outputs/: run `python train.py` first, pass --run, "
            "or time an untrained NLA with --synthetic"
        )
    return runs[-1].parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, default=None)
    parser.add_argument("--synthetic", action="store_true", help="an untrained NLA, no run")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=RLSettings.max_new_tokens)
    parser.add_argument("--reference", default="quantized_4bit")
    parser.add_argument("--hidden", type=int, default=None, help="width of a --synthetic NLA")
    add_common_args(parser)
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup, args.batch_size, args.group_size = 3, 1, 2, 2
        args.max_new_tokens = 8
        args.synthetic = args.run is None
    info = setup(args)
    train = {
        "dtype": "float32",
        "av_mode": "full",
        "reference": args.reference,
        "lora_rank": 16,
        "gradient_checkpointing": False,
    }
    with tempfile.TemporaryDirectory(prefix="nla-bench-rl-") as scratch:
        if args.synthetic:
            source = "synthetic (untrained tiny NLA, random activations)"
            av_dir, ar, activations = synthetic_run(Path(scratch), hidden=args.hidden)
            ar = ar.to(args.device)
        else:
            run = args.run or newest_run()
            source = str(run)
            av_dir = run / "checkpoints" / "av"
            ar = ActivationReconstructor.load(run / "checkpoints" / "ar", device=args.device)
            activations = None
        av, reference = rl_av(av_dir, train, args.device)
        if activations is None:
            activations = read_activations(run / "data" / "rl.parquet", expect=av.meta).activations
        hp = RLSettings(
            steps=args.warmup + args.steps,
            batch_size=args.batch_size,
            group_size=args.group_size,
            max_new_tokens=args.max_new_tokens,
            av_lr=1e-4,
            ar_lr=3e-4,
            beta=0.0 if args.reference == "none" else 0.01,
            examples_every=0,
        )
        module = NLARLModule(av, ar, activations, hp, reference)
        bench_trainer(args.device).fit(module)
    timed = module.timings[args.warmup :]
    means = {p: statistics.mean(t[f"time/{p}_s"] for t in timed) for p in PHASES}
    step_s = sum(means.values())
    samples = statistics.mean(t["samples"] for t in timed)
    tokens = statistics.mean(t["tokens"] for t in timed)
    print(
        f"\nNLA: {source}  d_model {av.meta.d_model}  reference {args.reference}  "
        f"batch {args.batch_size} x group {args.group_size}  max_new_tokens "
        f"{args.max_new_tokens}, {len(timed)} timed steps after {args.warmup} warm-up\n"
    )
    rows = [[p, means[p], f"{means[p] / step_s:.1%}"] for p in PHASES]
    rows.append(["step", step_s, "100.0%"])
    print(markdown_table(["phase", "mean s", "share"], rows))
    print(
        f"\nsamples/s {samples / step_s:.1f}   response tokens/s {tokens / step_s:.0f}   "
        f"mean response length {tokens / samples:.1f}"
    )
    write_json(
        args.json,
        {
            "benchmark": "rl_step",
            "machine": info,
            "nla": source,
            "d_model": av.meta.d_model,
            "quick": args.quick,
            "reference": args.reference,
            "batch_size": args.batch_size,
            "group_size": args.group_size,
            "max_new_tokens": args.max_new_tokens,
            "timed_steps": len(timed),
            "phase_mean_s": means,
            "step_s": step_s,
            "samples_per_s": samples / step_s,
            "tokens_per_s": tokens / step_s,
            "mean_response_length": tokens / samples,
            "steps": timed,
        },
    )


if __name__ == "__main__":
    main()
