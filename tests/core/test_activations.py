import pytest
import torch

from nla_lightning.core.activations import (
    capture_activations,
    check_finite,
    last_token_activations,
    normalise,
    normalised_mse,
)
from nla_lightning.core.padding import pad_right
from nla_lightning.errors import NLAConfigError


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_capture_is_hidden_states_of_layer_plus_one(target, toy_tokenizer, layer):
    ids = torch.tensor([toy_tokenizer.encode("anna painted the red ball in the park .")])
    with torch.no_grad():
        hidden = target(ids, output_hidden_states=True).hidden_states
    captured = capture_activations(target, ids, None, layer)
    torch.testing.assert_close(captured, hidden[layer + 1])
    assert not torch.allclose(captured, hidden[layer])


def test_last_block_is_read_before_the_final_norm(target, toy_tokenizer):
    # transformers applies the final norm to the last entry of hidden_states; the residual
    # stream at the output of the last block is the un-normed tensor.
    ids = torch.tensor([toy_tokenizer.encode("anna painted the red ball")])
    with torch.no_grad():
        hidden = target(ids, output_hidden_states=True).hidden_states
    captured = capture_activations(target, ids, None, 3)
    torch.testing.assert_close(target.model.norm(captured), hidden[4])


def test_last_token_ignores_right_padding(target, toy_tokenizer):
    texts = ["anna painted the red ball", "tom ran"]
    rows = [toy_tokenizer.encode(t) for t in texts]
    ids, mask = pad_right(rows, toy_tokenizer.pad_token_id)
    batched = last_token_activations(target, ids, mask, 2)
    for i, row in enumerate(rows):
        alone = capture_activations(target, torch.tensor([row]), None, 2)[0, -1]
        torch.testing.assert_close(batched[i], alone, atol=1e-5, rtol=1e-5)


def test_layer_out_of_range(target):
    with pytest.raises(NLAConfigError, match="out of range"):
        capture_activations(target, torch.tensor([[5, 6]]), None, 4)


def test_normalise_and_mse_of_unit_vectors():
    x = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    torch.testing.assert_close(normalise(x, 1.0).norm(dim=-1), torch.ones(2))
    # scale sqrt(d): MSE = 2 (1 - cos); orthogonal -> 2, identical -> 0, opposite -> 4
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 5.0], [2.0, 0.0], [-1.0, 0.0]])
    torch.testing.assert_close(normalised_mse(a, b, 2**0.5), torch.tensor([2.0, 0.0, 4.0]))


def test_non_finite_activations_are_refused():
    x = torch.ones(3, 4)
    x[1, 2] = float("nan")
    with pytest.raises(NLAConfigError, match=r"NaN or inf values \(rows \[1\]"):
        check_finite(x)
