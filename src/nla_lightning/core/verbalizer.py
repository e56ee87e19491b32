"""AV (activation verbaliser): prompt, embedding injection, sampling, response log-probs."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache

from nla_lightning.core.activations import check_finite, check_width, normalise
from nla_lightning.core.families import embedding_output_scale, end_of_turn_id, stop_token_ids
from nla_lightning.core.lora import base_model, is_peft, save_adapter
from nla_lightning.core.meta import NLAMeta, render_actor_prompt
from nla_lightning.core.sampling import CompiledDecoder, sample_responses, with_cache
from nla_lightning.errors import NLAConfigError

# Inference cap on new tokens; the RL rollout's own cap (150) is a training setting.
MAX_NEW_TOKENS = 200

_EXPLANATION = re.compile(r"<explanation>(.*?)</explanation>", re.DOTALL)


def format_response(explanation: str) -> str:
    """The AV's target response for one explanation."""
    return f"<explanation>\n{explanation.strip()}\n</explanation>"


def extract_explanation(response: str) -> str | None:
    """Body of the first closed <explanation> tag, or None if missing, unclosed or empty."""
    match = _EXPLANATION.search(response)
    if match is None:
        return None
    body = match.group(1).strip()
    return body or None


def av_prompt_ids(tokenizer: Any, meta: NLAMeta) -> list[int]:
    """The chat-templated AV prompt, checked to hold the injection token once, between its
    recorded neighbours."""
    ids = render_actor_prompt(tokenizer, meta.actor_message())
    positions = [i for i, t in enumerate(ids) if t == meta.injection_token_id]
    if len(positions) != 1:
        raise NLAConfigError(
            f"the AV prompt holds the injection token {meta.injection_char!r} "
            f"(id {meta.injection_token_id}) {len(positions)} times; it must appear exactly "
            "once: fix the actor template or choose another injection_char"
        )
    pos = positions[0]
    found = (ids[pos - 1], ids[pos + 1]) if 0 < pos < len(ids) - 1 else None
    if found != (meta.left_neighbour_id, meta.right_neighbour_id):
        raise NLAConfigError(
            f"the injection token's neighbours are {found}, the metadata expects "
            f"({meta.left_neighbour_id}, {meta.right_neighbour_id}): the tokenizer or chat "
            "template differs from the one the NLA was made with"
        )
    return ids


def encode_responses(tokenizer: Any, explanations: Sequence[str]) -> list[list[int]]:
    """Token ids of each formatted response, closed by the chat template's end-of-turn token
    (Gemma's `<end_of_turn>`, not `<eos>`), which is where generation stops."""
    texts = [format_response(e) for e in explanations]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    end = end_of_turn_id(tokenizer)
    return [ids + [end] for ids in encoded]


class EmbeddingInjector:
    """Forward hook on the input embeddings that replaces the injection token's embedding with
    the (normalised, scaled) activation of its row. Decode steps (one new token, KV cache) are
    left alone, so injection happens in the prefill only."""

    def __init__(self, model: nn.Module, meta: NLAMeta, position: int | None = None) -> None:
        self.meta = meta
        self.injection_scale = meta.require_injection_scale("the AV")
        self.embedding = model.get_input_embeddings()
        # Where the model scales the module's output afterwards (Gemma on older transformers),
        # the row is shrunk so that it reaches the residual stream at norm injection_scale.
        self.post_scale = embedding_output_scale(model)
        self.vectors: torch.Tensor | None = None
        self.position = position

    def __call__(self, _module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        input_ids = args[0]
        if self.vectors is None or input_ids.shape[1] == 1:
            return output
        if self.vectors.shape[0] != input_ids.shape[0]:
            raise NLAConfigError(
                f"{self.vectors.shape[0]} activations were given for {input_ids.shape[0]} prompts"
            )
        mask = input_ids == self.meta.injection_token_id
        if self.position is not None:
            # A fixed prompt: inject at its position only, even if a response repeats the token.
            if not mask[:, self.position].all():
                raise NLAConfigError(
                    f"the injection token {self.meta.injection_char!r} is missing at position "
                    f"{self.position} of the AV prompt"
                )
            mask = torch.zeros_like(mask)
            mask[:, self.position] = True
        counts = mask.sum(dim=1)
        if not torch.equal(counts, torch.ones_like(counts)):
            bad = (counts != 1).nonzero().flatten()[:5].tolist()
            raise NLAConfigError(
                f"injection token {self.meta.injection_char!r} must appear exactly once per "
                f"row; rows {bad} hold it {counts[bad].tolist()} times"
            )
        pos = mask.int().argmax(dim=1, keepdim=True)
        left = input_ids.gather(1, (pos - 1).clamp_min(0))
        right = input_ids.gather(1, (pos + 1).clamp_max(input_ids.shape[1] - 1))
        if not (
            (left == self.meta.left_neighbour_id).all()
            and (right == self.meta.right_neighbour_id).all()
        ):
            raise NLAConfigError(
                "the injection token is not between its recorded neighbours: the prompt was not "
                "built with this NLA's template and tokenizer"
            )
        vectors = self.vectors.to(device=output.device, dtype=output.dtype)
        return torch.where(mask.unsqueeze(-1), vectors.unsqueeze(1), output)

    @contextmanager
    def active(self, activations: torch.Tensor) -> Iterator[None]:
        """Inject `activations` [B, d] (raw) into every forward run inside the block."""
        check_width(activations, self.meta.d_model)
        check_finite(activations)
        self.vectors = normalise(activations.float(), self.injection_scale / self.post_scale)
        handle = self.embedding.register_forward_hook(self)
        try:
            yield
        finally:
            handle.remove()
            self.vectors = None


@dataclass
class Rollout:
    """Sampled AV responses: ids [N, T], mask [N, T] (1 up to and including end-of-turn)."""

    response_ids: torch.Tensor
    response_mask: torch.Tensor
    texts: list[str]
    explanations: list[str | None]

    @property
    def lengths(self) -> torch.Tensor:
        return self.response_mask.sum(dim=1)


class ActivationVerbalizer(nn.Module):
    """A causal LM that reads an injected activation and writes an explanation."""

    def __init__(self, model: nn.Module, tokenizer: Any, meta: NLAMeta) -> None:
        super().__init__()
        meta.check_model(model.config)
        meta.check_tokenizer(tokenizer, model.config)
        self.model = model
        self.tokenizer = tokenizer
        self.meta = meta
        prompt = av_prompt_ids(tokenizer, meta)
        # On the model's device: a model loaded straight onto a GPU is never moved as a whole.
        device = next(model.parameters()).device
        self.register_buffer("prompt_ids", torch.tensor(prompt, device=device), persistent=False)
        self.injector = EmbeddingInjector(model, meta, prompt.index(meta.injection_token_id))
        self.stop_ids = stop_token_ids(tokenizer)
        self._decoder: CompiledDecoder | None = None  # made on the first compiled sample

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return self.tokenizer.eos_token_id if pad is None else pad

    def response_logprobs(
        self,
        activations: torch.Tensor,
        response_ids: torch.Tensor,
        response_mask: torch.Tensor,
        group_size: int = 1,
    ) -> torch.Tensor:
        """Log-prob of each response token given the injected prompt: [B, T] (0 where masked).

        `group_size` G > 1: `activations` holds one row per group of G consecutive responses
        (an RL group: one activation, G samples). Their prompts are identical, so the prompt runs
        once per group and its keys and values serve all G responses: the same log-probs (to
        float rounding) with 1/G of the prompt's work, gradients included."""
        if group_size > 1 and not checkpointing_on(self.model):
            return self._shared_prompt_logprobs(
                activations, response_ids, response_mask, group_size
            )
        if group_size > 1:
            # Gradient checkpointing turns the KV cache off: one prompt per response.
            activations = activations.repeat_interleave(group_size, dim=0)
        n, width = response_ids.shape
        device = self.prompt_ids.device
        prompt = self.prompt_ids.unsqueeze(0).expand(n, -1)
        input_ids = torch.cat([prompt, response_ids.to(device)], dim=1)
        attention = torch.cat([torch.ones_like(prompt), response_mask.to(device)], dim=1)
        with self.injector.active(activations):
            # Only the positions that predict response tokens need logits.
            logits = self.model(
                input_ids=input_ids, attention_mask=attention, logits_to_keep=width + 1
            ).logits[:, :-1]
        logprobs = token_logprobs(logits, response_ids.to(device))
        return logprobs * response_mask.to(device)

    def _shared_prompt_logprobs(
        self,
        activations: torch.Tensor,
        response_ids: torch.Tensor,
        response_mask: torch.Tensor,
        group_size: int,
    ) -> torch.Tensor:
        device = self.prompt_ids.device
        ids, mask = response_ids.to(device), response_mask.to(device)
        if activations.shape[0] * group_size != ids.shape[0]:
            raise NLAConfigError(
                f"{activations.shape[0]} activations in groups of {group_size} cannot explain "
                f"{ids.shape[0]} responses"
            )
        prompt = self.prompt_ids.unsqueeze(0).expand(activations.shape[0], -1)
        cache = DynamicCache(config=self.model.config)
        with self.injector.active(activations):
            # The prompt's last position predicts the first response token.
            first = self.model(
                input_ids=prompt, use_cache=True, logits_to_keep=1, **with_cache(self.model, cache)
            ).logits
        cache.batch_repeat_interleave(group_size)
        # Response tokens but the last predict the rest (the last one's output is never used).
        seen = torch.ones(ids.shape[0], prompt.shape[1], dtype=mask.dtype, device=device)
        attention = torch.cat([seen, mask[:, :-1]], dim=1)
        rest = self.model(
            input_ids=ids[:, :-1],
            attention_mask=attention,
            use_cache=True,
            **with_cache(self.model, cache),
        ).logits
        logits = torch.cat([first.repeat_interleave(group_size, dim=0), rest], dim=1)
        return token_logprobs(logits, ids) * mask

    def sft_loss(
        self, activations: torch.Tensor, response_ids: torch.Tensor, response_mask: torch.Tensor
    ) -> torch.Tensor:
        """Mean next-token loss over response tokens (prompt masked), with injection."""
        logprobs = self.response_logprobs(activations, response_ids, response_mask)
        return -logprobs.sum() / response_mask.sum().clamp_min(1)

    @torch.no_grad()
    def sample(
        self,
        activations: torch.Tensor,
        group_size: int = 1,
        max_new_tokens: int = MAX_NEW_TOKENS,
        temperature: float = 1.0,
        min_new_tokens: int = 0,
        compile: bool = False,
    ) -> Rollout:
        """Sample `group_size` responses per activation in one batched, KV-cached generate
        (temperature 0: the greedy response). Rows are grouped: rows g*i .. g*i+g-1 belong to
        activation i. A response that reaches `max_new_tokens` without closing
        </explanation> has no explanation (None): a failure. `min_new_tokens` holds the stop
        tokens back until that many were written (benchmarks force equal lengths with it).
        `compile`: decode through a compiled step over a static KV cache (kept for the next call
        of the same shape; the first call pays the compile)."""
        if compile and self._decoder is None:
            self._decoder = CompiledDecoder(self.model)
        vectors = activations.repeat_interleave(group_size, dim=0)
        prompt = self.prompt_ids.unsqueeze(0).expand(vectors.shape[0], -1)
        stops = self.stop_ids
        with self.injector.active(vectors):
            response = sample_responses(
                self.model,
                prompt,
                max_new_tokens=max_new_tokens,
                stop_ids=stops,
                pad_id=self.pad_id,
                temperature=temperature,
                min_new_tokens=min_new_tokens,
                # The injection character means "vector here"; the AV must never write it.
                suppress_ids=[self.meta.injection_token_id],
                decoder=self._decoder if compile else None,
            )
        is_eos = torch.isin(response, torch.tensor(stops, device=response.device))
        after_eos = (is_eos.cumsum(dim=1) - is_eos.long()) > 0
        mask = (~after_eos).long()
        response = response.masked_fill(after_eos, self.pad_id)
        texts = self.tokenizer.batch_decode(response, skip_special_tokens=True)
        return Rollout(response, mask, texts, [extract_explanation(t) for t in texts])

    def explain(self, activations: torch.Tensor, **kwargs: Any) -> list[str | None]:
        """One sampled explanation per activation (None where the response had no closed tag)."""
        return self.sample(activations, **kwargs).explanations

    @classmethod
    def load(
        cls,
        directory: str | Path,
        dtype: str | torch.dtype = "float32",
        device: str = "cpu",
        quantize_4bit: bool = False,
        trainable: bool = False,
        meta: NLAMeta | None = None,
    ) -> ActivationVerbalizer:
        """Load an AV directory (HF causal LM + nla_meta.yaml), checking it against its meta
        (`meta`: the file's, completed from the AR's). A LoRA AV loads its adapter (trainable
        if asked) on the base the adapter names."""
        from nla_lightning.core.lora import is_adapter_dir, weights_of
        from nla_lightning.core.models import load_causal_lm, load_tokenizer

        meta = meta or NLAMeta.load(directory)
        tokenizer = load_tokenizer(str(directory))
        if is_adapter_dir(directory):
            # A LoRA-trained AV: the adapter on top of the base it was trained from.
            from peft import PeftModel

            base = load_causal_lm(
                weights_of(directory), dtype, quantize_4bit=quantize_4bit, device=device
            )
            model = PeftModel.from_pretrained(base, str(directory), is_trainable=trainable)
            return cls(model, tokenizer, meta)
        model = load_causal_lm(
            str(directory), dtype=dtype, quantize_4bit=quantize_4bit, device=device
        )
        return cls(model, tokenizer, meta)

    def save(self, directory: str | Path, stage: str = "sl") -> Path:
        """The release's AV layout: an HF causal-LM directory plus nla_meta.yaml (with LoRA: the
        adapter directory, which names its base). `stage`: sl (warm start) or rl."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if is_peft(self.model):
            save_adapter(self.model, directory)
        else:
            self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        self.meta.save(directory, kind="nla_model", role="av", stage=stage)
        return directory


def checkpointing_on(model: nn.Module) -> bool:
    """Whether the model recomputes its layers in backward (transformers renamed the flag)."""
    base = base_model(model)
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(base), name):  # the class: reading the old name warns
            return bool(getattr(base, name))
    return False


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token] in float32 without materialising the full log-softmax: [B, T]."""
    logits = logits.float()
    picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)
