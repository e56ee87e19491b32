"""A consumer of NLA checkpoints written from the release's documentation alone (method.md,
"Official checkpoint layout — exact" and "Tokenisation protocol"), independent of nla_lightning:
the checks the official single-file client makes when it loads a sidecar, its AR reader, and
the AV's input embeddings with the activation injected. Tests hold our files against it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

SCALED_EMBEDDING_TYPES = {"gemma", "gemma2", "gemma3", "gemma3_text"}


def chat_ids(tokenizer: Any, content: str) -> list[int]:
    """One user message, chat template and generation prompt applied and tokenised at once."""
    out = tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=True, add_generation_prompt=True
    )
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def load_nla_config(directory: Path, tokenizer: Any) -> dict[str, Any]:
    """The documented sidecar fields of an AV, asserted against the live tokenizer."""
    meta = yaml.safe_load((Path(directory) / "nla_meta.yaml").read_text(encoding="utf-8"))
    assert meta["kind"] in ("nla_model", "nla_dataset")
    d_model = meta["d_model"] if meta["kind"] == "nla_model" else meta["extraction"]["d_model"]
    scale = meta.get("extraction", {}).get("injection_scale")
    assert scale is not None, "an AV sidecar records extraction.injection_scale"
    tokens = meta["tokens"]
    template = meta["prompt_templates"].get("av") or meta["prompt_templates"]["actor"]
    char, token = tokens["injection_char"], tokens["injection_token_id"]
    assert tokenizer.encode(char, add_special_tokens=False) == [token]
    assert token != tokenizer.unk_token_id
    ids = chat_ids(tokenizer, template.format(injection_char=char))
    hits = [i for i, t in enumerate(ids) if t == token]
    assert len(hits) == 1, f"the injection token appears {len(hits)} times"
    p = hits[0]
    assert 0 < p < len(ids) - 1
    assert ids[p - 1] == tokens["injection_left_neighbor_id"]
    assert ids[p + 1] == tokens["injection_right_neighbor_id"]
    return {
        "d_model": d_model,
        "injection_scale": float(scale),
        "template": template,
        "char": char,
        "token": token,
        "prompt_ids": ids,
        "position": p,
    }


def to_norm(v: torch.Tensor, scale: float) -> torch.Tensor:
    return v / (v.float().norm(dim=-1, keepdim=True).clamp_min(1e-12) / scale).to(v.dtype)


class ReferenceAR:
    """The AR as documented: a causal LM of l+1 blocks, lm_head and final norm replaced by
    identity, a bias-free d x d head from value_head.safetensors on the last token."""

    def __init__(self, directory: Path) -> None:
        directory = Path(directory)
        meta = yaml.safe_load((directory / "nla_meta.yaml").read_text(encoding="utf-8"))
        assert meta["role"] in ("ar", "critic")
        self.mse_scale = float(meta["extraction"]["mse_scale"])
        self.template = meta["prompt_templates"].get("ar") or meta["prompt_templates"]["critic"]
        self.suffix_tail = meta["tokens"]["critic_suffix_ids"]
        self.tokenizer = AutoTokenizer.from_pretrained(str(directory))
        model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32)
        model.lm_head = torch.nn.Identity()
        model.model.norm = torch.nn.Identity()
        self.model = model.eval()
        d = model.config.hidden_size
        self.head = torch.nn.Linear(d, d, bias=False)
        self.head.load_state_dict(load_file(str(directory / "value_head.safetensors")))

    def input_ids(self, explanation: str) -> list[int]:
        text = self.template.format(explanation=explanation)
        return self.tokenizer(text, add_special_tokens=True)["input_ids"]

    @torch.no_grad()
    def reconstruct(self, explanation: str) -> torch.Tensor:
        ids = torch.tensor([self.input_ids(explanation)])
        hidden = self.model.model(ids, use_cache=False).last_hidden_state[0, -1]
        return self.head(hidden).float()


@torch.no_grad()
def av_inputs(directory: Path, activation: torch.Tensor, response_ids: list[int]):
    """(model, input embeddings [1, T, d], prompt length): the canonical prompt and the response,
    embedded, the activation injected as the injection token's row at norm injection_scale
    after any embedding scale (Gemma multiplies embeddings by sqrt(d))."""
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    cfg = load_nla_config(directory, tokenizer)
    model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32).eval()
    ids = torch.tensor([cfg["prompt_ids"] + list(response_ids)])
    weight = model.get_input_embeddings().weight
    config = getattr(model.config, "text_config", model.config)
    scale = math.sqrt(config.hidden_size) if config.model_type in SCALED_EMBEDDING_TYPES else 1.0
    embeds = (weight[ids] * scale).clone()
    embeds[0, cfg["position"]] = to_norm(activation.float(), cfg["injection_scale"])
    return model, embeds, len(cfg["prompt_ids"])


@torch.no_grad()
def response_logprobs(model: Any, embeds: torch.Tensor, start: int, response_ids: list[int]):
    """Log-probs of `response_ids`, the last tokens of `embeds` (av_inputs' model and input
    embeddings; the prompt is its first `start` rows)."""
    logits = model(inputs_embeds=embeds).logits[0].float()
    logprobs = torch.log_softmax(logits[start - 1 : -1], dim=-1)
    return logprobs.gather(-1, torch.tensor(response_ids).unsqueeze(-1)).squeeze(-1)
