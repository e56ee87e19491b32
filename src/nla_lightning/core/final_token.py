"""Activations at the final token of many texts, batched by length."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from nla_lightning.core.activations import check_finite, last_token_activations
from nla_lightning.core.families import control_token_ids, encode_document, text_config
from nla_lightning.core.padding import pad_right


def extract_final_token_activations(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    layer: int,
    batch_size: int = 64,
    progress: bool = True,
) -> tuple[torch.Tensor, list[int]]:
    """Raw block-`layer` activations at each text's last token.

    Texts are tokenised as the official models were trained (add_special_tokens=True: a BOS
    first for Llama/Gemma, nothing for Qwen). Returns ([N, d] float32 on the CPU, token count
    of each text up to the position read, its BOS included)."""
    control = control_token_ids(tokenizer)
    docs = [encode_document(tokenizer, text, control) for text in texts]
    # A special token is never an activation position: a text that is only its BOS has none,
    # and one that ends in a special token (an appended EOS) is read at the token before it.
    ends = [max((j + 1 for j, s in enumerate(d.special) if not s), default=0) for d in docs]
    rows = [doc.ids[:end] for doc, end in zip(docs, ends, strict=True)]
    empty = [i for i, end in enumerate(ends) if end == 0]
    if empty:
        raise ValueError(
            f"texts {empty[:5]} tokenise to nothing; drop empty texts before extraction"
        )
    device = next(model.parameters()).device
    # Sorting by length keeps padding (wasted compute) small inside each batch.
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out = torch.empty((len(rows), text_config(model.config).hidden_size), dtype=torch.float32)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = range(0, len(order), batch_size)
    for start in tqdm(batches, desc=f"extract layer {layer}", unit="batch", disable=not progress):
        index = order[start : start + batch_size]
        ids, mask = pad_right([rows[i] for i in index], pad_id)
        acts = last_token_activations(model, ids.to(device), mask.to(device), layer)
        out[torch.tensor(index)] = acts.float().cpu()
    check_finite(out, where="extracted activations")
    return out, [len(r) for r in rows]
