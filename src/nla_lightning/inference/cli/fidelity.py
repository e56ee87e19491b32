"""nla-fidelity: KL of the next-token distribution when activations are replaced."""

from __future__ import annotations

import argparse

from nla_lightning.core.verbalizer import MAX_NEW_TOKENS
from nla_lightning.errors import NLAConfigError
from nla_lightning.inference.cli import common
from nla_lightning.inference.render.json import dumps
from nla_lightning.inference.render.markdown import fidelity_markdown

PROG = "nla-fidelity"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    common.add_model_args(parser)
    common.add_text_args(parser)
    parser.add_argument("--samples", type=int, default=1, help="explanations per token")
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    parser.add_argument("--seed", type=int, default=0)
    common.add_output_args(parser, ("md", "json"))
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> int:
    from nla_lightning.inference.fidelity import fidelity

    text = common.read_text(args)
    tokens = common.parse_indices(args.tokens, "--tokens")
    if args.samples < 1:
        raise NLAConfigError(f"--samples must be at least 1, got {args.samples}")
    nla = common.load_nla(args)
    result = fidelity(
        nla,
        text,
        tokens=tokens,
        samples=args.samples,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
    )
    result = {"base_model": nla.meta.base_model, "layer": nla.layer, **result}
    output = dumps(result) if args.format == "json" else fidelity_markdown(result)
    common.write(output, args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of nla-fidelity; returns the exit code."""
    return common.run(PROG, lambda: measure(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
