"""Rows, report and the base class every summary writer shares (prompt, cache, parse, count)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from tqdm.auto import tqdm

from nla_lightning.writers.cache import AnswerCache, cache_key
from nla_lightning.writers.instruction import build_prompt, instruction_digest
from nla_lightning.writers.parsing import FEATURE_SEPARATOR, ending_feature, parse_summary

ROW_STATUSES: tuple[str, ...] = ("written", "dropped", "failed")


class CutOffAnswer(str):
    """A raw answer that did not end normally: the token limit (OpenAI `finish_reason:
    "length"`, Anthropic `stop_reason: "max_tokens"`, a local model that reached
    max_new_tokens without a stop token) or the server (a content filter) cut it off.

    It is parsed and used for this run like any other answer: a closed <analysis> block before
    the cut is a whole summary, and the sentence rule is made for unclosed blocks. It is never
    cached, so the next run asks again: an answer cut by a limit is no answer to keep, and a
    rerun with a larger limit must not find it either way."""

    reason: str

    def __new__(cls, text: str, reason: str) -> CutOffAnswer:
        answer = super().__new__(cls, text)
        answer.reason = reason
        return answer


@dataclass
class WrittenRow:
    """One text's outcome: a summary when written, else why it was dropped or failed."""

    summary: str | None
    status: str
    reason: str = ""


@dataclass
class WriterReport:
    """Counts over one `write` call; `cached` and `cut_off` rows are also counted in the other
    three (`cut_off`: fresh answers that did not end normally, used but not cached)."""

    written: int
    dropped: int
    failed: int
    cached: int
    cut_off: int = 0

    def __str__(self) -> str:
        total = self.written + self.dropped + self.failed
        cut = f", {self.cut_off} cut off, not cached" if self.cut_off else ""
        return (
            f"{total} rows: {self.written} written, {self.dropped} dropped, "
            f"{self.failed} failed ({self.cached} from cache{cut})"
        )


class SummaryWriter:
    """Turns texts into summaries; subclasses only implement `_answer_many`."""

    name: ClassVar[str] = "base"
    # Constructor arguments that cannot change a raw answer, so they stay out of the cache key:
    # the cache itself and the parsing, which runs on the cached raw answer. Every other
    # argument must show in answer_settings(); tests/writers/test_cache_key.py holds each
    # writer's constructor to this split, so a new argument cannot be left out unnoticed.
    settings_outside_key: ClassVar[frozenset[str]] = frozenset(
        {"cache_dir", "min_features", "sentence_rule", "ending_words"}
    )

    def __init__(
        self,
        model: str,
        cache_dir: str | os.PathLike[str] | None = None,
        min_features: int = 2,
        sentence_rule: bool = False,
        instruction: str = "release",
        ending_words: int = 0,
    ) -> None:
        build_prompt("", instruction)  # checks the name
        if ending_words < 0:
            raise ValueError(
                f"ending_words must be >= 0 (0 = off), got {ending_words}; it is how many of "
                "the text's last words the rule-written first feature quotes"
            )
        self.instruction = instruction
        self.model = model
        self.cache = AnswerCache(cache_dir) if cache_dir is not None else None
        self.min_features = min_features
        # parsing.parse_summary: an unclosed <analysis> block gives its first sentences.
        self.sentence_rule = sentence_rule
        # > 0: every written summary starts with a rule-written feature quoting the text's
        # last words (parsing.ending_feature). Added after parsing, so not in the cache key.
        self.ending_words = ending_words

    def answer_settings(self) -> dict[str, Any]:
        """Every setting that can change a raw answer, JSON values only: with the prompt, it is
        the cache key (writers/cache.py). Subclasses extend their parent's dict."""
        return {
            "writer": self.name,
            "model": self.model,
            "instruction": self.instruction,
            # The prompt holds the text as well; the digest keeps the key honest if the prompt
            # is ever built differently (a system message).
            "instruction_sha256": instruction_digest(self.instruction),
        }

    def _answer_many(
        self, prompts: Sequence[str], on_done: Callable[[int], None]
    ) -> list[str | Exception]:
        """Raw answers in input order; an Exception marks a row that could not be answered."""
        raise NotImplementedError(f"{type(self).__name__} must implement _answer_many")

    def write(
        self, texts: Sequence[str], progress: bool = True
    ) -> tuple[list[WrittenRow], WriterReport]:
        """Summarise every text; a rerun with the same answer settings is served from the
        cache without new requests."""
        prompts = [build_prompt(text, self.instruction) for text in texts]
        settings = self.answer_settings()
        keys = [cache_key(settings, prompt) for prompt in prompts]
        answers: list[str | Exception | None] = [None] * len(prompts)
        cached = 0
        if self.cache is not None:
            for i, key in enumerate(keys):
                answers[i] = self.cache.get(key)
                cached += answers[i] is not None
        todo = [i for i, answer in enumerate(answers) if answer is None]

        desc = f"writing summaries ({self.name})"
        bar = tqdm(total=len(prompts), desc=desc, disable=not progress)
        try:
            bar.update(cached)
            if todo:
                fresh = self._answer_many([prompts[i] for i in todo], bar.update)
                if len(fresh) != len(todo):
                    raise RuntimeError(
                        f"{type(self).__name__}._answer_many returned {len(fresh)} answers "
                        f"for {len(todo)} prompts; it must return exactly one per prompt"
                    )
                for i, answer in zip(todo, fresh, strict=True):
                    answers[i] = answer
                    if self.cache is not None and _cacheable(answer):
                        self.cache.put(keys[i], answer)
        finally:
            bar.close()

        rows = [self._row(answer) for answer in answers]
        if self.ending_words:
            for row, text in zip(rows, texts, strict=True):
                if row.summary is not None:
                    ending = ending_feature(text, self.ending_words)
                    row.summary = ending + FEATURE_SEPARATOR + row.summary
        report = WriterReport(
            written=sum(r.status == "written" for r in rows),
            dropped=sum(r.status == "dropped" for r in rows),
            failed=sum(r.status == "failed" for r in rows),
            cached=cached,
            cut_off=sum(isinstance(a, CutOffAnswer) for a in answers),
        )
        return rows, report

    def _row(self, answer: str | Exception | None) -> WrittenRow:
        if not isinstance(answer, str):
            return WrittenRow(None, "failed", reason=str(answer))
        summary, status = parse_summary(answer, self.min_features, self.sentence_rule)
        if status == "written":
            return WrittenRow(summary, "written")
        if isinstance(answer, CutOffAnswer):
            return WrittenRow(None, "dropped", reason=f"{status} (cut off: {answer.reason})")
        return WrittenRow(None, "dropped", reason=status)


def _cacheable(answer: str | Exception) -> bool:
    """Only answers that ended normally are cached. A failure (an Exception) and a cut-off
    answer are asked for again on the next run. A complete answer that the parser drops (no
    <analysis> block, too few features) IS cached: the writer ended it on its own, the same
    settings would give it again (greedy or temperature 0), and a rerun must not pay for it
    twice; to ask again, change a setting in the key or clear the cache directory."""
    return isinstance(answer, str) and not isinstance(answer, CutOffAnswer)
