"""nla-fidelity in-process: the four KLs and per-position values."""

from __future__ import annotations

import json
import math

import pytest

from nla_lightning.inference import fidelity as library_fidelity
from nla_lightning.inference.cli.fidelity import main

KINDS = ("kl_reconstruction", "kl_mean", "kl_shuffled", "kl_zero_ablation")


def fidelity(capsys, model_args, *args: str) -> tuple[int, str, str]:
    code = main([*model_args, "--max-new-tokens", "4", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_has_every_kl(capsys, model_args, nla, text, tokens):
    code, out, _ = fidelity(capsys, model_args, "--text", text, "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["positions"] == list(range(len(tokens))) and data["tokens"] == tokens
    assert all(math.isfinite(data[k]) for k in KINDS)
    # The library's numbers with the CLI's defaults (one sample, seed 0; the library's are
    # checked by hand in tests/inference/test_fidelity.py), to the 4 places JSON keeps; all
    # are 0.006-0.022 here, so 4 places tell them apart.
    expected = library_fidelity(nla, text, max_new_tokens=4)
    for key in KINDS:
        assert data[key] == pytest.approx(expected[key], abs=1e-4), key
    assert data["kl_per_position"] == pytest.approx(expected["kl_per_position"], abs=1e-4)
    assert len(data["kl_per_position"]) == len(data["explanations"]) == len(tokens)
    assert data["kl_reconstruction"] == round(sum(data["kl_per_position"]) / len(tokens), 4)


def test_one_token_has_no_shuffled_baseline(capsys, model_args, text):
    code, out, _ = fidelity(capsys, model_args, "--text", text, "--tokens", "2", "--format", "json")
    assert code == 0
    data = json.loads(out)  # strict JSON: the NaN shuffled KL became null
    assert data["positions"] == [2] and data["kl_shuffled"] is None


def test_markdown_lists_the_four_replacements(capsys, model_args, text):
    code, out, _ = fidelity(capsys, model_args, "--text", text, "--tokens", "0,1,2")
    assert code == 0
    for name in ("reconstruction", "mean activation", "shuffled", "zero ablation"):
        assert f"| {name}" in out
    assert sum(line.startswith(("| 0 |", "| 1 |", "| 2 |")) for line in out.splitlines()) == 3


def test_errors_exit_2(capsys, model_args, text):
    code, _, err = fidelity(capsys, model_args, "--text", "")
    assert code == 2 and "empty" in err
    code, _, err = fidelity(capsys, model_args, "--text", text, "--samples", "0")
    assert code == 2 and "--samples" in err
    code, _, err = fidelity(capsys, model_args)
    assert code == 2 and "--text" in err
