"""nla-steer in-process: baseline vs steered completions and its errors."""

from __future__ import annotations

import json

from nla_lightning.inference.cli.steer import main

EDIT = ["--original", "the colour is red .", "--edited", "the colour is blue ."]


def steer(capsys, model_args, *args: str) -> tuple[int, str, str]:
    code = main([*model_args, *EDIT, "--max-new-tokens", "5", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_baseline_and_steered(capsys, model_args, text):
    code, out, _ = steer(capsys, model_args, "--prompt", text, "--alpha", "50", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert len(data["baseline"]) == len(data["steered"]) == 3
    assert data["positions"] is None and data["alpha"] == 50.0
    # Greedy decoding: the baseline repeats; a strong push changes the continuation.
    assert len(set(data["baseline"])) == 1
    assert data["steered"] != data["baseline"]


def test_zero_alpha_changes_nothing(capsys, model_args, text):
    args = ["--prompt", text, "--alpha", "0", "--positions", "all", "--format", "json"]
    code, out, _ = steer(capsys, model_args, *args)
    assert code == 0
    data = json.loads(out)
    assert data["positions"] == "all" and data["steered"] == data["baseline"]


def test_markdown_table(capsys, model_args, text):
    args = ["--prompt", text, "--positions", "1,2", "--samples", "2"]
    code, out, _ = steer(capsys, model_args, *args)
    assert code == 0
    assert "| # | baseline | steered |" in out
    assert "\n| 1 | " in out and "\n| 2 | " in out and "\n| 3 | " not in out
    assert "- positions: [1, 2]" in out


def test_errors_exit_2(capsys, model_args, text):
    code, _, err = steer(capsys, model_args, "--prompt", text, "--positions", "0,99")
    assert code == 2 and "outside the prompt" in err
    code, _, err = steer(capsys, model_args, "--prompt", " ")
    assert code == 2 and "--prompt is empty" in err
    code, _, err = main(["--prompt", text]), *capsys.readouterr()
    assert code == 2 and "--av" in err
