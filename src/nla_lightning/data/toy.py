"""Toy-world datasets: snippets, their activations and template explanations, as Parquet splits
with the ground truth kept beside every row."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from nla_lightning.core.final_token import extract_final_token_activations
from nla_lightning.core.meta import NLAMeta
from nla_lightning.core.verbalizer import format_response
from nla_lightning.data.splits import split_of
from nla_lightning.data.store import write_activations
from nla_lightning.toy.summaries import write_explanation
from nla_lightning.toy.world import Document, make_snippets


def build_toy_splits(
    documents: list[Document],
    target_model: torch.nn.Module,
    tokenizer: Any,
    meta: NLAMeta,
    out_dir: Path,
    fractions: Mapping[str, float],
    snippets_per_doc: int,
    seed: int,
    writer: Mapping[str, Any],
    batch_size: int = 64,
    min_words: int = 3,
) -> dict[str, Path]:
    """Write one Parquet file (+ sidecar) per split; returns split name -> path."""
    snippets = [
        s for doc in documents for s in make_snippets(doc, snippets_per_doc, seed, min_words)
    ]
    activations, n_tokens = extract_final_token_activations(
        target_model, tokenizer, [s.text for s in snippets], meta.layer, batch_size
    )
    prompt = meta.actor_message()
    rows: dict[str, list[int]] = {name: [] for name in fractions}
    explanations = []
    for i, snippet in enumerate(snippets):
        rows[split_of(snippet.doc_id, fractions, seed)].append(i)
        # One RNG per snippet keeps explanations independent of corpus size and order.
        rng = random.Random(f"{seed}:writer:{snippet.doc_id}:{snippet.n_words}")
        explanations.append(
            write_explanation(
                snippet,
                rng,
                p_final_word=writer["p_final_word"],
                p_attribute=writer["p_attribute"],
                p_unknown=writer.get("p_unknown", 0.0),
                p_next=writer["p_next"],
            )
        )
    paths = {}
    for name, index in rows.items():
        if not index:
            continue
        columns = {
            "prompt": [prompt] * len(index),
            "response": [format_response(explanations[i]) for i in index],
            "explanation": [explanations[i] for i in index],
            "doc_id": [snippets[i].doc_id for i in index],
            "n_raw_tokens": [n_tokens[i] for i in index],
            "activation_layer": [meta.layer] * len(index),
            "text": [snippets[i].text for i in index],
            "ground_truth": [json.dumps(snippets[i].ground_truth) for i in index],
        }
        paths[name] = write_activations(
            out_dir / f"{name}.parquet", activations[torch.tensor(index)], columns, meta
        )
    return paths


def toy_snippets(columns: Mapping[str, Sequence[Any]]) -> list | None:
    """Ground-truth snippets of a toy-world split's rows, None for other data."""
    if "ground_truth" not in columns:
        return None
    from nla_lightning.toy.world import Snippet

    return [
        Snippet.from_ground_truth(text, truth)
        for text, truth in zip(columns["text"], columns["ground_truth"], strict=True)
    ]
