"""Real Lightning fits of the warm-start modules on a synthetic mapping they can learn."""

from nla_lightning.core.verbalizer import ActivationVerbalizer
from tests.conftest import COLOURS


def test_ar_sft_learns_to_reconstruct(warm_nla):
    metrics = warm_nla[2]
    assert metrics["ar_after"]["val/fve"] > 0.8 > metrics["ar_before"]["val/fve"]
    assert metrics["ar_after"]["val/fve_shuffled"] < 0.1


def test_av_sft_learns_to_read_the_injected_activation(warm_nla, colour_held_out):
    metrics = warm_nla[2]["av_after"]
    # The colour word is only predictable from the injected vector.
    assert metrics["val/loss"] < metrics["val/loss_shuffled"] - 0.2
    av = ActivationVerbalizer.load(warm_nla[0])
    activations = colour_held_out[0]  # noise the fit never saw
    # Greedy: what the AV believes most, not one draw of it.
    said = av.eval().explain(activations[:8], max_new_tokens=12, temperature=0.0)
    right = sum(e is not None and COLOURS[i] in e for i, e in enumerate(said))
    assert right >= 6, said
