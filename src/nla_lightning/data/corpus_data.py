"""A real corpus: extract prefix activations, have an LLM write the warm-start summaries, and
write the training splits in the same Parquet layout as the toy world."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from nla_lightning.data.store import write_activations
from nla_lightning.errors import NLAConfigError
from nla_lightning.extract import extract_corpus, iter_documents, read_split
from nla_lightning.meta import NLAMeta
from nla_lightning.verbalizer import format_response

# Splits whose rows need a written summary; the RL part trains on activations alone.
SUMMARISED = ("av_sft", "ar_sft", "eval")


def corpus_documents(data_cfg: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    """(doc_id, text) of the configured files and/or Hugging Face dataset."""
    if not data_cfg["files"] and not data_cfg["hf_dataset"]:
        raise NLAConfigError(
            "data=corpus needs documents: pass data.files=[path/a.txt,dir/] (txt, jsonl, "
            "parquet) or data.hf_dataset=<name>"
        )
    return iter_documents(
        files=list(data_cfg["files"]) or None,
        hf_dataset=data_cfg["hf_dataset"],
        hf_split=data_cfg["hf_split"],
        text_field=data_cfg["text_field"],
        id_field=data_cfg["id_field"],
    )


def build_corpus_splits(
    documents: Iterable[tuple[str, str]],
    model: torch.nn.Module,
    tokenizer: Any,
    meta: NLAMeta,
    out_dir: Path,
    data_cfg: Mapping[str, Any],
    writer_cfg: Mapping[str, Any],
    seed: int,
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Extract (resumable, under out_dir/extract), summarise, and write data/<split>.parquet."""
    from nla_lightning.writers import build_writer

    extracted = out_dir / "extract"
    extraction = extract_corpus(
        model,
        tokenizer,
        meta,
        documents,
        extracted,
        fractions=data_cfg["fractions"],
        seed=seed,
        prefixes_per_doc=data_cfg["prefixes_per_doc"],
        min_tokens=data_cfg["min_tokens"],
        max_tokens=data_cfg["max_tokens"],
        batch_size=data_cfg["extract_batch_size"],
        shard_rows=data_cfg["shard_rows"],
    )
    print(extraction)
    writer = build_writer(dict(writer_cfg))
    report: dict[str, Any] = {"extraction": str(extraction), "writer": {}}
    paths = {}
    for split in data_cfg["fractions"]:
        activations, columns = read_split(extracted, split, expect=meta)
        if len(activations) == 0:
            continue
        keep = list(range(len(activations)))
        explanations = None
        if split in SUMMARISED:
            rows, written = writer.write(columns["text"])
            report["writer"][split] = str(written)
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
            out_dir / "data" / f"{split}.parquet", activations[torch.tensor(keep)], out, meta
        )
    return paths, report
