"""nla-steer: compare a prompt's completions with and without an explanation-edit direction."""

from __future__ import annotations

import argparse

from nla_lightning.errors import NLAConfigError
from nla_lightning.inference.cli import common
from nla_lightning.inference.render.json import dumps
from nla_lightning.inference.render.markdown import steering_markdown

PROG = "nla-steer"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    common.add_model_args(parser)
    parser.add_argument("--original", required=True, help="an explanation of the activation")
    parser.add_argument("--edited", required=True, help="the explanation, edited")
    parser.add_argument("--prompt", required=True, help="the prompt to continue")
    parser.add_argument("--alpha", type=float, default=4.0, help="strength, in units of ||h||")
    parser.add_argument(
        "--positions", default=None, help="prompt indices 1,2 or 'all' (default: the prompt)"
    )
    parser.add_argument("--samples", type=int, default=3, help="completions of each kind")
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 decodes greedily")
    parser.add_argument("--seed", type=int, default=0)
    common.add_output_args(parser, ("md", "json"))
    return parser.parse_args(argv)


def check(args: argparse.Namespace) -> None:
    """Refuse empty prompts/explanations and bad counts before loading any weights."""
    for flag in ("original", "edited", "prompt"):
        if not getattr(args, flag).strip():
            raise NLAConfigError(f"--{flag} is empty: give a non-empty text")
    if args.samples < 1:
        raise NLAConfigError(f"--samples must be at least 1, got {args.samples}")


def steer(args: argparse.Namespace) -> int:
    from nla_lightning.inference.steer import compare_steering, steering_vector

    check(args)
    all_ = args.positions is not None and args.positions.strip() == "all"
    positions = "all" if all_ else common.parse_indices(args.positions, "--positions")
    nla = common.load_nla(args)
    vector = steering_vector(nla, args.original, args.edited)
    completions = compare_steering(
        nla,
        args.prompt,
        vector,
        args.alpha,
        positions=positions,
        max_new_tokens=args.max_new_tokens,
        samples=args.samples,
        seed=args.seed,
        temperature=args.temperature,
    )
    result = {
        "prompt": args.prompt,
        "original": args.original,
        "edited": args.edited,
        "alpha": args.alpha,
        "positions": positions,
        **completions,
    }
    output = dumps(result) if args.format == "json" else steering_markdown(result)
    common.write(output, args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of nla-steer; returns the exit code."""
    return common.run(PROG, lambda: steer(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
