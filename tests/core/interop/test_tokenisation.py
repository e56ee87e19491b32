"""The tokenisation protocol on the real Qwen byte-level BPE tokenizer, whose released NLA
metadata is documented: injection char, neighbours, AR input and its suffix tail."""

from __future__ import annotations

import pytest
from transformers import Qwen2Config

from nla_lightning.core.meta import build_meta
from nla_lightning.core.reconstructor import ActivationReconstructor
from nla_lightning.core.templates import REFERENCE_ACTOR_TEMPLATE, REFERENCE_CRITIC_TEMPLATE
from nla_lightning.errors import NLAConfigError
from tests.core.interop.release_pair import LAYER

QWEN_7B = Qwen2Config(hidden_size=3584, num_hidden_layers=28)


def test_metadata_equals_the_released_qwen_nla(qwen_tokenizer):
    meta = build_meta(qwen_tokenizer, QWEN_7B, "Qwen/Qwen2.5-7B-Instruct", 20, 150.0)
    assert (meta.injection_char, meta.injection_token_id) == ("㈎", 149705)
    assert (meta.left_neighbour_id, meta.right_neighbour_id) == (29, 522)
    assert meta.critic_suffix_ids == (1318, 29, 366, 1708, 29)
    assert meta.mse_scale == pytest.approx(59.8665, abs=1e-4)
    assert meta.actor_template == REFERENCE_ACTOR_TEMPLATE
    assert meta.critic_template == REFERENCE_CRITIC_TEMPLATE


@pytest.fixture(scope="module")
def qwen_ar(qwen_target, qwen_tokenizer):
    from nla_lightning.core.models import load_config

    meta = build_meta(qwen_tokenizer, load_config(str(qwen_target)), "tiny-qwen", LAYER, 3.0)
    return ActivationReconstructor.from_target(str(qwen_target), qwen_tokenizer, meta)


def test_ar_input_is_the_whole_string_tokenised_at_once(qwen_ar, qwen_tokenizer):
    explanation = "The sentence ends with a full stop."
    [row] = qwen_ar.encode([explanation])
    text = REFERENCE_CRITIC_TEMPLATE.format(explanation=explanation)
    assert row == qwen_tokenizer(text, add_special_tokens=True)["input_ids"]
    # `.` and `</` merge into `.</` (3918); appending the suffix as ids would give 13, 522.
    assert row[-6:] == [3918, 1318, 29, 366, 1708, 29]


def test_ar_input_that_breaks_the_suffix_tail_is_refused(qwen_target, qwen_tokenizer):
    from nla_lightning.core.models import load_config

    # The suffix "====> done" tokenises alone as "====", ">", " done"; after an explanation
    # ending in "=" the merge reaches past its first id ("====", "=>", " done").
    template = "Read: {explanation}====> done"
    meta = build_meta(
        qwen_tokenizer,
        load_config(str(qwen_target)),
        "tiny-qwen",
        LAYER,
        3.0,
        critic_template=template,
    )
    ar = ActivationReconstructor.from_target(str(qwen_target), qwen_tokenizer, meta)
    rows = ar.encode(["a plain ending", "x="], overflow="none")
    assert rows[0] is not None and rows[1] is None
    with pytest.raises(NLAConfigError, match="does not end with the critic suffix ids"):
        ar.encode(["x="])


def test_ar_input_over_300_tokens_is_a_failure(qwen_ar):
    long = "word " * 400
    assert qwen_ar.encode([long, "short"], overflow="none")[0] is None
    with pytest.raises(NLAConfigError, match="over the AR's limit of 300"):
        qwen_ar.encode([long])
