"""Fixtures for the extraction tests: toy-world documents the toy tokenizer knows."""

from __future__ import annotations

from pathlib import Path

import pytest

FRACTIONS = {"av_sft": 0.3, "ar_sft": 0.3, "rl": 0.4}


@pytest.fixture(scope="session")
def toy_docs() -> list[tuple[str, str]]:
    from nla_lightning.toy.world import generate_documents

    return [(f"doc-{d.doc_id:03d}", d.text) for d in generate_documents(30, seed=0)]


@pytest.fixture(scope="session")
def docs_dir(tmp_path_factory, toy_docs) -> Path:
    """The toy documents as one .txt file each (doc_id = file stem)."""
    path = tmp_path_factory.mktemp("docs")
    for doc_id, text in toy_docs:
        (path / f"{doc_id}.txt").write_text(text, encoding="utf-8")
    return path
