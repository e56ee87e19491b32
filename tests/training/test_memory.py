"""GPU memory estimate: exact parameter counts against tiny from_config models, and the sanity
numbers for Qwen2.5-7B-Instruct / Qwen2.5-0.5B-Instruct (configs written out, no hub)."""

from __future__ import annotations

import pytest
import torch
import transformers
from torch import nn

from nla_lightning.training.memory import (
    ALL_LINEAR,
    GIB,
    MemoryEstimate,
    _block_parameters,
    count_parameters,
    estimate_memory,
    lora_parameters,
)

TINY = dict(
    hidden_size=64,
    intermediate_size=160,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=300,
)


def qwen25_7b():
    return transformers.Qwen2Config(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
        tie_word_embeddings=False,
    )


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # tied parameters are yielded once


def tiny_configs():
    yield "qwen2-untied", transformers.Qwen2Config(**TINY, num_hidden_layers=3)
    yield (
        "qwen2-tied",
        transformers.Qwen2Config(**TINY, num_hidden_layers=2, tie_word_embeddings=True),
    )
    yield "llama-untied", transformers.LlamaConfig(**TINY, num_hidden_layers=4)
    yield (
        "llama-tied-bias",
        transformers.LlamaConfig(
            **TINY,
            num_hidden_layers=2,
            tie_word_embeddings=True,
            attention_bias=True,
            mlp_bias=True,
        ),
    )
    yield "mistral", transformers.MistralConfig(**TINY, num_hidden_layers=2, head_dim=8)
    yield "qwen3", transformers.Qwen3Config(**TINY, num_hidden_layers=2, head_dim=32)
    yield "gemma2", transformers.Gemma2Config(**TINY, num_hidden_layers=2, head_dim=16)


CONFIGS = dict(tiny_configs())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_count_parameters_exact_for_tiny_models(name):
    config = CONFIGS[name]
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    assert count_parameters(config) == n_params(model)


@pytest.mark.parametrize("name", ["qwen2-untied", "llama-tied-bias", "qwen3"])
def test_count_parameters_truncated_and_without_head(name):
    config = CONFIGS[name]
    settings = {k: v for k, v in config.to_dict().items() if k != "layer_types"}
    cut = config.__class__(**{**settings, "num_hidden_layers": 1})
    assert count_parameters(config, num_layers=1) == n_params(
        transformers.AutoModelForCausalLM.from_config(cut)
    )
    # The base model (no lm_head) with its final norm, then without it (the AR backbone).
    base = transformers.AutoModel.from_config(cut)
    assert count_parameters(config, num_layers=1, include_lm_head=False) == n_params(base)
    without_norm = n_params(base) - n_params(base.norm)
    assert count_parameters(config, 1, include_lm_head=False, include_final_norm=False) == (
        without_norm
    )
    with pytest.raises(ValueError):
        count_parameters(config, num_layers=config.num_hidden_layers + 1)


@pytest.mark.parametrize("targets", [ALL_LINEAR, ("q_proj", "v_proj"), ("down_proj",)])
def test_lora_parameters_match_linear_shapes(targets):
    config = CONFIGS["qwen2-untied"]
    model = transformers.AutoModelForCausalLM.from_config(config)
    rank = 8
    expected = sum(
        rank * (m.in_features + m.out_features)
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in targets
    )
    assert lora_parameters(config, rank, targets) == expected
    assert lora_parameters(config, rank, targets, num_layers=1) * 3 == expected
    with pytest.raises(ValueError, match="unknown LoRA target"):
        lora_parameters(config, rank, ("qkv_proj",))


def test_real_model_parameter_counts():
    assert count_parameters(qwen25_7b()) == 7_615_616_512
    small = transformers.Qwen2Config(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
    )
    assert count_parameters(small) == 494_032_768


def test_qlora_7b_fits_24gb_and_full_does_not():
    config = qwen25_7b()
    qlora = estimate_memory(
        config,
        18,
        av_mode="qlora",
        ar_mode="qlora",
        reference="adapter",
        gradient_checkpointing=True,
        micro_batch=4,
        seq_len=512,
    )
    assert qlora.reference == 0
    assert 8 < qlora.total < 22
    assert qlora.fits(24) and not qlora.fits(8)
    full = estimate_memory(config, 18)
    assert full.total > 80 and not full.fits(80)
    # AV alone in full AdamW: weights + grads in bf16 and 8 bytes of moments per parameter.
    av_params = count_parameters(config)
    av_only = full.policy + av_params * (2 + 8) / GIB
    assert av_only == pytest.approx(av_params * 12 / GIB) and av_only > 80
    assert full.optimizer > av_params * 8 / GIB  # plus the AR's moments
    # NF4 reference: block Linear weights at 0.5 + 4/64 bytes, the rest (embeddings, lm_head,
    # norms, q/k/v biases) stays in bf16.
    h, i, kv, vocab = 3584, 18944, 512, 152064
    linear = 28 * (2 * h * h + 2 * h * kv + 3 * h * i)
    kept = 2 * vocab * h + 28 * (2 * h + h + 2 * kv) + h
    assert linear + kept == av_params
    assert full.reference * GIB == pytest.approx(linear * 0.5625 + kept * 2)
    assert full.policy * GIB == pytest.approx(av_params * 2)


def test_estimate_components_respond_to_settings():
    config = qwen25_7b()
    base = estimate_memory(config, 18, av_mode="lora", ar_mode="lora", reference="adapter")
    ckpt = estimate_memory(
        config, 18, av_mode="lora", ar_mode="lora", reference="adapter", gradient_checkpointing=True
    )
    assert ckpt.activations < base.activations / 3
    assert ckpt.policy == base.policy and ckpt.optimizer == base.optimizer
    qlora = estimate_memory(config, 18, av_mode="qlora", ar_mode="qlora", reference="adapter")
    assert qlora.policy < base.policy / 2 and qlora.ar < base.ar / 2
    assert qlora.optimizer == base.optimizer  # same adapters + head are trained
    # A deeper AR layer means more AR weights; the AV is unchanged.
    deeper = estimate_memory(config, 27, av_mode="lora", ar_mode="lora", reference="adapter")
    assert deeper.ar > base.ar and deeper.policy == base.policy
    # KV cache scales with the rollout batch and the sequence length.
    bigger = estimate_memory(
        config, 18, av_mode="lora", ar_mode="lora", reference="none", rollout_batch=32, seq_len=1024
    )
    assert bigger.kv_cache == pytest.approx(4 * base.kv_cache)
    assert bigger.reference == 0
    # Exact KV formula: 2 * layers * kv_heads * head_dim * seq * batch * bytes.
    assert base.kv_cache * GIB == 2 * 28 * 4 * 128 * 512 * 16 * 2


def test_estimate_rejects_bad_settings():
    config = qwen25_7b()
    with pytest.raises(ValueError, match="adapter.*lora"):
        estimate_memory(config, 18, av_mode="full", reference="adapter")
    with pytest.raises(ValueError):
        estimate_memory(config, 28)
    with pytest.raises(ValueError):
        estimate_memory(config, 18, av_mode="8bit")
    with pytest.raises(ValueError):
        estimate_memory(config, 18, reference="bf16")


def test_a_frozen_reference_weighs_what_the_full_policy_weighs():
    """reference=frozen (the release's) is a second AV in the training dtype; NF4 is less
    (~2.6x for Qwen2.5-7B: the linear layers shrink ~3.6x, embeddings and lm_head do not)."""
    config = qwen25_7b()
    frozen = estimate_memory(config, 18, av_mode="full", reference="frozen", dtype_bytes=2)
    nf4 = estimate_memory(config, 18, av_mode="full", reference="quantized_4bit", dtype_bytes=2)
    assert frozen.reference == pytest.approx(frozen.policy, rel=1e-9)
    assert 2.0 < frozen.reference / nf4.reference < 3.6


def test_table_and_total():
    est = MemoryEstimate(1.0, 2.25, 3.0, 4.0, 0.5, 10.04, 0.26)
    assert est.total == pytest.approx(21.05)
    lines = est.table().splitlines()
    assert [line.split()[0] for line in lines] == [
        "component", "policy", "reference", "ar", "optimizer", "gradients", "activations",
        "kv_cache", "total",
    ]  # fmt: skip
    assert lines[2].split()[1] == "2.2" and lines[-1].split()[1] == "21.1"
    assert len({len(line) for line in lines}) == 1  # aligned columns
    assert est.fits(21.1) and not est.fits(21.0)


def test_per_rank_estimate_divides_the_states_and_keeps_what_sharding_cannot():
    from nla_lightning.training.memory import per_rank_gib

    config = qwen25_7b()
    full = estimate_memory(config, 20, reference="frozen", micro_batch=32, seq_len=278)
    block = sum(_block_parameters(config)) * 2 / GIB
    states = full.policy + full.ar + full.reference + full.optimizer + full.gradients
    for ranks in (2, 4, 8):
        rollout = states / ranks + full.policy * (ranks - 1) / ranks + full.kv_cache / ranks
        update = states / ranks + full.activations + 2 * block
        assert per_rank_gib(config, full, ranks, "frozen") == pytest.approx(max(rollout, update))
    per_rank = [per_rank_gib(config, full, n, "frozen") for n in (1, 2, 4, 8)]
    assert all(a > b for a, b in zip(per_rank, per_rank[1:], strict=False))  # fewer GiB each
    # An NF4 reference is not sharded: every rank holds all of it.
    nf4 = estimate_memory(config, 20, reference="quantized_4bit", micro_batch=32, seq_len=278)
    frozen_share = per_rank_gib(config, nf4, 8, "quantized_4bit") - per_rank_gib(
        config,
        estimate_memory(config, 20, reference="none", micro_batch=32, seq_len=278),
        8,
        "none",
    )
    assert frozen_share == pytest.approx(nf4.reference)
    with pytest.raises(ValueError, match="ranks=0"):
        per_rank_gib(config, full, 0, "frozen")
