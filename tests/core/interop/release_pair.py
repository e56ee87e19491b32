"""NLA checkpoints written the way the release documents them (method.md, "Official checkpoint
layout — exact"), and a check of our AV against the documented reader. Test code only: nothing
here comes from nla_lightning's writers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file

from tests.core.interop.reference_client import av_inputs, chat_ids, response_logprobs
from tests.data.release import ACTOR, CRITIC

LAYER = 2
INJECTION_SCALE = 3.0
# The release's templates, as documented (not taken from the code under test).
AV_TEMPLATE, AR_TEMPLATE = ACTOR, CRITIC


def release_tokens(tokenizer: Any, with_suffix: bool) -> dict[str, Any]:
    """The `tokens` section as the release documents it, worked out from the tokenizer."""
    char, token = next(
        (chr(c), ids[0])
        for c in range(0x3200, 0x3400)
        if len(ids := tokenizer.encode(chr(c), add_special_tokens=False)) == 1
    )
    ids = chat_ids(tokenizer, AV_TEMPLATE.format(injection_char=char))
    p = ids.index(token)
    suffix = AR_TEMPLATE.split("{explanation}")[1]
    tail = tokenizer(suffix, add_special_tokens=False)["input_ids"][1:]
    return {
        "injection_char": char,
        "injection_token_id": token,
        "injection_left_neighbor_id": ids[p - 1],
        "injection_right_neighbor_id": ids[p + 1],
        "critic_suffix_ids": tail if with_suffix else None,
    }


def release_sidecar(role: str, tokenizer: Any, d_model: int, spelling: str) -> dict[str, Any]:
    """nla_meta.yaml of a released (spelling 'release') or officially trained ('trainer') NLA."""
    release = spelling == "release"
    av = role == "av"
    data: dict[str, Any] = {
        "kind": "nla_model",
        "schema_version": 2,
        "role": role if release else {"av": "actor", "ar": "critic"}[role],
        "stage": "rl",
        "base_checkpoint": "Qwen/Qwen2.5-7B-Instruct" if release else "/mnt/ckpt/qwen-sft",
        "d_model": d_model,
        "extraction": {
            "injection_scale": INJECTION_SCALE if av else None,
            "mse_scale": math.sqrt(d_model),
        },
        # A released AV may leave the suffix out; its AR has it.
        "tokens": release_tokens(tokenizer, with_suffix=not av),
        "prompt_templates": {"av": AV_TEMPLATE, "ar": AR_TEMPLATE}
        if release
        else {"actor": AV_TEMPLATE, "critic": AR_TEMPLATE},
    }
    if not av:
        data["critic"] = {"extraction_layer_index": LAYER}
    data["training"] = {"lr": 1.41e-5 if av else 7.07e-5, "global_batch_size": 1024}
    if release:
        # Added at release; an AV saved by the trainer has no layer field at all.
        data["extraction_layer_index"] = LAYER
    data["trained_on"] = ["fineweb"]
    data["parent_checkpoints"] = ["Qwen/Qwen2.5-7B-Instruct"]
    data["created_at"] = "2026-03-01T00:00:00+00:00"
    data["created_by"] = "miles"
    return data


def write_sidecar(directory: Path, data: dict[str, Any]) -> None:
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    (directory / "nla_meta.yaml").write_text(text, encoding="utf-8")


def write_release_pair(target: Path, tokenizer: Any, out: Path, spelling: str) -> tuple[Path, Path]:
    """An AV and an AR directory as the release lays them out (method.md): the AV a plain causal
    LM; the AR a causal-LM config of l+1 blocks holding the embeddings and blocks only."""
    from transformers import AutoModelForCausalLM

    full = AutoModelForCausalLM.from_pretrained(str(target))
    d_model = full.config.hidden_size
    av, ar = out / "av", out / "ar"
    full.save_pretrained(av)
    tokenizer.save_pretrained(av)
    write_sidecar(av, release_sidecar("av", tokenizer, d_model, spelling))

    ar.mkdir(parents=True)
    fields = full.config.to_dict()
    fields["num_hidden_layers"] = LAYER + 1
    if fields.get("layer_types"):
        fields["layer_types"] = fields["layer_types"][: LAYER + 1]
    fields["architectures"] = ["Qwen2ForCausalLM"]
    config = type(full.config).from_dict(fields)
    config.save_pretrained(ar)
    kept = ["model.embed_tokens."] + [f"model.layers.{i}." for i in range(LAYER + 1)]
    state = {k: v.contiguous() for k, v in full.state_dict().items() if k.startswith(tuple(kept))}
    save_file(state, str(ar / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(ar)
    generator = torch.Generator().manual_seed(1)
    head = torch.eye(d_model) + 0.05 * torch.randn(d_model, d_model, generator=generator)
    save_file({"weight": head}, str(ar / "value_head.safetensors"))
    write_sidecar(ar, release_sidecar("ar", tokenizer, d_model, spelling))
    return av, ar


def check_av_against_reference(av: Any, av_dir: Path, explanation: str, seed: int) -> None:
    """Our AV and the documented reader of `av_dir`: the same input to the first block (the
    injected row included) and the same log-probs of a response."""
    from nla_lightning.core.verbalizer import encode_responses

    generator = torch.Generator().manual_seed(seed)
    activation = torch.randn(1, av.meta.d_model, generator=generator) * 5
    response = encode_responses(av.tokenizer, [explanation])[0]
    ids = torch.tensor([response])
    seen = []

    def first_block_input(_module: Any, args: tuple, kwargs: dict) -> None:
        seen.append((args[0] if args else kwargs["hidden_states"]).detach().clone())

    hook = av.model.model.layers[0].register_forward_pre_hook(first_block_input, with_kwargs=True)
    try:
        with torch.no_grad():
            mine = av.response_logprobs(activation, ids, torch.ones_like(ids))[0]
    finally:
        hook.remove()
    model, embeds, start = av_inputs(av_dir, activation[0], response)  # loaded once: seconds
    torch.testing.assert_close(seen[0], embeds, atol=1e-6, rtol=1e-6)
    theirs = response_logprobs(model, embeds, start, response)
    torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=1e-4)
