"""One GRPO step of this package against TRL's GRPOTrainer on the same model and shape.

Usage: python benchmarks/vs_trl.py [--rounds 4] [--steps 4] [--reference frozen]
       [--prompts reference|toy] [--shapes 8x4x40,8x8x40,8x4x96] [--device cpu|cuda]
       [--threads N] [--json PATH] [--quick]
Needs TRL: pip install -e ".[bench]".

Both sides start from the same untrained tiny AV (the default run's target architecture, random
weights), the same prompt (the AV's chat-templated prompt, the same token count on both sides:
the release's template, which every real-model preset uses, or with `--prompts toy` the toy
world's short one), the same batch x group, temperature 1, no top-k/top-p, beta 0.01 with a
full-precision frozen reference, one update per batch, AdamW at lr 1e-4. Both are forced to
write exactly `cap` tokens per response (min_new_tokens = max_new_tokens), and every one of our
responses counts as a valid explanation,
so our step does all of its work: rollout with injection, AR scoring of every sample, one AR
regression step, the GRPO step with KL. TRL's reward function only reads lengths.

The sides run interleaved in one process (rounds of: ours, ours with the compiled rollout
decoder, TRL), each round a fresh `fit` / `train` call whose first step is not timed (and whose
first call compiles the decoder); a step is timed from the trainer's batch-start hook to its
batch-end hook on every side. The last line is ours (default settings) against TRL at the first
shape; the line before it, with the compiled decoder.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from _common import (
    add_common_args,
    bench_trainer,
    markdown_table,
    setup,
    synthetic_run,
    write_json,
)
from forced_rl import ForcedLengthRL

from nla_lightning.settings import RLSettings
from nla_lightning.training.builders import rl_av

LR = 1e-4
BETA = 0.01


@dataclass(frozen=True)
class Shape:
    batch: int
    group: int
    cap: int

    @classmethod
    def parse(cls, text: str) -> Shape:
        try:
            batch, group, cap = (int(x) for x in text.lower().split("x"))
        except ValueError:
            raise SystemExit(f"--shapes: {text!r} is not BATCHxGROUPxCAP, e.g. 8x4x40") from None
        return cls(batch, group, cap)

    def __str__(self) -> str:
        return f"{self.batch} x {self.group}, {self.cap} tokens"


class StepClock(L.Callback):
    """Seconds of each training batch, hook to hook (the whole step: rollout to updates)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.valid: list[float] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if module.timings and len(module.timings) > len(self.seconds):
            self.seconds.append(time.perf_counter() - self._start)
            self.valid.append(float(trainer.callback_metrics["rl/failure_rate"]))


class Ours:
    def __init__(
        self,
        av_dir: Path,
        ar: Any,
        activations: torch.Tensor,
        shape: Shape,
        args,
        compile_rollout: bool = False,
    ):
        train = {
            "dtype": "float32",
            "av_mode": "full",
            "reference": args.reference,
            "lora_rank": 16,
            "gradient_checkpointing": False,
        }
        av, reference = rl_av(av_dir, train, args.device)
        self.prompt_tokens = int(av.prompt_ids.numel())
        hp = RLSettings(
            steps=1,
            batch_size=shape.batch,
            group_size=shape.group,
            max_new_tokens=shape.cap,
            av_lr=LR,
            ar_lr=LR,
            beta=BETA,
            warmup_steps=0,
            examples_every=0,
            compile_rollout=compile_rollout,
        )
        self.module = ForcedLengthRL(av, ar.to(args.device), activations, hp, reference)
        self.clock = StepClock()
        self.device = args.device

    def run(self, steps: int) -> list[float]:
        before = len(self.clock.seconds)
        self.module.hp.steps = self.module.steps_done + steps
        bench_trainer(self.device, callbacks=[self.clock]).fit(self.module)
        return self.clock.seconds[before:]

    def response_tokens(self) -> float:
        return statistics.mean(t["tokens"] for t in self.module.timings)

    def failure_rate(self) -> float:
        return max(self.clock.valid)


class Theirs:
    def __init__(self, av_dir: Path, prompt_text: str, shape: Shape, scratch: Path, args):
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, TrainerCallback
        from transformers.trainer_callback import PrinterCallback
        from trl import GRPOConfig, GRPOTrainer

        from nla_lightning.core.models import load_tokenizer

        # The AV's own tokenizer as the package loads it (the toy one is word-level).
        tokenizer = load_tokenizer(str(av_dir))
        self.prompt_tokens = len(tokenizer(prompt_text)["input_ids"])
        self.lengths: list[int] = []
        self.samples = shape.batch * shape.group
        seconds: list[float] = []
        self.seconds = seconds

        def length_reward(completions, completion_ids, **_: Any) -> list[float]:
            self.lengths.extend(len(c) for c in completion_ids)
            return [float(len(c)) for c in completion_ids]

        class Clock(TrainerCallback):
            def on_step_begin(self, *_: Any, **__: Any) -> None:
                self.start = time.perf_counter()

            def on_step_end(self, *_: Any, **__: Any) -> None:
                seconds.append(time.perf_counter() - self.start)

        config = GRPOConfig(
            output_dir=str(scratch / "trl"),
            per_device_train_batch_size=shape.batch * shape.group,
            num_generations=shape.group,
            max_completion_length=shape.cap,
            generation_kwargs={"min_new_tokens": shape.cap},
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            beta=BETA,
            learning_rate=LR,
            lr_scheduler_type="constant",
            warmup_steps=0,
            max_steps=1,
            use_cpu=not args.device.startswith("cuda"),
            bf16=False,
            report_to="none",
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            dataloader_num_workers=0,
            seed=0,
        )
        model = AutoModelForCausalLM.from_pretrained(av_dir)
        self.trainer = GRPOTrainer(
            model=model,
            reward_funcs=[length_reward],
            args=config,
            train_dataset=Dataset.from_dict({"prompt": [prompt_text] * 4096}),
            processing_class=tokenizer,
            callbacks=[Clock()],
        )
        self.trainer.remove_callback(PrinterCallback)  # it prints every round's summary

    def run(self, steps: int) -> list[float]:
        before = len(self.seconds)
        self.trainer.args.max_steps = steps
        self.trainer.train()
        return self.seconds[before:]

    def response_tokens(self) -> float:
        return float(sum(self.lengths)) / max(len(self.lengths), 1) * self.samples


def measure(shape: Shape, args, scratch: Path) -> dict[str, Any]:
    sides: dict[str, Any] = {}
    ours_sides = (("nla", False),) if args.quick else (("nla", False), ("nla_compiled", True))
    for name, compiled in ours_sides:
        # Each side its own copy of the same untrained NLA (same seeds, same weights).
        av_dir, ar, activations = synthetic_run(
            scratch / f"{name}-{shape.batch}-{shape.group}-{shape.cap}", prompts=args.prompts
        )
        sides[name] = Ours(av_dir, ar, activations, shape, args, compile_rollout=compiled)
    ours = sides["nla"]
    prompt_text = ours.module.av.tokenizer.decode(ours.module.av.prompt_ids.tolist())
    sides["trl"] = Theirs(av_dir, prompt_text, shape, scratch, args)
    if sides["trl"].prompt_tokens != ours.prompt_tokens:
        raise SystemExit(
            f"prompt lengths differ: ours {ours.prompt_tokens}, TRL "
            f"{sides['trl'].prompt_tokens} tokens"
        )
    timed: dict[str, list[float]] = {name: [] for name in sides}
    for round_ in range(args.rounds):
        for name, side in sides.items():
            seconds = side.run(args.steps + 1)
            # The round's first step re-warms a new trainer (and, once, compiles the decoder).
            timed[name] += seconds[1:]
            print(
                f"  round {round_ + 1}/{args.rounds} {name}: "
                + " ".join(f"{s * 1000:.0f}" for s in seconds)
                + " ms",
                flush=True,
            )
    expected = shape.batch * shape.group * shape.cap
    for name, side in sides.items():
        if abs(side.response_tokens() - expected) > 0.5:
            raise SystemExit(
                f"{name} wrote {side.response_tokens():.0f} response tokens a step, not {expected}"
            )
        if name != "trl" and side.failure_rate() > 0:
            raise SystemExit(f"{side.failure_rate():.0%} of {name}'s samples were invalid")
    ms = {k: statistics.median(v) * 1000 for k, v in timed.items()}
    result: dict[str, Any] = {
        "shape": str(shape),
        "batch": shape.batch,
        "group": shape.group,
        "cap": shape.cap,
        "prompt_tokens": ours.prompt_tokens,
        "response_tokens_per_step": expected,
    }
    for name in sides:
        result[f"{name}_ms"] = ms[name]
        result[f"{name}_tokens_per_s"] = expected / ms[name] * 1000
        result[f"{name}_steps_ms"] = [s * 1000 for s in timed[name]]
    result["ratio"] = ms["nla"] / ms["trl"]
    if "nla_compiled" in ms:
        result["ratio_compiled"] = ms["nla_compiled"] / ms["trl"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=4, help="A/B rounds per shape")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per side per round")
    parser.add_argument(
        "--shapes",
        default="8x4x40,8x8x40,8x4x96",
        help="BATCHxGROUPxCAP, comma separated; the first one is the headline ratio",
    )
    parser.add_argument(
        "--prompts",
        default="reference",
        choices=["reference", "toy"],
        help="the AV's prompt template: the release's, which every real-model preset uses "
        "(91 tokens with this tokenizer; the default), or the toy world's (12 tokens)",
    )
    parser.add_argument(
        "--reference",
        default="frozen",
        help="our KL reference: frozen (a full-precision copy, as TRL's) or quantized_4bit",
    )
    add_common_args(parser)
    args = parser.parse_args()
    if args.quick:
        # A smoke test: no compiled side (its compile alone takes longer than the rest).
        args.rounds, args.steps, args.shapes = 2, 1, "2x2x6"
    try:
        import trl
    except ImportError:
        raise SystemExit('TRL is not installed: pip install -e ".[bench]"') from None
    info = setup(args)
    info["trl"] = trl.__version__
    # TRL and Lightning announce their settings on every train/fit call.
    for name in ("lightning", "lightning.pytorch", "transformers", "trl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    shapes = [Shape.parse(s) for s in args.shapes.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="nla-bench-trl-") as scratch:
        for shape in shapes:
            print(f"{shape}: {args.rounds} rounds of {args.steps} timed steps a side", flush=True)
            results.append(measure(shape, args, Path(scratch)))
    print(
        f"\nTRL {trl.__version__}; {args.prompts} prompt of {results[0]['prompt_tokens']} tokens; "
        f"ours with reference {args.reference}, rollout decoded eagerly "
        "(the default) or compiled (rl.compile_rollout=true); median ms per step; every "
        "response exactly the cap; tok/s = response tokens per second\n"
    )
    rows = [
        [
            r["shape"],
            r["nla_ms"],
            r.get("nla_compiled_ms", "-"),
            r["trl_ms"],
            r["nla_tokens_per_s"],
            r.get("nla_compiled_tokens_per_s", "-"),
            r["trl_tokens_per_s"],
            f"{r['ratio']:.2f}",
            f"{r['ratio_compiled']:.2f}" if "ratio_compiled" in r else "-",
        ]
        for r in results
    ]
    headers = ["batch x group, cap", "NLA ms", "NLA compiled ms", "TRL ms", "NLA tok/s"]
    headers += ["NLA compiled tok/s", "TRL tok/s", "NLA/TRL", "NLA compiled/TRL"]
    print(markdown_table(headers, rows))
    write_json(
        args.json,
        {
            "benchmark": "vs_trl",
            "machine": info,
            "prompts": args.prompts,
            "reference": args.reference,
            "shapes": results,
        },
    )
    if "ratio_compiled" in results[0]:
        print(f"ratio NLA compiled/TRL ms per step: {results[0]['ratio_compiled']:.2f}")
    print(f"ratio NLA/TRL ms per step: {results[0]['ratio']:.2f}")


if __name__ == "__main__":
    main()
