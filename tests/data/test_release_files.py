"""The release's three dataset files (AV-SFT, AR-SFT, RL), written from the documented layout:
read bit for bit, and their warm-start explanations found where each layout keeps them."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from nla_lightning.data.columns import table_explanations
from nla_lightning.data.store import read_activations
from nla_lightning.errors import NLAConfigError
from tests.data.release import (
    CRITIC,
    D_MODEL,
    LAYER,
    random_vectors,
    write_ar_sft,
    write_av_sft,
    write_rl,
)

TEXTS = ["the text is about red apples.", "a list of prices follows.\n\nnext: a number", "x"]


def test_av_sft_file_reads_bit_for_bit_and_gives_the_response_bodies(tmp_path):
    vectors = random_vectors(3)
    path = write_av_sft(tmp_path / "av_sft.parquet", vectors, TEXTS)
    kind = pq.read_schema(path).field("activation_vector").type
    assert kind.list_size == D_MODEL  # the fixture really is the release's fixed-width layout
    table = read_activations(path)
    assert np.array_equal(table.activations.numpy(), vectors)
    assert table.meta.d_model == D_MODEL and table.meta.layer == LAYER
    assert table.meta.injection_scale is None  # a dataset records none: it is a training setting
    assert table.columns["prompt"][0][0]["content"].count("<INJECT>") == 1
    assert table.columns["activation_layer"] == [LAYER] * 3
    assert table_explanations(table) == TEXTS


def test_ar_sft_file_gives_the_explanations_inside_the_whole_ar_inputs(tmp_path):
    vectors = random_vectors(3, seed=1)
    prompts = [CRITIC.format(explanation=t) for t in TEXTS]
    path = write_ar_sft(tmp_path / "ar_sft.parquet", vectors, prompts)
    table = read_activations(path)
    assert np.array_equal(table.activations.numpy(), vectors)
    assert "response" not in table.columns and "explanation" not in table.columns
    assert table_explanations(table) == TEXTS


@pytest.mark.parametrize(
    "prompt, problem",
    [
        ("Summary of this text: <text>a</text> <summary>", "does not start with"),
        ("Summary of the following text: <text>a</text>", "does not end with"),
    ],
)
def test_an_ar_input_off_the_template_is_refused_naming_its_row(tmp_path, prompt, problem):
    prompts = [CRITIC.format(explanation="fine"), CRITIC.format(explanation="ok"), prompt]
    path = write_ar_sft(tmp_path / "ar_sft.parquet", random_vectors(3), prompts)
    with pytest.raises(NLAConfigError, match=f"row 2 of the 'prompt' column .*{problem}"):
        table_explanations(read_activations(path))


def test_rl_file_reads_and_its_chat_prompts_are_not_taken_for_explanations(tmp_path):
    vectors = random_vectors(4, seed=2)
    path = write_rl(tmp_path / "rl.parquet", vectors)
    table = read_activations(path)
    assert np.array_equal(table.activations.numpy(), vectors)
    with pytest.raises(NLAConfigError, match="no warm-start explanations"):
        table_explanations(table)
