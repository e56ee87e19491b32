"""Dataset files in the release's documented layout (method.md, "Data" and "Official checkpoint
layout"), written with pyarrow and yaml directly, never with nla_lightning's own writer: the
reader is tested against the format, not against itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

D_MODEL = 16
LAYER = 20
ACTOR = (
    "You are a meticulous AI researcher conducting an important investigation into activation "
    "vectors from a language model. Your overall task is to describe the semantic content of "
    "that activation vector.\n\n"
    "We will pass the vector enclosed in <concept> tags into your context. You must then "
    "produce an explanation for the vector, enclosed within <explanation> tags. The "
    "explanation consists of 2-3 text snippets describing that vector.\n\n"
    "Here is the vector:\n\n"
    "<concept>{injection_char}</concept>\n\n"
    "Please provide an explanation."
)
CRITIC = "Summary of the following text: <text>{explanation}</text> <summary>"
MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])


def sidecar(stage: str, rows: int, d_model: int = D_MODEL) -> dict:
    """A dataset's `{file}.nla_meta.yaml` as the release spells it (schema_version 1)."""
    return {
        "kind": "nla_dataset",
        "schema_version": 1,
        "dataset_id": f"{stage}_qwen7b_fineweb",
        "stage": stage,
        "row_count": rows,
        "extraction": {
            "base_model": "Qwen/Qwen2.5-7B-Instruct",
            "d_model": d_model,
            "layer_index": LAYER,
            "norm": "none",
            "corpus": "HuggingFaceFW/fineweb",
            "corpus_slice": {"start": 0, "end": rows},
            "positions_per_doc": 10,
        },
        "keep_debug_metadata": True,
        "tokens": {
            "injection_char": "㈎",
            "injection_token_id": 149705,
            "injection_left_neighbor_id": 29,
            "injection_right_neighbor_id": 522,
            "critic_suffix_ids": [1318, 29, 366, 1708, 29] if stage == "ar_sft" else None,
        },
        "prompt_templates": {"actor": ACTOR, "critic": CRITIC},
        "parent_datasets": ["base_qwen7b_fineweb"],
        "created_at": "2025-06-01T00:00:00+00:00",
        "created_by": "release",
    }


def write_sidecar(path: Path, stage: str, rows: int, d_model: int = D_MODEL) -> Path:
    out = path.with_name(path.name + ".nla_meta.yaml")
    out.write_text(yaml.safe_dump(sidecar(stage, rows, d_model), allow_unicode=True), "utf-8")
    return out


def random_vectors(n: int, d_model: int = D_MODEL, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d_model), dtype=np.float32) * 40


def fixed_size_vectors(vectors: np.ndarray) -> pa.Array:
    """FixedSizeList<float32>[d], as the release writes `activation_vector`."""
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


def provenance(n: int) -> dict[str, pa.Array]:
    return {
        "n_raw_tokens": pa.array(np.arange(60, 60 + n), pa.int64()),
        "activation_layer": pa.array([LAYER] * n, pa.int64()),
        "doc_id": pa.array([f"doc-{i // 10}" for i in range(n)], pa.string()),
        "detokenized_text_truncated": pa.array([f"text {i}" for i in range(n)], pa.string()),
    }


def chat_prompts(n: int) -> pa.Array:
    """One user message: the actor template with the literal `<INJECT>` for the character."""
    message = [{"role": "user", "content": ACTOR.replace("{injection_char}", "<INJECT>")}]
    return pa.array([message] * n, pa.list_(MESSAGE))


def write_table(
    path: Path, stage: str, columns: dict[str, pa.Array], d_model: int = D_MODEL
) -> Path:
    """A Parquet file and its sidecar, which records `d_model` whatever the vectors' width."""
    table = pa.table(columns)
    pq.write_table(table, path)
    write_sidecar(path, stage, table.num_rows, d_model)
    return path


def write_av_sft(path: Path, vectors: np.ndarray, texts: list[str]) -> Path:
    return write_table(
        path,
        "av_sft",
        {
            "prompt": chat_prompts(len(texts)),
            "response": pa.array([f"<explanation>\n{t}\n</explanation>" for t in texts]),
            "activation_vector": fixed_size_vectors(vectors),
            **provenance(len(texts)),
        },
    )


def write_rl(path: Path, vectors: np.ndarray) -> Path:
    return write_table(
        path,
        "rl",
        {
            "prompt": chat_prompts(len(vectors)),
            "activation_vector": fixed_size_vectors(vectors),
            **provenance(len(vectors)),
        },
    )


def write_ar_sft(path: Path, vectors: np.ndarray, prompts: list[str]) -> Path:
    """`prompts`: the whole AR inputs, CRITIC.format(explanation=e)."""
    return write_table(
        path,
        "ar_sft",
        {
            "prompt": pa.array(prompts, pa.string()),
            "activation_vector": fixed_size_vectors(vectors),
            **provenance(len(prompts)),
        },
    )
