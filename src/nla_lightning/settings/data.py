"""Settings of the data stage: the toy world's documents or a real corpus (`data.*`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from nla_lightning.settings import checks

SPLITS = ("av_sft", "ar_sft", "rl", "eval")


def _toy_fractions() -> dict[str, float]:
    # Document-level split; the toy world's documents are short and cheap, so a tenth is held out.
    return {"av_sft": 0.3, "ar_sft": 0.3, "rl": 0.3, "eval": 0.1}


def _release_fractions() -> dict[str, float]:
    # The release's 25/25/50 with a twentieth of the RL part's documents held out.
    return {"av_sft": 0.25, "ar_sft": 0.25, "rl": 0.45, "eval": 0.05}


@dataclass
class ToyDataSettings:
    """Synthetic documents with ground-truth attributes, summarised by their template."""

    name: str = "toy"
    n_docs: int = 5000
    snippets_per_doc: int = 4
    min_words: int = 3
    extract_batch_size: int = 128
    fractions: dict[str, float] = field(default_factory=_toy_fractions)

    def __post_init__(self) -> None:
        for key in ("n_docs", "snippets_per_doc", "min_words", "extract_batch_size"):
            checks.positive(f"data.{key}", getattr(self, key))
        checks.fractions("data.fractions", self.fractions, SPLITS)


@dataclass
class CorpusDataSettings:
    """Local files (.txt, .jsonl, .parquet) and/or a Hugging Face dataset; an LLM summarises.

    The extraction defaults are the release's recipe (method.md, "The official recipe"):
    documents up to 4096 tokens, 10 positions per document at token index >= 50 (earlier
    positions are noisy), special-token positions skipped, splits 25/25/45/5."""

    name: str = "corpus"
    files: list[str] = field(default_factory=list)
    # Text that ships with Python (data/builtin_corpora.py): python_reference. None = off.
    builtin: str | None = None
    hf_dataset: str | None = None
    hf_split: str = "train"
    text_field: str = "text"
    id_field: str | None = None
    n_docs: int | None = None  # read at most this many documents (None: all of them)
    prefixes_per_doc: int = 10
    # Prefix lengths in tokens, special tokens included; the activation is read at the prefix's
    # last token, so min_tokens=51 means token index >= 50.
    min_tokens: int = 51
    max_tokens: int = 4096
    extract_batch_size: int = 32
    extract_4bit: bool = False  # the target in NF4 for extraction (less memory, other values)
    shard_rows: int = 1024
    fractions: dict[str, float] = field(default_factory=_release_fractions)

    def __post_init__(self) -> None:
        for key in (
            "prefixes_per_doc",
            "min_tokens",
            "max_tokens",
            "extract_batch_size",
            "shard_rows",
        ):
            checks.positive(f"data.{key}", getattr(self, key))
        if self.max_tokens < self.min_tokens:
            raise checks.NLAConfigError(
                f"data.max_tokens={self.max_tokens} < data.min_tokens={self.min_tokens}: "
                "raise max_tokens or lower min_tokens"
            )
        checks.optional_positive("data.n_docs", self.n_docs)
        checks.fractions("data.fractions", self.fractions, SPLITS)


DATA_SETTINGS = {"toy": ToyDataSettings, "corpus": CorpusDataSettings}
