"""Reading and steering the toy NLA of a finished run: does `explain` name the right attributes
of held-out texts, and does steering with an edited attribute move the completions?

Usage: python scripts/toy_checks.py RUN_DIR [--texts 200] [--prompts 40] [--alpha 1 2 4]
(uses RUN_DIR/checkpoints/rl, or the warm start with --warm-start; prints Markdown tables)
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from pathlib import Path

from nla_lightning.data.store import read_activations
from nla_lightning.inference import NLA, compare_steering, steering_vector
from nla_lightning.toy.scoring import score_attributes
from nla_lightning.toy.summaries import attribute_phrase
from nla_lightning.toy.world import VALUES, Snippet


def held_out_snippets(run: Path, n: int) -> list[Snippet]:
    table = read_activations(run / "data" / "eval.parquet", columns=["text", "ground_truth"])
    pairs = zip(table.columns["text"], table.columns["ground_truth"], strict=True)
    return [Snippet.from_ground_truth(t, g) for t, g in pairs][:n]


def explain_check(nla: NLA, snippets: list[Snippet], samples: int, shown: int) -> dict:
    """The best-scoring of `samples` explanations of each text's last token, scored against
    the snippet's attributes; prints a few examples."""
    best = []
    print("| text (end) | attributes revealed | best explanation | FVE |\n|---|---|---|---|")
    for i, snippet in enumerate(snippets):
        n_tokens = len(nla.encode(snippet.text)[0])
        token = nla.explain(snippet.text, tokens=[n_tokens - 1], samples=samples)[0]
        best.append(token.best)
        if i < shown:
            truth = ", ".join(f"{k}={v}" for k, v in snippet.attributes.items())
            score = max(token.scores, default=float("nan"))
            print(f"| ...{snippet.text[-40:]} | {truth} | {token.best} | {score:.2f} |")
    scores = score_attributes(best, snippets)
    shown_scores = ", ".join(
        f"{name} {'—' if scores[name] is None else f'{scores[name]:.3f}'}"
        for name in ("recall", "precision", "confabulation")
    )
    print(f"\n{shown_scores} over {len(snippets)} held-out texts\n")
    return scores


def steering_check(
    nla: NLA, snippets: list[Snippet], attribute: str, alphas: list[float], samples: int
) -> list[dict]:
    """Edit `attribute` from the text's value to another; count both words in the completions
    without and with steering (same seeds)."""
    rng = random.Random(0)
    prompts = [s for s in snippets if attribute in s.attributes]
    rows = []
    for alpha in alphas:
        counts: Counter = Counter()
        for i, snippet in enumerate(prompts):
            original = snippet.attributes[attribute]
            edited = rng.choice([v for v in VALUES[attribute] if v != original])
            vector = steering_vector(
                nla, attribute_phrase(attribute, original), attribute_phrase(attribute, edited)
            )
            runs = compare_steering(
                nla,
                snippet.text,
                vector,
                alpha,
                samples=samples,
                temperature=1.0,
                max_new_tokens=12,
                seed=i,
            )
            for kind, texts in runs.items():
                words = Counter(w for t in texts for w in t.split())
                counts[kind, "original"] += words[original]
                counts[kind, "edited"] += words[edited]
        rows.append(
            {
                "alpha": alpha,
                "prompts": len(prompts),
                **{
                    f"{k}_{w}": counts[k, w]
                    for k in ("baseline", "steered")
                    for w in ("original", "edited")
                },
            }
        )
    print(f"Steering {attribute}: counts of the original and the edited value in the completions")
    print("| alpha | prompts | original: baseline -> steered | edited: baseline -> steered |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['alpha']} | {r['prompts']} | {r['baseline_original']} -> "
            f"{r['steered_original']} | {r['baseline_edited']} -> {r['steered_edited']} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", type=Path)
    parser.add_argument("--warm-start", action="store_true", help="the warm start, not RL")
    parser.add_argument("--texts", type=int, default=200)
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--alpha", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    parser.add_argument("--attribute", nargs="+", default=["colour", "who"])
    args = parser.parse_args()
    where = args.run / "checkpoints" / ("" if args.warm_start else "rl")
    nla = NLA.load(where / "av", where / "ar", target=str(args.run / "target"))
    snippets = held_out_snippets(args.run, max(args.texts, args.prompts))
    explain_check(nla, snippets[: args.texts], args.samples, shown=6)
    for attribute in args.attribute:
        steering_check(nla, snippets[: args.prompts], attribute, args.alpha, samples=4)


if __name__ == "__main__":
    main()
