import pytest
import torch

from nla_lightning.core.lora import gradient_checkpointing
from nla_lightning.core.meta import NLAMeta
from nla_lightning.core.models import load_causal_lm
from nla_lightning.core.padding import pad_right
from nla_lightning.core.verbalizer import (
    ActivationVerbalizer,
    av_prompt_ids,
    encode_responses,
    extract_explanation,
    format_response,
)
from nla_lightning.errors import NLAConfigError


@pytest.fixture
def av(target, toy_tokenizer, meta):
    return ActivationVerbalizer(target, toy_tokenizer, meta)


def responses(av, bodies):
    return pad_right(encode_responses(av.tokenizer, bodies), av.pad_id)


def test_prompt_holds_injection_token_once(av, meta, toy_tokenizer):
    ids = av.prompt_ids.tolist()
    assert ids.count(meta.injection_token_id) == 1
    text = toy_tokenizer.decode(ids)
    assert text.startswith("<|im_start|> user") and text.endswith("<|im_start|> assistant")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<explanation>\nthe colour is red .\n</explanation>", "the colour is red ."),
        ("noise <explanation> a </explanation> <explanation> b </explanation>", "a"),
        ("<explanation> never closed", None),
        ("<explanation>   </explanation>", None),
        ("no tags at all", None),
    ],
)
def test_extract_explanation(text, expected):
    assert extract_explanation(text) == expected


def test_injected_logprobs_equal_a_manual_inputs_embeds_forward(av, meta):
    acts = torch.randn(2, meta.d_model)
    ids, mask = responses(av, ["the colour is red .", "the person is anna ."])
    got = av.response_logprobs(acts, ids, mask)
    # Reference: build inputs_embeds by hand with the scaled unit vector at the token.
    prompt = av.prompt_ids.unsqueeze(0).expand(2, -1)
    full = torch.cat([prompt, ids], dim=1)
    embeds = av.model.get_input_embeddings()(full).detach().clone()
    pos = av.prompt_ids.tolist().index(meta.injection_token_id)
    embeds[:, pos] = acts / acts.norm(dim=-1, keepdim=True) * meta.injection_scale
    attention = torch.cat([torch.ones_like(prompt), mask], dim=1)
    logits = av.model(inputs_embeds=embeds, attention_mask=attention).logits
    logp = logits.log_softmax(-1)[:, prompt.shape[1] - 1 : -1].gather(-1, ids.unsqueeze(-1))
    torch.testing.assert_close(got, logp.squeeze(-1) * mask, atol=1e-5, rtol=1e-5)
    assert (got[mask == 0] == 0).all()


def test_a_group_shares_its_prompt_with_the_same_logprobs_and_gradients(av, meta):
    acts = torch.randn(2, meta.d_model)
    bodies = ["the colour is red .", "a", "the person is anna . the colour is blue ."]
    ids, mask = responses(av, bodies * 2)  # 2 groups of 3 ragged responses
    per_row = av.response_logprobs(acts.repeat_interleave(3, dim=0), ids, mask)
    grads = torch.autograd.grad(per_row.sum(), list(av.parameters()))
    shared = av.response_logprobs(acts, ids, mask, group_size=3)
    torch.testing.assert_close(shared, per_row, atol=1e-5, rtol=1e-5)
    assert (shared[mask == 0] == 0).all()
    # Each group's responses read its own activation (not the other group's).
    swapped = av.response_logprobs(acts.flip(0), ids, mask, group_size=3)
    assert not torch.allclose(swapped, shared, atol=1e-3)
    for a, b in zip(
        grads, torch.autograd.grad(shared.sum(), list(av.parameters())), strict=True
    ):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    with pytest.raises(NLAConfigError, match="3 activations in groups of 3 cannot explain 6"):
        av.response_logprobs(torch.randn(3, meta.d_model), ids, mask, group_size=3)


def test_gradient_checkpointing_runs_one_prompt_per_response(av, meta):
    # Checkpointed layers keep no KV cache in training mode: the group path must not be taken.
    acts = torch.randn(2, meta.d_model)
    ids, mask = responses(av, ["the colour is red .", "a"] * 2)
    expected = av.response_logprobs(acts.repeat_interleave(2, dim=0), ids, mask)
    gradient_checkpointing(av.model)
    av.model.train()
    got = av.response_logprobs(acts, ids, mask, group_size=2)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_injection_changes_the_output_and_only_through_the_vector(av, meta):
    ids, mask = responses(av, ["the colour is red ."] * 2)
    a = torch.randn(1, meta.d_model).expand(2, -1)
    b = torch.randn(1, meta.d_model).expand(2, -1)
    la, lb = av.response_logprobs(a, ids, mask), av.response_logprobs(b, ids, mask)
    assert not torch.allclose(la, lb)
    torch.testing.assert_close(la, av.response_logprobs(a * 3.0, ids, mask))  # norm is fixed


def test_sft_loss_is_masked_mean_of_response_tokens(av, meta):
    acts = torch.randn(2, meta.d_model)
    ids, mask = responses(av, ["the colour is red .", "a"])
    logp = av.response_logprobs(acts, ids, mask)
    torch.testing.assert_close(av.sft_loss(acts, ids, mask), -logp.sum() / mask.sum())


def test_sampling_is_batched_grouped_and_injects_in_prefill_only(av, meta):
    calls = []
    av.model.get_input_embeddings().register_forward_hook(
        lambda m, args, out: calls.append(args[0].shape)
    )
    torch.manual_seed(0)
    rollout = av.sample(torch.randn(3, meta.d_model), group_size=2, max_new_tokens=6)
    assert rollout.response_ids.shape[0] == 6 and rollout.response_ids.shape[1] <= 6
    assert len(rollout.texts) == len(rollout.explanations) == 6
    prompt_len = av.prompt_ids.numel()
    assert calls[0] == (6, prompt_len)  # one batched prefill for all rows
    assert all(shape[1] == 1 for shape in calls[1:])  # then KV-cached decode steps
    # mask is 1 up to and including the first end-of-turn token, 0 after
    eos = av.tokenizer.eos_token_id
    for row, m in zip(rollout.response_ids, rollout.response_mask, strict=True):
        ends = (row == eos).nonzero()
        if len(ends):
            assert m[: ends[0] + 1].all() and not m[ends[0] + 1 :].any()


def test_temperature_zero_is_greedy(av, meta):
    acts = torch.randn(2, meta.d_model) * 5
    torch.manual_seed(1)
    first = av.sample(acts, group_size=2, max_new_tokens=6, temperature=0.0)
    torch.manual_seed(2)
    again = av.sample(acts, group_size=2, max_new_tokens=6, temperature=0.0)
    assert torch.equal(first.response_ids, again.response_ids)  # no randomness at all
    assert torch.equal(first.response_ids[0], first.response_ids[1])  # a group is one answer
    torch.manual_seed(1)
    sampled = av.sample(acts, group_size=2, max_new_tokens=6, temperature=1.0)
    torch.manual_seed(2)
    assert not torch.equal(
        sampled.response_ids, av.sample(acts, group_size=2, max_new_tokens=6).response_ids
    )


def test_missing_or_repeated_injection_token_is_an_error(av, meta):
    from nla_lightning.core.verbalizer import EmbeddingInjector

    anywhere = EmbeddingInjector(av.model, meta)  # no fixed position: arbitrary prompts
    missing = av.prompt_ids.masked_fill(av.prompt_ids == meta.injection_token_id, 20)
    repeated = torch.cat([av.prompt_ids, torch.tensor([meta.injection_token_id])])
    for bad in (missing, repeated):
        with anywhere.active(torch.randn(1, meta.d_model)):
            with pytest.raises(NLAConfigError, match="exactly once"):
                av.model(input_ids=bad.unsqueeze(0))
    with av.injector.active(torch.randn(1, meta.d_model)):
        with pytest.raises(NLAConfigError, match="missing at position"):
            av.model(input_ids=missing.unsqueeze(0))


def test_a_response_repeating_the_injection_token_is_not_injected_again(av, meta):
    acts = torch.randn(1, meta.d_model)
    ids = torch.tensor([[meta.injection_token_id, 20, 21]])
    mask = torch.ones_like(ids)
    logp = av.response_logprobs(acts, ids, mask)
    assert torch.isfinite(logp).all()
    torch.manual_seed(0)
    rollout = av.sample(acts.expand(8, -1), max_new_tokens=10)
    assert not (rollout.response_ids == meta.injection_token_id).any()


def test_prompt_check_catches_wrong_neighbours(toy_tokenizer, meta):
    with pytest.raises(NLAConfigError, match="neighbours"):
        av_prompt_ids(toy_tokenizer, meta.with_updates(left_neighbour_id=0))


def test_bad_activations_are_refused(av, meta):
    ids, mask = responses(av, ["a"])
    with pytest.raises(NLAConfigError, match="width"):
        av.response_logprobs(torch.randn(1, meta.d_model + 1), ids, mask)
    with pytest.raises(NLAConfigError, match="NaN"):
        av.response_logprobs(torch.full((1, meta.d_model), float("inf")), ids, mask)


def test_save_and_reload_give_identical_logprobs(av, meta, tmp_path):
    av.save(tmp_path / "av")
    assert NLAMeta.load(tmp_path / "av") == meta
    again = ActivationVerbalizer.load(tmp_path / "av")
    acts = torch.randn(2, meta.d_model)
    ids, mask = responses(av, ["the place is the park .", "the action is painted ."])
    torch.testing.assert_close(
        av.response_logprobs(acts, ids, mask), again.response_logprobs(acts, ids, mask)
    )


# NF4's error on these response log-probs (the tiny target, 2 responses): max |diff| 0.048
# measured; a randomly initialised model of the same config is 0.50 away. 3x the measured error.
NF4_LOGPROB_TOLERANCE = 0.15


def test_four_bit_av_matches_the_full_precision_model_within_nf4_error(av, meta, tmp_path):
    from transformers import AutoModelForCausalLM

    av.save(tmp_path / "av")
    quantised = load_causal_lm(str(tmp_path / "av"), quantize_4bit=True)
    assert any("4bit" in type(m).__name__ for m in quantised.modules())
    av4 = ActivationVerbalizer(quantised, av.tokenizer, meta)
    acts = torch.randn(2, meta.d_model, generator=torch.Generator().manual_seed(0))
    ids, mask = responses(av, ["the colour is red .", "the object is a ball ."])
    full = av.response_logprobs(acts, ids, mask)
    four = av4.response_logprobs(acts, ids, mask)
    assert torch.isfinite(four).all()
    # NF4 is an approximation of the same weights: close, not equal
    assert not torch.equal(full, four)
    assert (full - four).abs().max() < NF4_LOGPROB_TOLERANCE
    # The tolerance tells models apart: a random model of the same config is far outside it.
    torch.manual_seed(1)
    random = AutoModelForCausalLM.from_config(av.model.config).eval()
    other = ActivationVerbalizer(random, av.tokenizer, meta).response_logprobs(acts, ids, mask)
    assert (full - other).abs().max() > 2 * NF4_LOGPROB_TOLERANCE
    assert len(av4.sample(acts, max_new_tokens=4).texts) == 2


def test_format_response_round_trips():
    assert extract_explanation(format_response("  the colour is red .  ")) == "the colour is red ."
