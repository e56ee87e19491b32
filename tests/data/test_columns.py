"""Which column a dataset's warm-start explanations come from, on plain column mappings."""

from __future__ import annotations

import pytest

from nla_lightning.core.meta import NLAMeta
from nla_lightning.data.columns import explanations
from nla_lightning.errors import NLAConfigError
from tests.data.release import CRITIC, write_sidecar


@pytest.fixture
def meta(tmp_path) -> NLAMeta:
    return NLAMeta.load(write_sidecar(tmp_path / "x.parquet", "ar_sft", rows=2))


def test_our_explanation_column_comes_first(meta):
    columns = {
        "explanation": ["mine"],
        "response": ["<explanation>\nother\n</explanation>"],
        "prompt": [CRITIC.format(explanation="third")],
    }
    assert explanations(columns, meta) == ["mine"]


def test_response_bodies_come_before_ar_inputs(meta):
    columns = {
        "response": ["<explanation>\nbody\n</explanation>"],
        "prompt": [CRITIC.format(explanation="other")],
    }
    assert explanations(columns, meta) == ["body"]


def test_ar_inputs_keep_the_explanation_exactly(meta):
    texts = ["  spaced  ", "<text>nested</text>", "two\n\nfeatures."]
    columns = {"prompt": [CRITIC.format(explanation=t) for t in texts]}
    assert explanations(columns, meta) == texts


def test_a_null_ar_input_is_refused_naming_its_row(meta):
    with pytest.raises(NLAConfigError, match="row 1 of the 'prompt' column .*None"):
        explanations({"prompt": [CRITIC.format(explanation="a"), None]}, meta)


def test_our_own_av_prompt_string_is_not_an_ar_input(meta):
    # nla_lightning's RL files keep the AV's message as a plain string prompt.
    with pytest.raises(NLAConfigError, match="no warm-start explanations"):
        explanations({"prompt": [meta.actor_message()] * 2}, meta)


def test_unclosed_response_is_refused(meta):
    with pytest.raises(NLAConfigError, match=r"rows \[1\] .*closed <explanation>"):
        explanations({"response": ["<explanation>a</explanation>", "<explanation> b"]}, meta)
