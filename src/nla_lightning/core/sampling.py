"""Batched, KV-cached sampling for the AV: the part of `generate` the AV uses, without its
per-token bookkeeping.

Every row shares one prompt (no padding, no attention mask), so a decode step is one model call
on [N, 1] tokens plus a few tensor ops. The distribution is generate's with temperature T, no
top-k / top-p, suppressed tokens and `min_new_tokens` (stop tokens held back until then); with
the same seed it draws the same tokens, since the one random call is the same `multinomial`.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache, StaticCache

from nla_lightning.core.lora import base_model
from nla_lightning.errors import NLAConfigError

# How often (in tokens) to ask whether every row has stopped: each ask waits for the device.
STOP_CHECK_EVERY = 8


def with_cache(model: nn.Module, cache: Any) -> dict[str, Any]:
    """The keyword that hands `cache` to this model's forward: `cache` in the transformers
    versions that renamed it (they warn on the old name), `past_key_values` before."""
    parameters = inspect.signature(base_model(model).forward).parameters
    return {"cache" if "cache" in parameters else "past_key_values": cache}


@torch.no_grad()
def sample_responses(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    max_new_tokens: int,
    stop_ids: Sequence[int],
    pad_id: int,
    temperature: float = 1.0,
    min_new_tokens: int = 0,
    suppress_ids: Sequence[int] = (),
    decoder: CompiledDecoder | None = None,
) -> torch.Tensor:
    """Response ids [N, T<=max_new_tokens] after the (unpadded) prompts [N, P]: each row up to and
    including its first stop token, `pad_id` after it (T: the longest row, as generate returns).
    `decoder`: decode through its compiled step over a static cache (same tokens, fewer
    Python-level operations per token, after a one-off compile)."""
    n, width = prompt_ids.shape
    device = prompt_ids.device
    stops = torch.tensor(list(stop_ids), device=device)
    responses = torch.full((n, max_new_tokens), pad_id, dtype=torch.long, device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    if decoder is None:
        cache = with_cache(model, DynamicCache(config=model.config))
        logits = model(input_ids=prompt_ids, use_cache=True, logits_to_keep=1, **cache).logits[
            :, -1
        ]

        def decode(tokens: torch.Tensor, position: int) -> torch.Tensor:
            return model(input_ids=tokens.unsqueeze(1), use_cache=True, **cache).logits[:, -1]
    else:
        logits = decoder.prefill(prompt_ids, width + max_new_tokens)
        decode = decoder.decode
    written = 0
    for step in range(max_new_tokens):
        scores = logits.float()
        if len(suppress_ids):
            scores[:, list(suppress_ids)] = -float("inf")
        if step < min_new_tokens:
            scores[:, stops] = -float("inf")
        if temperature > 0:
            probs = torch.softmax(scores / temperature, dim=-1)
            tokens = torch.multinomial(probs, num_samples=1).squeeze(1)
        else:
            tokens = scores.argmax(dim=-1)
        tokens = tokens.masked_fill(done, pad_id)
        responses[:, step] = tokens
        done |= torch.isin(tokens, stops)
        written = step + 1
        if written == max_new_tokens or (written % STOP_CHECK_EVERY == 0 and bool(done.all())):
            break
        logits = decode(tokens, width + step)
    # Rows that stopped between two checks leave trailing pad-only columns: cut them.
    stopped = torch.isin(responses[:, :written], stops)
    lengths = torch.where(stopped.any(dim=1), stopped.int().argmax(dim=1) + 1, written)
    return responses[:, : int(lengths.max())]


class CompiledDecoder:
    """A compiled one-token decode step of `model` over a static KV cache, kept across calls: one
    cache and one compiled graph per (rows, capacity), so an RL run (a fixed batch and cap)
    compiles once. The prefill (where the activation is injected) runs eagerly."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.caches: dict[tuple[int, int], StaticCache] = {}
        self.cache: StaticCache | None = None
        if not torch.cuda.is_available():
            # The compile workers would otherwise compete with training for the few CPU cores.
            import torch._inductor.config as inductor

            inductor.compile_threads = 1
        self.cache_name = next(iter(with_cache(model, None)))  # found once, not while traced
        self._step = torch.compile(self._decode, dynamic=False, fullgraph=True)

    def prefill(self, prompt_ids: torch.Tensor, capacity: int) -> torch.Tensor:
        key = (prompt_ids.shape[0], capacity)
        if key not in self.caches:
            self.caches[key] = StaticCache(config=self.model.config, max_cache_len=capacity)
        self.cache = self.caches[key]
        self.cache.reset()
        positions = torch.arange(prompt_ids.shape[1], device=prompt_ids.device)
        return self.model(
            input_ids=prompt_ids,
            **with_cache(self.model, self.cache),
            use_cache=True,
            cache_position=positions,
            logits_to_keep=1,
        ).logits[:, -1]

    def decode(self, tokens: torch.Tensor, position: int) -> torch.Tensor:
        where = torch.tensor([position], device=tokens.device)
        try:
            return self._step(tokens.unsqueeze(1), self.cache, where)
        except torch._dynamo.exc.Unsupported as error:
            raise NLAConfigError(
                "rl.compile_rollout: torch.compile cannot capture this model's decode step "
                f"whole ({type(error).__name__}: {str(error).splitlines()[0]}); set "
                "rl.compile_rollout=false"
            ) from error

    def _decode(self, tokens: torch.Tensor, cache: StaticCache, where: torch.Tensor):
        return self.model(
            input_ids=tokens, use_cache=True, cache_position=where, **{self.cache_name: cache}
        ).logits[:, -1]
