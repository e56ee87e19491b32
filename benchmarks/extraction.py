"""Activation extraction speed (vectors/s) on the default tiny target, for several batch sizes.

Two paths are timed on the same toy-world documents:
  final-token  `extract_final_token_activations` on N snippets (word prefixes of the documents),
               as the toy pipeline's data stage runs it;
  nla-extract  `extract_corpus`, the engine behind `nla-extract`: random token prefixes of the
               documents (4 per document, about N in all), written as Parquet shards to a fresh
               temporary directory each time (tokenising, batching, writing and manifest included;
               model loading excluded).
Each point is the median of --repeats runs after one warm-up batch.

Usage: python benchmarks/extraction.py [--snippets 2048] [--batch-size 1 8 32 128] [--repeats 3]
       [--target DIR] [--path final-token nla-extract] [--device cpu|cuda] [--threads N]
       [--json PATH] [--quick]
Without --target the target is the default run's tiny architecture with random weights (speed does
not depend on the weights); --target takes a saved target, e.g. a run's target/ directory.
"""

from __future__ import annotations

import argparse
import tempfile
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

from nla_lightning.core.final_token import extract_final_token_activations
from nla_lightning.data.extract.run import extract_corpus
from nla_lightning.toy.world import generate_documents, make_snippets

LAYER = 2
PREFIXES_PER_DOC = 4


def load_target(directory: Path | None, device: str) -> tuple[Any, Any]:
    if directory is None:
        tokenizer = toy_tokenizer()
        return toy_target(tokenizer).to(device), tokenizer
    from nla_lightning.core.models import load_causal_lm, load_tokenizer

    return load_causal_lm(str(directory), device=device).eval(), load_tokenizer(str(directory))


def corpus(n_snippets: int) -> tuple[list[str], list[tuple[str, str]]]:
    """N snippet texts, and enough documents for about N nla-extract prefixes."""
    n_docs = max(1, -(-n_snippets // PREFIXES_PER_DOC))
    documents = generate_documents(n_docs, seed=0)
    snippets = [s.text for d in documents for s in make_snippets(d, PREFIXES_PER_DOC, seed=0)]
    while len(snippets) < n_snippets:  # short documents give fewer snippets
        snippets += snippets[: n_snippets - len(snippets)]
    return snippets[:n_snippets], [(str(d.doc_id), d.text) for d in documents]


def time_final_token(model, tokenizer, texts, batch_size, repeats, device) -> dict[str, Any]:
    def run(rows: list[str]) -> torch.Tensor:
        acts, _ = extract_final_token_activations(
            model, tokenizer, rows, LAYER, batch_size=batch_size, progress=False
        )
        return acts

    run(texts[:batch_size])  # warm-up
    seconds = []
    for _ in range(repeats):
        s, acts = timed(lambda: run(texts), device)
        seconds.append(s)
    return {"vectors": int(acts.shape[0]), "seconds": seconds}


def time_nla_extract(model, tokenizer, meta, documents, batch_size, repeats, device):
    def run() -> Any:
        with tempfile.TemporaryDirectory(prefix="nla-bench-extract-") as out:
            return extract_corpus(
                model,
                tokenizer,
                meta,
                documents,
                out,
                {"train": 1.0},
                prefixes_per_doc=PREFIXES_PER_DOC,
                min_tokens=3,
                max_tokens=512,
                batch_size=batch_size,
                progress=False,
            )

    run_first = documents[: max(1, batch_size // PREFIXES_PER_DOC)]
    with tempfile.TemporaryDirectory(prefix="nla-bench-extract-") as out:  # warm-up
        extract_corpus(
            model,
            tokenizer,
            meta,
            run_first,
            out,
            {"train": 1.0},
            min_tokens=3,
            batch_size=batch_size,
            progress=False,
        )
    seconds, vectors = [], 0
    for _ in range(repeats):
        s, report = timed(run, device)
        seconds.append(s)
        vectors = report.vectors
    return {"vectors": vectors, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", type=Path, default=None, help="a saved target directory")
    parser.add_argument("--snippets", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--path",
        nargs="+",
        choices=("final-token", "nla-extract"),
        default=["final-token", "nla-extract"],
    )
    add_common_args(parser)
    args = parser.parse_args()
    if args.quick:
        args.snippets, args.batch_size, args.repeats = 64, [8, 32], 1
    info = setup(args)
    model, tokenizer = load_target(args.target, args.device)
    meta = toy_meta(tokenizer, model, LAYER)
    texts, documents = corpus(args.snippets)
    n_tokens = [len(r) for r in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    print(
        f"target: {args.target or 'default tiny target, random weights'}  "
        f"d_model {model.config.hidden_size}  layer {LAYER}  {len(texts)} snippets "
        f"(mean {sum(n_tokens) / len(n_tokens):.1f} tokens)  {len(documents)} documents  "
        f"median of {args.repeats}\n"
    )
    results = []
    for path in args.path:
        for batch_size in args.batch_size:
            if path == "final-token":
                r = time_final_token(model, tokenizer, texts, batch_size, args.repeats, args.device)
            else:
                r = time_nla_extract(
                    model, tokenizer, meta, documents, batch_size, args.repeats, args.device
                )
            r.update(path=path, batch_size=batch_size, median_s=median(r["seconds"]))
            r["vectors_per_s"] = r["vectors"] / r["median_s"]
            results.append(r)
    headers = ["path", "batch size", "vectors", "median s", "vectors/s"]
    rows = [
        [r["path"], r["batch_size"], r["vectors"], r["median_s"], r["vectors_per_s"]]
        for r in results
    ]
    print(markdown_table(headers, rows))
    write_json(
        args.json,
        {
            "benchmark": "extraction",
            "machine": info,
            "target": str(args.target) if args.target else None,
            "layer": LAYER,
            "snippets": len(texts),
            "mean_tokens": sum(n_tokens) / len(n_tokens),
            "quick": args.quick,
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
