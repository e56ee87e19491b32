"""GPU check: the package's real code paths on randomly initialised Qwen2.5-shaped models, in
one table, with a non-zero exit on any failure. Needs no downloaded weights.

Usage: python benchmarks/gpu_check.py --device cuda [--only bf16,nf4,rl,fsdp,qlora] [--rl-steps 3]
       [--scratch DIR] [--json PATH]
       python benchmarks/gpu_check.py --device cpu --quick      (tiny shapes; the test suite's)

The real check is `python benchmarks/gpu_check.py --device cuda`, sized for 8 minutes on one
H200 (the 7B check writes a ~15 GB random model under --scratch, by default the system's temp
folder). Every model is built from a literal Qwen2.5 config (0.5B or 7B shape) with random
weights, saved with save_pretrained and loaded back through the package's loaders
(load_causal_lm, warm_start_av / warm_start_ar, rl_av / rl_ar, ActivationVerbalizer.load with
bitsandbytes NF4). The tokenizer is the toy word-level one grown by the words of the release's
prompt templates (the Qwen presets' `templates: reference`): its ids are small, the models keep
Qwen's real vocabulary size. Checks:

  bf16   AV SFT loss (injection) and AR regression loss, forward + backward in bf16 on the 0.5B
         shape: finite losses, every trainable parameter with a finite gradient, norm > 0.
  nf4    the AV loaded in NF4 (bitsandbytes 4-bit) as the KL reference's log-probs against the
         bf16 AV's on the same sampled responses; its weights against the README's estimate.
  rl     `--rl-steps` RL steps of a 0.5B-shaped NLA (model=qwen_small's settings: full bf16, NF4
         reference) through NLARLModule and a Lightning Trainer, 4 x 4 samples of 32 tokens.
  fsdp   the rl check's steps under trainer.strategy=fsdp (FSDP2, spawned rank, one device):
         every step done, the weights that come back moved and finite, the rank's peak memory.
  qlora  experiment=qwen7b_24gb on the 7B shape (QLoRA AV and AR, adapter reference, the preset's
         RL batch, micro-batches and gradient checkpointing): GPU memory of each component
         (policy, reference and AR weights, then the optimizer + gradients + activations + KV
         cache of two RL steps) against the estimate the RL stage prints (training/memory.py).
         Fails when the measured peak is over the estimate by more than 25%, or under half of it.

A random AV never closes its <explanation> tag, so the RL checks write every response to full
length and turn its sampled ids into words: the AR is scored and trained on every sample, as
after a warm start. `--quick` runs the same code on tiny models of the same layouts (CPU: the
memory columns read n/a).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from _common import add_common_args, markdown_table, setup, write_json
from gpu.checks_models import build_small, check_bf16_ar, check_bf16_av, check_nf4
from gpu.checks_rl import check_rl
from gpu.checks_sharded import check_rl_sharded
from gpu.memory import Memory
from gpu.qlora_memory import check_qlora
from gpu.report import HEADERS, CheckFailed, Row, progress, short
from gpu.shapes import Shape, compose, shapes

CHECKS = ("bf16", "nf4", "rl", "fsdp", "qlora")


def run_check(name: str, label: str, check: Callable[[], Row | list[Row]], memory: Memory):
    """One check; an exception becomes a FAIL row (its traceback on stderr, unless the check
    itself said what was wrong)."""
    progress(f"check: {name} ({label})")
    start = time.perf_counter()
    try:
        result = check()
    except Exception as err:  # any failure is a row of the table, not the end of the script
        if not isinstance(err, CheckFailed):
            traceback.print_exc()
        values = err.values if isinstance(err, CheckFailed) else {}
        seconds = time.perf_counter() - start
        rows = [Row(name, label, seconds, None, None, "FAIL", short(err), values)]
    else:
        rows = result if isinstance(result, list) else [result]
        if len(rows) == 1 and not rows[0].seconds:
            rows[0].seconds = time.perf_counter() - start
    memory.release()
    progress(f"done: {name}: {', '.join(r.status for r in rows)}")
    return rows


def small_checks(
    args: argparse.Namespace,
    only: set[str],
    shape: Shape,
    preset: dict[str, Any],
    scratch: Path,
    memory: Memory,
) -> list[Row]:
    checks = {
        "bf16": [
            ("bf16 AV forward+backward", check_bf16_av),
            ("bf16 AR forward+backward", check_bf16_ar),
        ],
        "nf4": [("NF4 reference log-probs", check_nf4)],
        "rl": [
            ("RL steps (Trainer)", lambda s, d, m: check_rl(s, d, m, args.rl_steps, args.quick))
        ],
        "fsdp": [
            (
                "RL steps (trainer=fsdp)",
                lambda s, d, m: check_rl_sharded(s, d, m, args.rl_steps, args.quick),
            )
        ],
    }
    chosen = [item for key in CHECKS if key in only for item in checks.get(key, [])]
    if not chosen:
        return []
    progress(f"building a random {shape.label} NLA (model=qwen_small)")
    try:
        small = build_small(shape, preset, scratch / "small", args.device)
    except Exception as err:  # every check of the group fails with the same cause
        traceback.print_exc()
        return [
            Row(n, shape.label, 0.0, None, None, "FAIL", f"setup: {short(err)}") for n, _ in chosen
        ]
    rows = []
    for name, check in chosen:
        rows += run_check(name, shape.label, lambda c=check: c(small, args.device, memory), memory)
    return rows


def parse_only(text: str) -> set[str]:
    chosen = {part.strip() for part in text.split(",") if part.strip()}
    unknown = chosen - set(CHECKS)
    if unknown or not chosen:
        raise SystemExit(f"--only: choose among {','.join(CHECKS)}, got {text!r}")
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join(CHECKS), help="checks to run (comma list)")
    parser.add_argument("--rl-steps", type=int, default=3, help="steps of the RL check")
    parser.add_argument("--scratch", type=Path, default=None, help="where models are saved")
    add_common_args(parser)
    args = parser.parse_args()
    only = parse_only(args.only)
    info = setup(args)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    memory = Memory(args.device)
    small_preset = compose(["model=qwen_small", "trainer=gpu"])
    large_preset = compose(["experiment=qwen7b_24gb"])
    small, large = shapes(args.quick, small_preset["layer"], large_preset["layer"])
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="nla-gpu-check-", dir=args.scratch) as directory:
        scratch = Path(directory)
        rows += small_checks(args, only, small, small_preset, scratch, memory)
        if "qlora" in only:
            rows += run_check(
                "7B QLoRA preset",
                large.label,
                lambda: check_qlora(
                    large, large_preset, scratch / "large", args.device, memory, args.quick
                ),
                memory,
            )
    passed = sum(row.status == "ok" for row in rows)
    print()
    print(markdown_table(HEADERS, [row.cells() for row in rows]))
    write_json(
        args.json,
        {
            "benchmark": "gpu_check",
            "machine": info,
            "quick": args.quick,
            "checks": sorted(only, key=CHECKS.index),
            "rows": [asdict(row) for row in rows],
            "passed": passed,
            "total": len(rows),
        },
    )
    print(f"\ngpu check: {passed}/{len(rows)} ok", flush=True)
    sys.exit(0 if passed == len(rows) else 1)


if __name__ == "__main__":
    main()
