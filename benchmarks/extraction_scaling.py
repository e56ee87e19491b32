"""How corpus extraction (one forward per document) scales with batch size and document length.

Usage: python benchmarks/extraction_scaling.py [--target DIR] [--layer L] [--injection-char C]
       [--positions 10] [--docs 16]
       [--batch-sizes 1 4 8 16] [--lengths 128 256 512 1024] [--length 512] [--batch-size 8]
       [--repeats 1] [--device cpu|cuda] [--threads N] [--json PATH] [--quick]
Two sweeps of `extract_corpus` (the engine of `nla-extract` and `data=corpus`) on the same kind
of documents as benchmarks/extraction_positions.py (prose of the Python language reference,
joined to about the asked length; SmolLM2-135M-Instruct without --target): batch size at
`--length` tokens per document, and document length at `--batch-size`. Each row gives
vectors/s and document tokens read per second (each document is read once, up to its last
sampled position).
"""

from __future__ import annotations

import argparse
from typing import Any

from _common import add_common_args, markdown_table, median, setup, timed, write_json
from extraction_positions import add_target_args, load_target, long_documents, per_document


def measure(model, tokenizer, meta, documents, args, batch, length) -> dict[str, Any]:
    run = argparse.Namespace(min_tokens=args.min_tokens, max_tokens=length, batch_size=batch)
    seconds, vectors = [], {}
    for _ in range(args.repeats):
        s, vectors = timed(
            lambda: per_document(model, tokenizer, meta, documents, run, args.positions),
            args.device,
        )
        seconds.append(s)
    # Each document is read up to its last sampled position (n_raw_tokens of its deepest row).
    deepest: dict[str, int] = {}
    for doc_id, n in vectors:
        deepest[doc_id] = max(n, deepest.get(doc_id, 0))
    tokens = sum(deepest.values())
    s = median(seconds)
    return {
        "batch_size": batch,
        "length": length,
        "vectors": len(vectors),
        "tokens_read": tokens,
        "seconds": seconds,
        "vectors_per_s": len(vectors) / s,
        "tokens_per_s": tokens / s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_target_args(parser)
    parser.add_argument("--positions", type=int, default=10, help="sampled per document")
    parser.add_argument("--docs", type=int, default=16)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 256, 512, 1024])
    parser.add_argument("--length", type=int, default=512, help="of the batch-size sweep")
    parser.add_argument("--batch-size", type=int, default=8, help="of the length sweep")
    parser.add_argument("--min-tokens", type=int, default=51)
    parser.add_argument("--repeats", type=int, default=1)
    add_common_args(parser)
    args = parser.parse_args()
    if args.quick:
        args.docs, args.positions, args.min_tokens = 4, 3, 8
        args.batch_sizes, args.lengths, args.length, args.batch_size = [1, 2], [32, 48], 48, 2
    info = setup(args)
    target, tokenizer, model, layer, meta = load_target(args)
    print(
        f"target: {target}  layer {layer}  {args.docs} documents  {args.positions} positions "
        f"per document  median of {args.repeats}\n"
    )
    documents = {n: long_documents(tokenizer, args.docs, n) for n in {*args.lengths, args.length}}
    by_batch = [
        measure(model, tokenizer, meta, documents[args.length], args, b, args.length)
        for b in args.batch_sizes
    ]
    by_length = [
        measure(model, tokenizer, meta, documents[n], args, args.batch_size, n)
        for n in args.lengths
    ]
    headers = ["batch size", "doc tokens", "vectors", "tokens read", "vectors/s", "tokens/s"]
    for title, rows in ((f"batch size, {args.length}-token documents", by_batch),
                        (f"document length, batch {args.batch_size}", by_length)):  # fmt: skip
        print(f"{title}:\n")
        table = [
            [r["batch_size"], r["length"], r["vectors"], r["tokens_read"], r["vectors_per_s"],
             r["tokens_per_s"]]
            for r in rows
        ]  # fmt: skip
        print(markdown_table(headers, table) + "\n")
    write_json(
        args.json,
        {
            "benchmark": "extraction_scaling",
            "machine": info,
            "target": str(target),
            "layer": layer,
            "documents": args.docs,
            "positions": args.positions,
            "quick": args.quick,
            "by_batch_size": by_batch,
            "by_length": by_length,
        },
    )


if __name__ == "__main__":
    main()
