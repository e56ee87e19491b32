"""LLM writers of warm-start summaries: local transformers, OpenAI-compatible, Anthropic."""

from nla_lightning.writers.anthropic import AnthropicWriter
from nla_lightning.writers.base import CutOffAnswer, SummaryWriter, WriterReport, WrittenRow
from nla_lightning.writers.cache import AnswerCache, cache_key
from nla_lightning.writers.factory import WRITERS, build_writer
from nla_lightning.writers.instruction import INSTRUCTION, build_prompt
from nla_lightning.writers.local import LocalWriter
from nla_lightning.writers.openai import OpenAIWriter
from nla_lightning.writers.parsing import parse_summary

__all__ = [
    "INSTRUCTION",
    "WRITERS",
    "AnswerCache",
    "AnthropicWriter",
    "CutOffAnswer",
    "LocalWriter",
    "OpenAIWriter",
    "SummaryWriter",
    "WriterReport",
    "WrittenRow",
    "build_prompt",
    "build_writer",
    "cache_key",
    "parse_summary",
]
