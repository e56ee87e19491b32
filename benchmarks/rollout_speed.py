"""Generation speed of the AV rollout against plain `generate` on the same model.

Our rollout is `ActivationVerbalizer.sample`: G samples per activation in one batched,
KV-cached sampling loop (core/sampling.py) with the injection hook, then the response mask and
decoded texts. The
baseline is `model.generate` on the same prompt ids without injection, with the same batch size,
max_new_tokens and sampling settings (temperature, top_k=0, top_p=1). Both are forced to write
exactly max_new_tokens tokens per row (min_new_tokens = max_new_tokens), so both produce the same
number of tokens; the tokens are still counted from the outputs. Calls alternate between the two,
after warm-up, and the median over repeats is reported, in wall time and, as a check on a shared
machine, in process CPU time.

Usage: python benchmarks/rollout_speed.py [--av DIR] [--batch-size 8 32] [--group-size 4]
       [--max-new-tokens 64] [--repeats 7] [--device cpu|cuda] [--threads N] [--json PATH]
       [--quick]
Without --av the AV is the default run's tiny target architecture with random weights (speed does
not depend on the weights); --av takes a trained AV directory, e.g. a run's checkpoints/av.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from _common import (
    add_common_args,
    markdown_table,
    median,
    setup,
    timed,
    toy_meta,
    toy_target,
    toy_tokenizer,
    write_json,
)

from nla_lightning.core.verbalizer import ActivationVerbalizer


def build_verbalizer(av_dir: Path | None, device: str) -> ActivationVerbalizer:
    if av_dir is not None:
        av = ActivationVerbalizer.load(av_dir)
    else:
        tokenizer = toy_tokenizer()
        model = toy_target(tokenizer)
        av = ActivationVerbalizer(model, tokenizer, toy_meta(tokenizer, model))
    return av.to(device).eval()  # the prompt ids (a buffer) move with the model


def counted(response: torch.Tensor, eos: int) -> int:
    """Tokens up to and including the first end-of-turn of each row (the rollout's own rule)."""
    is_eos = response == eos
    after_eos = (is_eos.cumsum(dim=1) - is_eos.long()) > 0
    return int((~after_eos).sum())


def measure(
    av: ActivationVerbalizer,
    batch: int,
    group: int,
    max_new_tokens: int,
    temperature: float,
    warmup: int,
    repeats: int,
    device: str,
) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(batch)
    activations = torch.randn(batch, av.meta.d_model, generator=generator).to(device)
    rows = batch * group
    prompt = av.prompt_ids.unsqueeze(0).expand(rows, -1)
    eos = av.tokenizer.eos_token_id

    def ours() -> int:
        rollout = av.sample(
            activations,
            group_size=group,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            min_new_tokens=max_new_tokens,
        )
        return int(rollout.response_mask.sum())

    def plain() -> torch.Tensor:
        with torch.no_grad():
            return av.model.generate(
                input_ids=prompt,
                attention_mask=torch.ones_like(prompt),
                do_sample=True,
                temperature=temperature,
                top_k=0,
                top_p=1.0,
                max_new_tokens=max_new_tokens,
                min_new_tokens=max_new_tokens,
                eos_token_id=eos,
                pad_token_id=av.pad_id,
                use_cache=True,
            )

    calls = {"ours": ours, "generate": plain}
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    cpu_seconds: dict[str, list[float]] = {name: [] for name in calls}
    tokens: dict[str, int] = {}
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    for i in range(repeats):
        # Alternate the order so that drifting machine load hits both alike.
        order = list(calls) if i % 2 == 0 else list(reversed(calls))
        for name in order:
            cpu = time.process_time()
            s, out = timed(calls[name], device)
            cpu_seconds[name].append(time.process_time() - cpu)
            seconds[name].append(s)
            if name == "ours":
                tokens[name] = out
            else:
                tokens[name] = counted(out[:, prompt.shape[1] :], eos)
    if tokens["ours"] != tokens["generate"]:
        raise SystemExit(f"token counts differ ({tokens}): the fixed length did not hold")
    result: dict[str, Any] = {
        "batch_size": batch,
        "group_size": group,
        "rows": rows,
        "max_new_tokens": max_new_tokens,
        "tokens_per_call": tokens["ours"],
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
    }
    for name in calls:
        result[f"{name}_median_s"] = median(seconds[name])
        result[f"{name}_tokens_per_s"] = tokens[name] / result[f"{name}_median_s"]
        result[f"{name}_cpu_median_s"] = median(cpu_seconds[name])
    # > 1: our rollout is faster. Wall time is what a run waits for; process CPU time is less
    # disturbed by other work on a shared machine.
    result["ratio"] = result["ours_tokens_per_s"] / result["generate_tokens_per_s"]
    result["cpu_ratio"] = result["generate_cpu_median_s"] / result["ours_cpu_median_s"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--av", type=Path, default=None, help="a trained AV directory")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    add_common_args(parser)
    args = parser.parse_args()
    if args.quick:
        args.batch_size, args.group_size, args.max_new_tokens = [2], 2, 8
        args.warmup, args.repeats = 1, 3
    info = setup(args)
    torch.manual_seed(0)
    av = build_verbalizer(args.av, args.device)
    print(
        f"AV: {args.av or 'default tiny target, random weights'}  d_model {av.meta.d_model}  "
        f"prompt {av.prompt_ids.numel()} tokens  temperature {args.temperature}  "
        f"median of {args.repeats} (after {args.warmup} warm-up)\n"
    )
    results = [
        measure(
            av,
            batch,
            args.group_size,
            args.max_new_tokens,
            args.temperature,
            args.warmup,
            args.repeats,
            args.device,
        )
        for batch in args.batch_size
    ]
    headers = [
        "activations x G",
        "rows",
        "new tokens/row",
        "ours s",
        "generate s",
        "ours tok/s",
        "generate tok/s",
        "ours / generate",
        "ours / generate (CPU time)",
    ]
    table = [
        [
            f"{r['batch_size']} x {r['group_size']}",
            r["rows"],
            r["max_new_tokens"],
            r["ours_median_s"],
            r["generate_median_s"],
            r["ours_tokens_per_s"],
            r["generate_tokens_per_s"],
            r["ratio"],
            r["cpu_ratio"],
        ]
        for r in results
    ]
    print(markdown_table(headers, table))
    print(
        "\ntok/s: generated tokens per second of wall time (median over repeats); "
        "ours / generate > 1 means our rollout is faster"
    )
    write_json(
        args.json,
        {
            "benchmark": "rollout_speed",
            "machine": info,
            "av": str(args.av) if args.av else None,
            "quick": args.quick,
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
