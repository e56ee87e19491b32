"""The AV's own sampling loop draws exactly what transformers' `generate` draws with the same
settings and seed; the compiled decoder draws exactly what the eager loop draws."""

import pytest
import torch

from nla_lightning.core.sampling import sample_responses
from nla_lightning.core.verbalizer import ActivationVerbalizer


@pytest.fixture(scope="module")
def warm_av(warm_nla):
    return ActivationVerbalizer.load(warm_nla[0])


@pytest.fixture(scope="module")
def activations(colour_mapping):
    """Four activations the warm start knows and two it never saw."""
    known = colour_mapping[0][:4]
    unseen = torch.randn(2, known.shape[1], generator=torch.Generator().manual_seed(0))
    return torch.cat([known, unseen * known.norm(dim=1).mean() / unseen.norm(dim=1).mean()])


def generate_reference(av, vectors, max_new_tokens, temperature, min_new_tokens):
    """What `generate` writes for the same prompt and settings (its documented sampling: the
    injection token suppressed, stop tokens held back until `min_new_tokens`, then
    softmax(logits / T) sampled; greedy at T = 0), cut after every row's first stop."""
    prompt = av.prompt_ids.unsqueeze(0).expand(len(vectors), -1)
    sampling = (
        {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
        if temperature > 0
        else {"do_sample": False, "temperature": None, "top_k": None, "top_p": None}
    )
    with av.injector.active(vectors):
        out = av.model.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens or None,
            eos_token_id=av.stop_ids,
            pad_token_id=av.pad_id,
            suppress_tokens=[av.meta.injection_token_id],
            use_cache=True,
            **sampling,
        )
    return out[:, prompt.shape[1] :]


@pytest.mark.parametrize(
    "temperature, min_new_tokens", [(1.0, 0), (0.0, 0), (1.5, 0), (1.0, 12)]
)
def test_the_loop_draws_what_generate_draws(warm_av, activations, temperature, min_new_tokens):
    vectors = activations.repeat_interleave(4, dim=0)
    torch.manual_seed(7)
    expected = generate_reference(warm_av, vectors, 40, temperature, min_new_tokens)
    torch.manual_seed(7)
    with warm_av.injector.active(vectors):
        got = sample_responses(
            warm_av.model,
            warm_av.prompt_ids.unsqueeze(0).expand(len(vectors), -1),
            max_new_tokens=40,
            stop_ids=warm_av.stop_ids,
            pad_id=warm_av.pad_id,
            temperature=temperature,
            min_new_tokens=min_new_tokens,
            suppress_ids=[warm_av.meta.injection_token_id],
        )
    assert got.shape == expected.shape  # cut at the longest row, as generate stops
    assert torch.equal(got, expected)
    stopped = torch.isin(got, torch.tensor(warm_av.stop_ids))
    lengths = torch.where(stopped.any(1), stopped.int().argmax(1) + 1, got.shape[1])
    assert stopped.any(1).any()
    if temperature > 0:
        # Sampled rows stop at different lengths: the padding after a stop and the cut are
        # exercised (greedy answers of the warm start are all one length).
        assert len(set(lengths.tolist())) > 1
    assert (lengths > min_new_tokens).all()


def test_min_new_tokens_holds_every_stop_back(warm_av, activations):
    torch.manual_seed(0)
    free = warm_av.sample(activations, group_size=2, max_new_tokens=40)
    assert int(free.lengths.min()) < 20  # without the floor some responses are shorter
    torch.manual_seed(0)
    forced = warm_av.sample(activations, group_size=2, max_new_tokens=40, min_new_tokens=20)
    assert int(forced.lengths.min()) >= 21  # 20 tokens, then the stop at the earliest
    forced_all = warm_av.sample(activations, group_size=2, max_new_tokens=30, min_new_tokens=30)
    assert forced_all.response_ids.shape[1] == 30 and bool((forced_all.lengths == 30).all())


def test_the_compiled_decoder_draws_the_same_tokens(warm_av, activations):
    for temperature in (1.0, 0.0):
        torch.manual_seed(3)
        eager = warm_av.sample(
            activations, group_size=3, max_new_tokens=32, temperature=temperature
        )
        torch.manual_seed(3)
        compiled = warm_av.sample(
            activations, group_size=3, max_new_tokens=32, temperature=temperature, compile=True
        )
        assert torch.equal(eager.response_ids, compiled.response_ids)
        assert torch.equal(eager.response_mask, compiled.response_mask)
    # One cache per (rows, capacity), reused by the next call of the same shape.
    assert list(warm_av._decoder.caches) == [(18, warm_av.prompt_ids.numel() + 32)]
