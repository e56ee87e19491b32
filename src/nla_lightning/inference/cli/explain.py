"""nla-explain: sample and score NLA explanations of a text's tokens."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from nla_lightning.core.verbalizer import MAX_NEW_TOKENS
from nla_lightning.inference.cli import common
from nla_lightning.inference.render.document import Document
from nla_lightning.inference.render.html import explanations_html
from nla_lightning.inference.render.json import explanations_json
from nla_lightning.inference.render.markdown import explanations_markdown

PROG = "nla-explain"
RENDERERS: dict[str, Callable[[Document], str]] = {
    "md": explanations_markdown,
    "json": explanations_json,
    "html": explanations_html,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    common.add_model_args(parser)
    common.add_text_args(parser)
    parser.add_argument("--samples", type=int, default=3, help="explanations per token")
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    parser.add_argument("--seed", type=int, default=0)
    common.add_output_args(parser, tuple(RENDERERS))
    return parser.parse_args(argv)


def explain(args: argparse.Namespace) -> int:
    text = common.read_text(args)
    tokens = common.parse_indices(args.tokens, "--tokens")
    nla = common.load_nla(args)
    results = nla.explain(
        text,
        tokens=tokens,
        samples=args.samples,
        max_new_tokens=args.max_new_tokens,
        # A progress bar only helps someone watching a terminal.
        progress=sys.stderr.isatty(),
        seed=args.seed,
    )
    report = Document(
        text=text,
        results=results,
        base_model=nla.meta.base_model,
        layer=nla.layer,
        tokens=nla.token_strings(nla.encode(text)[0]),
    )
    common.write(RENDERERS[args.format](report), args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of nla-explain; returns the exit code."""
    return common.run(PROG, lambda: explain(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
