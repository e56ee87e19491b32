"""Command line: `python -m nla_lightning.data.extract.cli --model M --layer L --out DIR ...`."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence

from nla_lightning.errors import NLAConfigError
from nla_lightning.settings.data import CorpusDataSettings

# Test hook: seconds to sleep after each batch, so a test can kill a run part-way through.
SLEEP_ENV = "NLA_EXTRACT_SLEEP_PER_BATCH"


def parse_fractions(text: str) -> dict[str, float]:
    """'av_sft=0.3,ar_sft=0.3,rl=0.4' -> {'av_sft': 0.3, ...}."""
    fractions: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError(part)
            fractions[name.strip()] = float(value)
        except ValueError as err:
            raise NLAConfigError(
                f"--fractions {text!r}: expected name=fraction pairs separated by commas, "
                "e.g. av_sft=0.3,ar_sft=0.3,rl=0.4"
            ) from err
    return fractions


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m nla_lightning.data.extract.cli",
        description="Extract prefix activations of a corpus into per-split Parquet shards.",
    )
    parser.add_argument("--model", required=True, help="local directory or Hub name")
    parser.add_argument("--layer", type=int, required=True, help="block whose output is read")
    parser.add_argument("--out", required=True, help="output directory (resumed if it exists)")
    parser.add_argument("--files", nargs="+", default=None, help=".txt/.jsonl/.parquet or dirs")
    parser.add_argument("--hf-dataset", default=None, help="streamed Hugging Face dataset")
    parser.add_argument("--hf-split", default="train")
    parser.add_argument("--text-field", default="text")
    parser.add_argument("--id-field", default=None)
    parser.add_argument("--seed", type=int, default=0)
    # The defaults are data=corpus's (settings/data.py), the release's recipe.
    defaults = CorpusDataSettings()
    parser.add_argument("--prefixes-per-doc", type=int, default=defaults.prefixes_per_doc)
    parser.add_argument(
        "--min-tokens",
        type=int,
        default=defaults.min_tokens,
        help="shortest prefix (its last token is the activation's position)",
    )
    parser.add_argument("--max-tokens", type=int, default=defaults.max_tokens)
    parser.add_argument("--batch-size", type=int, default=defaults.extract_batch_size)
    parser.add_argument("--shard-rows", type=int, default=defaults.shard_rows)
    parser.add_argument(
        "--fractions", default=",".join(f"{k}={v}" for k, v in defaults.fractions.items())
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    parser.add_argument("--templates", default="reference", choices=("reference", "toy"))
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser.parse_args(argv)


def prompt_templates(name: str) -> tuple[str, str]:
    if name == "toy":
        from nla_lightning.core.templates import templates

        return templates("toy")
    from nla_lightning.core.templates import REFERENCE_ACTOR_TEMPLATE, REFERENCE_CRITIC_TEMPLATE

    return REFERENCE_ACTOR_TEMPLATE, REFERENCE_CRITIC_TEMPLATE


def batch_hook() -> Callable[[int], None] | None:
    seconds = float(os.environ.get(SLEEP_ENV, "0") or 0)
    return (lambda _rows: time.sleep(seconds)) if seconds > 0 else None


def run(args: argparse.Namespace) -> None:
    from nla_lightning.core.meta import build_meta
    from nla_lightning.core.models import load_causal_lm, load_tokenizer
    from nla_lightning.data.extract.run import extract_corpus
    from nla_lightning.data.extract.sources import iter_documents

    fractions = parse_fractions(args.fractions)
    actor, critic = prompt_templates(args.templates)
    tokenizer = load_tokenizer(args.model)
    model = load_causal_lm(args.model, dtype=args.dtype, device=args.device).eval()
    meta = build_meta(
        tokenizer,
        model.config,
        base_model=args.model,
        layer=args.layer,
        # Datasets record no injection scale (the release's format): training chooses it.
        injection_scale=None,
        actor_template=actor,
        critic_template=critic,
    )
    documents = iter_documents(
        files=args.files,
        hf_dataset=args.hf_dataset,
        hf_split=args.hf_split,
        text_field=args.text_field,
        id_field=args.id_field,
    )
    report = extract_corpus(
        model,
        tokenizer,
        meta,
        documents,
        args.out,
        fractions,
        seed=args.seed,
        prefixes_per_doc=args.prefixes_per_doc,
        min_tokens=args.min_tokens,
        max_tokens=args.max_tokens,
        batch_size=args.batch_size,
        shard_rows=args.shard_rows,
        progress=not args.no_progress,
        on_batch=batch_hook(),
        files=args.files,
    )
    print(report)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns 2 with the message on a configuration error."""
    args = parse_args(argv)
    try:
        run(args)
    except NLAConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
