"""A real corpus: extract prefix activations, have an LLM write the warm-start summaries, and
write the training splits in the same Parquet layout as the toy world."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from nla_lightning.core.meta import NLAMeta
from nla_lightning.core.verbalizer import format_response
from nla_lightning.data.builtin_corpora import builtin_documents
from nla_lightning.data.extract import extract_corpus, iter_documents, read_split
from nla_lightning.data.store import write_activations
from nla_lightning.errors import NLAConfigError
from nla_lightning.settings.data import CorpusDataSettings

# Splits whose rows need a written summary; the RL part trains on activations alone.
SUMMARISED = ("av_sft", "ar_sft", "eval")


def corpus_documents(data: CorpusDataSettings) -> Iterable[tuple[str, str]]:
    """(doc_id, text) of the built-in corpus, then the configured files and/or Hugging Face
    dataset (the first `data.n_docs` of them when set)."""
    if not data.files and not data.hf_dataset and not data.builtin:
        raise NLAConfigError(
            "data=corpus needs documents: pass data.files=[path/a.txt,dir/] (txt, jsonl, "
            "parquet), data.hf_dataset=<name> or data.builtin=python_reference"
        )
    documents: Iterable[tuple[str, str]] = iter(())
    if data.builtin:
        documents = builtin_documents(data.builtin)
    if data.files or data.hf_dataset:
        documents = itertools.chain(
            documents,
            iter_documents(
                files=list(data.files) or None,
                hf_dataset=data.hf_dataset,
                hf_split=data.hf_split,
                text_field=data.text_field,
                id_field=data.id_field,
            ),
        )
    return documents if data.n_docs is None else itertools.islice(documents, data.n_docs)


def build_corpus_splits(
    documents: Iterable[tuple[str, str]],
    model: torch.nn.Module,
    tokenizer: Any,
    meta: NLAMeta,
    extraction_dir: Path,
    data_dir: Path,
    data: CorpusDataSettings,
    writer_cfg: Mapping[str, Any],
    seed: int,
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Extract (resumable, into `extraction_dir`), summarise, and write
    `data_dir`/<split>.parquet; returns the paths and what extraction and the writer did."""
    from nla_lightning.writers import build_writer

    extracted = extraction_dir
    extraction = extract_corpus(
        model,
        tokenizer,
        meta,
        documents,
        extracted,
        fractions=data.fractions,
        seed=seed,
        prefixes_per_doc=data.prefixes_per_doc,
        min_tokens=data.min_tokens,
        max_tokens=data.max_tokens,
        batch_size=data.extract_batch_size,
        shard_rows=data.shard_rows,
        files=list(data.files) or None,
    )
    print(extraction)
    writer = build_writer(dict(writer_cfg))
    done: dict[str, Any] = {"extraction": str(extraction), "writer": {}}
    paths = {}
    for split in data.fractions:
        activations, columns = read_split(extracted, split, expect=meta)
        if len(activations) == 0:
            continue
        keep = list(range(len(activations)))
        explanations = None
        if split in SUMMARISED:
            rows, written = writer.write(columns["text"])
            done["writer"][split] = str(written)
            print(f"{split}: {written}")
            keep = [i for i, row in enumerate(rows) if row.status == "written"]
            if not keep:
                raise NLAConfigError(
                    f"the writer produced no usable summary for the {split} split ({written}); "
                    "check the endpoint and model (answers need an <analysis> block with 2+ "
                    "features)"
                )
            explanations = [rows[i].summary for i in keep]
        out = {
            "prompt": [meta.actor_message()] * len(keep),
            "doc_id": [columns["doc_id"][i] for i in keep],
            "n_raw_tokens": [columns["n_raw_tokens"][i] for i in keep],
            "activation_layer": [meta.layer] * len(keep),
            "text": [columns["text"][i] for i in keep],
        }
        if explanations is not None:
            out["explanation"] = explanations
            out["response"] = [format_response(e) for e in explanations]
        paths[split] = write_activations(
            data_dir / f"{split}.parquet", activations[torch.tensor(keep)], out, meta
        )
    return paths, done
