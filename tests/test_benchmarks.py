"""Each benchmark script runs in --quick mode and reports sane, positive numbers."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from statistics import median

import pytest

from tests.launcher import run_python

REPO = Path(__file__).resolve().parents[1]


def run_benchmark(script: str, tmp_path: Path, *extra: str) -> tuple[str, dict]:
    out = tmp_path / f"{script}.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    script_path = str(REPO / "benchmarks" / f"{script}.py")
    argv = [script_path, "--quick", "--threads", "1", "--json", str(out), *extra]
    done = run_python(argv, REPO, env)  # a child process, forked from a preloaded one
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert done.stdout.startswith("machine: "), done.stdout[:500]
    return done.stdout, json.loads(out.read_text())


def table_rows(stdout: str, header_start: str) -> list[list[str]]:
    """Cells of the Markdown table whose header begins with `header_start`."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header_start}"))
    assert set(lines[start + 1]) <= set("|-"), lines[start + 1]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    assert rows
    return rows


def positive(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def check_machine(payload: dict) -> None:
    machine = payload["machine"]
    assert machine["device"] == "cpu" and machine["cores"] >= 1
    assert machine["torch_threads"] == 1 and machine["torch"]
    assert payload["quick"] is True


def test_rollout_speed(tmp_path):
    stdout, payload = run_benchmark("rollout_speed", tmp_path)
    check_machine(payload)
    (result,) = payload["results"]
    assert result["tokens_per_call"] == result["rows"] * result["max_new_tokens"]
    for key in ("ours_tokens_per_s", "generate_tokens_per_s", "ratio", "cpu_ratio"):
        assert positive(result[key]), (key, result[key])
    assert len(result["seconds"]["ours"]) == len(result["seconds"]["generate"]) == 3
    (row,) = table_rows(stdout, "activations x G")
    assert row[0] == "2 x 2" and all(positive(float(cell)) for cell in row[1:])


def test_extraction(tmp_path):
    stdout, payload = run_benchmark("extraction", tmp_path)
    check_machine(payload)
    results = payload["results"]
    assert {(r["path"], r["batch_size"]) for r in results} == {
        (path, batch) for path in ("final-token", "nla-extract") for batch in (8, 32)
    }
    for r in results:
        assert r["vectors"] == payload["snippets"] == 64
        assert positive(r["median_s"]) and positive(r["vectors_per_s"])
    rows = table_rows(stdout, "path")
    assert len(rows) == 4 and all(positive(float(row[-1])) for row in rows)


def test_rl_step(tmp_path):
    stdout, payload = run_benchmark("rl_step", tmp_path, "--hidden", "64")
    check_machine(payload)
    assert payload["d_model"] == 64  # --hidden builds the synthetic NLA at that width
    assert payload["timed_steps"] == 3
    assert positive(payload["step_s"]) and positive(payload["tokens_per_s"])
    assert all(v >= 0 for v in payload["phase_mean_s"].values())
    assert payload["phase_mean_s"]["rollout"] > 0 and payload["phase_mean_s"]["av"] > 0
    phases = [row[0] for row in table_rows(stdout, "phase")]
    assert phases == ["rollout", "ar", "av", "step"]


def test_vs_trl(tmp_path):
    stdout, payload = run_benchmark("vs_trl", tmp_path)
    assert payload["machine"]["trl"] and payload["reference"] == "frozen"
    assert payload["prompts"] == "reference"
    (shape,) = payload["shapes"]
    assert shape["prompt_tokens"] > 50  # the release's prompt, not the toy world's
    assert (shape["batch"], shape["group"], shape["cap"]) == (2, 2, 6)
    # Both sides wrote exactly the cap for every sample (checked by the script, which exits
    # non-zero otherwise) and were timed on every round's steps but the first.
    assert shape["response_tokens_per_step"] == 2 * 2 * 6
    assert len(shape["nla_steps_ms"]) == len(shape["trl_steps_ms"]) == 2
    assert shape["ratio"] == pytest.approx(shape["nla_ms"] / shape["trl_ms"])
    assert shape["nla_tokens_per_s"] == pytest.approx(24 / shape["nla_ms"] * 1000)
    (row,) = table_rows(stdout, "batch x group")
    assert row[0] == "2 x 2, 6 tokens" and row[-2] == f"{shape['ratio']:.2f}"
    assert stdout.rstrip().splitlines()[-1] == f"ratio NLA/TRL ms per step: {shape['ratio']:.2f}"


def test_pipeline(tmp_path):
    # Overrides after `--` reach train.py (and come last, so they win).
    stdout, payload = run_benchmark("pipeline", tmp_path, "--", "rl.steps=1")
    check_machine(payload)
    assert payload["overrides"][-1] == "rl.steps=1"
    stages = payload["stages"]
    total = stages.pop("total (summary.json)")
    process = stages.pop("process (with start-up)")
    assert {"target", "av_sft", "ar_sft", "rl", "data and other"} <= set(stages)
    # summary.json rounds each stage to 0.1 s: a tiny stage may read 0.0.
    assert all(seconds >= 0 for seconds in stages.values()), stages
    assert positive(total) and sum(stages.values()) == pytest.approx(total, abs=0.5)
    assert process >= total
    assert [row[0] for row in table_rows(stdout, "stage")][:4] == [
        "target",
        "av_sft",
        "ar_sft",
        "rl",
    ]


def test_large_split(tmp_path):
    stdout, payload = run_benchmark("large_split", tmp_path, "--dir", str(tmp_path / "split"))
    check_machine(payload)
    assert (payload["rows"], payload["d_model"]) == (3000, 256)
    assert payload["rows_read"] == 3000 and payload["bit_exact"] is True
    assert payload["checked_rows"][-1] == 2999
    assert payload["column_type"].startswith("fixed_size_list<")
    assert payload["column_type"].endswith(">[256]")
    assert payload["row_groups"] == 5  # one per chunk of 700 rows: written as they came
    assert payload["cache_gb"] == pytest.approx(3000 * 256 * 4 / 1e9)
    for phase in payload["phases"].values():
        assert all(positive(phase[key]) for key in ("seconds", "gb_per_s", "peak_rss_gb"))
    rows = table_rows(stdout, "phase")
    assert [row[0] for row in rows] == ["write", "read (builds .f32)", "read (cached)"]
    assert not any((tmp_path / "split").iterdir())  # the files are deleted afterwards


def test_extraction_positions(tmp_path, target_dir):
    stdout, payload = run_benchmark("extraction_positions", tmp_path, "--target", str(target_dir))
    check_machine(payload)
    results = payload["results"]
    assert [r["positions"] for r in results] == [4, 10]
    for r in results:
        # Every document is long enough for all its positions; both paths give the same rows.
        assert r["vectors"] == payload["documents"] * r["positions"]
        assert r["max_abs_diff"] <= 1e-4 * r["max_abs_value"]
        assert positive(r["per_prefix_vectors_per_s"]) and positive(r["speed_up"])
    assert [row[0] for row in table_rows(stdout, "positions/doc")] == ["4", "10"]


def test_extraction_scaling(tmp_path, target_dir):
    stdout, payload = run_benchmark("extraction_scaling", tmp_path, "--target", str(target_dir))
    check_machine(payload)
    assert [r["batch_size"] for r in payload["by_batch_size"]] == [1, 2]
    assert [r["length"] for r in payload["by_length"]] == [32, 48]
    for r in payload["by_batch_size"] + payload["by_length"]:
        assert r["vectors"] == payload["documents"] * payload["positions"]
        # Each document is read once, at most to its length (plus the special tokens).
        assert payload["documents"] * payload["positions"] < r["tokens_read"]
        assert r["tokens_read"] <= payload["documents"] * (r["length"] + 8)
        assert r["vectors_per_s"] == pytest.approx(r["vectors"] / median(r["seconds"]))
    # The same documents at batch 1 and 2: the same tokens read.
    first, second = payload["by_batch_size"]
    assert first["tokens_read"] == second["tokens_read"]
    assert len(table_rows(stdout, "batch size")) == 2
