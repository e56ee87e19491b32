"""Rows, report and the base class every summary writer shares (prompt, cache, parse, count)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from tqdm.auto import tqdm

from nla_lightning.writers.cache import AnswerCache, cache_key
from nla_lightning.writers.instruction import build_prompt
from nla_lightning.writers.parsing import FEATURE_SEPARATOR, ending_feature, parse_summary

ROW_STATUSES: tuple[str, ...] = ("written", "dropped", "failed")


@dataclass
class WrittenRow:
    """One text's outcome: a summary when written, else why it was dropped or failed."""

    summary: str | None
    status: str
    reason: str = ""


@dataclass
class WriterReport:
    """Counts over one `write` call; `cached` rows are also counted in the other three."""

    written: int
    dropped: int
    failed: int
    cached: int

    def __str__(self) -> str:
        total = self.written + self.dropped + self.failed
        return (
            f"{total} rows: {self.written} written, {self.dropped} dropped, "
            f"{self.failed} failed ({self.cached} from cache)"
        )


class SummaryWriter:
    """Turns texts into summaries; subclasses only implement `_answer_many`."""

    name: ClassVar[str] = "base"

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

    def generation_settings(self) -> str:
        """What else than (writer, model, prompt) decides an answer; part of the cache key."""
        return ""

    def _answer_many(
        self, prompts: Sequence[str], on_done: Callable[[int], None]
    ) -> list[str | Exception]:
        """Raw answers in input order; an Exception marks a row that could not be answered."""
        raise NotImplementedError(f"{type(self).__name__} must implement _answer_many")

    def write(
        self, texts: Sequence[str], progress: bool = True
    ) -> tuple[list[WrittenRow], WriterReport]:
        """Summarise every text; reruns are served from the cache without new requests."""
        prompts = [build_prompt(text, self.instruction) for text in texts]
        model = self.model + (f"|{extra}" if (extra := self.generation_settings()) else "")
        keys = [cache_key(self.name, model, prompt) for prompt in prompts]
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
                    # Only real answers are cached, so failures are retried on the next run.
                    if self.cache is not None and isinstance(answer, str):
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
        )
        return rows, report

    def _row(self, answer: str | Exception | None) -> WrittenRow:
        if not isinstance(answer, str):
            return WrittenRow(None, "failed", reason=str(answer))
        summary, status = parse_summary(answer, self.min_features, self.sentence_rule)
        if status == "written":
            return WrittenRow(summary, "written")
        return WrittenRow(None, "dropped", reason=status)
