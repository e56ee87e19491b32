"""Where model families differ, in one place: the text side of a multimodal config, the scale a
model applies to its input embeddings, the token that ends an assistant turn, and the chat
prompt's token ids (method.md, "Tokenisation protocol")."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nla_lightning.errors import NLAConfigError

# Families that multiply token embeddings by sqrt(hidden_size). transformers 5 does it inside
# the embedding module (`embed_scale`); older versions did it in the model's forward, after a
# plain nn.Embedding.
SCALED_EMBEDDING_TYPES = frozenset({"gemma", "gemma2", "gemma3", "gemma3_text"})

# The assistant content rendered to find the token that closes the turn: plain words, no
# leading/trailing space (Gemma's template trims the content).
_PROBE_USER = "Say hello."
_PROBE_ASSISTANT = "Hello there."


def text_config(config: Any) -> Any:
    """The text side of `config`: `Gemma3Config.text_config` (which holds hidden_size,
    num_hidden_layers, layer_types) for a multimodal config; the config itself otherwise."""
    if hasattr(config, "get_text_config"):
        return config.get_text_config(decoder=True)
    nested = getattr(config, "text_config", None)
    return config if nested is None else nested


# Multimodal families whose text side loads alone (text-only causal LM / base model on the
# text config), with the renaming of the checkpoint's text weights to the text-only names. Both
# on-disk layouts exist: the Hub's and transformers 5's `language_model.model.*` and
# transformers 4.52-4.57's `model.language_model.*`. The vision weights are left unread.
_TEXT_WEIGHT_KEY_MAPPINGS: dict[str, dict[str, str]] = {
    "gemma3": {
        r"^language_model\.model\.": "model.",
        r"^model\.language_model\.": "model.",
        r"^language_model\.lm_head\.": "lm_head.",
    },
}


def text_weight_key_mapping(config: Any) -> dict[str, str] | None:
    """For a multimodal config whose text model loads alone (Gemma-3), the `key_mapping` that
    renames its checkpoint's text weights for the text-only classes; None otherwise (load the
    checkpoint as it is)."""
    if text_config(config) is config:
        return None
    mapping = _TEXT_WEIGHT_KEY_MAPPINGS.get(getattr(config, "model_type", None))
    return None if mapping is None else dict(mapping)


def _model_types(model: nn.Module) -> set[str]:
    config = getattr(model, "config", None)
    if config is None:
        return set()
    return {getattr(config, "model_type", None), getattr(text_config(config), "model_type", None)}


def embedding_output_scale(model: nn.Module) -> float:
    """The factor the model applies to its input-embedding MODULE's output afterwards.

    1.0 when the module already scales (transformers 5 Gemma: `embed_scale` inside the module)
    or the family does not scale at all; sqrt(hidden_size) for a Gemma-family model whose
    embedding module is a plain nn.Embedding (older transformers scaled in the forward). An
    injector divides the row it writes by this factor so that the row ends at its intended norm
    after all scaling, whatever the transformers version."""
    module = model.get_input_embeddings()
    if hasattr(module, "embed_scale"):
        return 1.0
    if not _model_types(model) & SCALED_EMBEDDING_TYPES:
        return 1.0
    hidden = int(text_config(model.config).hidden_size)
    # Older Gemma code builds the normaliser as a tensor in the hidden states' dtype (in bf16,
    # sqrt(3072) = 55.4256 becomes 55.5); dividing by that same rounded number lands exactly.
    weight = getattr(module, "weight", None)
    dtype = weight.dtype if weight is not None and weight.is_floating_point() else torch.float32
    return float(torch.tensor(math.sqrt(hidden), dtype=dtype).item())


def _special_ids(tokenizer: Any) -> set[int]:
    ids = set(getattr(tokenizer, "all_special_ids", None) or [])
    for token_id, token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(token, "special", False):
            ids.add(int(token_id))
    return ids


def control_token_ids(tokenizer: Any) -> frozenset[int]:
    """Ids of the tokenizer's special tokens except `unk` (an unknown word is still text):
    BOS, EOS, pad, chat markers. Computed once per tokenizer and passed to `encode_document`
    (Gemma-3 has about 6000 of them)."""
    return frozenset(_special_ids(tokenizer) - {getattr(tokenizer, "unk_token_id", None)})


@dataclass(frozen=True)
class EncodedDocument:
    """A document's ids as the official models were trained on (add_special_tokens=True).

    `added[i]`: position i was put there by the tokenizer (BOS), it is not part of the text.
    `special[i]`: added, or a control token written in the text; never an activation
    position."""

    ids: list[int]
    added: list[bool]
    special: list[bool]

    def text_ids(self, n: int) -> list[int]:
        """The first n ids without the tokenizer's additions: decoded, the prefix's text (a BOS
        written into it would come back twice when the text is tokenised again)."""
        return [i for i, added in zip(self.ids[:n], self.added[:n], strict=True) if not added]

    def special_lengths(self) -> list[int]:
        """Prefix lengths that end at a special token (for `prefix_lengths(skip=...)`)."""
        return [j + 1 for j, special in enumerate(self.special) if special]


def encode_document(
    tokenizer: Any, text: str, control_ids: Collection[int] | None = None
) -> EncodedDocument:
    """Tokenise one document with add_special_tokens=True (method.md, "Tokenisation protocol":
    BOS first for Llama/Gemma, nothing added for Qwen) and mark its special positions.
    `control_ids`: `control_token_ids(tokenizer)`, computed by the caller once for many
    documents."""
    control = control_token_ids(tokenizer) if control_ids is None else control_ids
    encoded = tokenizer(text, add_special_tokens=True, return_special_tokens_mask=True)
    ids = [int(i) for i in encoded["input_ids"]]
    added = [bool(m) for m in encoded["special_tokens_mask"]]
    special = [a or i in control for i, a in zip(ids, added, strict=True)]
    return EncodedDocument(ids, added, special)


def _render(tokenizer: Any, messages: list[dict[str, str]], **kwargs: Any) -> Any:
    try:
        return tokenizer.apply_chat_template(messages, **kwargs)
    except Exception as err:  # jinja errors, template exceptions: all mean the same to us
        raise NLAConfigError(
            f"the tokenizer's chat template failed on a plain user message: "
            f"{type(err).__name__}: {err}. Expected a template that renders "
            "[{'role': 'user', ...}] (and an assistant reply); fix or replace "
            "tokenizer.chat_template (e.g. take it from the instruct model's tokenizer_config.json)"
        ) from err


def end_of_turn_id(tokenizer: Any) -> int:
    """The token that closes an assistant turn (Qwen `<|im_end|>`, Gemma `<end_of_turn>` (not
    `<eos>`), Llama-3 `<|eot_id|>`), read from the chat template: the first special token after
    the assistant's content in a rendered user + assistant exchange. Without a template:
    eos_token_id."""
    if not getattr(tokenizer, "chat_template", None):
        if tokenizer.eos_token_id is None:
            raise NLAConfigError(
                "the tokenizer has neither a chat template nor an eos token, so nothing marks the "
                "end of a response: set tokenizer.chat_template or tokenizer.eos_token"
            )
        return int(tokenizer.eos_token_id)
    messages = [
        {"role": "user", "content": _PROBE_USER},
        {"role": "assistant", "content": _PROBE_ASSISTANT},
    ]
    rendered = _render(tokenizer, messages, tokenize=False)
    at = rendered.rfind(_PROBE_ASSISTANT)
    if at < 0:
        raise NLAConfigError(
            f"the chat template does not render the assistant's content verbatim (looked for "
            f"{_PROBE_ASSISTANT!r} in {rendered!r}), so the end-of-turn token cannot be read "
            "from it: check tokenizer.chat_template"
        )
    suffix = rendered[at + len(_PROBE_ASSISTANT) :]
    ids = [int(i) for i in tokenizer(suffix, add_special_tokens=False)["input_ids"]]
    special = _special_ids(tokenizer)
    for token_id in ids:
        # A template may put a space or newline before the marker (Llama-2: ' ' + eos).
        if token_id in special:
            return token_id
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    raise NLAConfigError(
        f"the chat template closes an assistant turn with {suffix!r}, which holds no special "
        "token, and the tokenizer has no eos token: set "
        "tokenizer.eos_token to the token that ends a response"
    )


def stop_token_ids(tokenizer: Any) -> list[int]:
    """Ids that end generation: the end-of-turn token first, then eos if it is another id."""
    ids = [end_of_turn_id(tokenizer)]
    eos = tokenizer.eos_token_id
    if eos is not None and int(eos) not in ids:
        ids.append(int(eos))
    return ids


def chat_prompt_ids(tokenizer: Any, message: str) -> list[int]:
    """Token ids of one user message with the chat template and generation prompt applied in
    ONE step, as the official client does: whatever BOS the template renders, and no other (a
    second BOS shifts every position on Gemma)."""
    if not getattr(tokenizer, "chat_template", None):
        raise NLAConfigError(
            f"the tokenizer {type(tokenizer).__name__} has no chat template, which the AV prompt "
            "needs: expected tokenizer.chat_template to be set; copy it from the instruct "
            "model's tokenizer_config.json (or chat_template.jinja) into the tokenizer directory"
        )
    out = _render(
        tokenizer,
        [{"role": "user", "content": message}],
        tokenize=True,
        add_generation_prompt=True,
    )
    # transformers 5 returns a BatchEncoding; older versions a plain list of ids.
    ids = out["input_ids"] if isinstance(out, Mapping) else out
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if ids and isinstance(ids[0], list):
        ids = ids[0]
    return [int(i) for i in ids]
