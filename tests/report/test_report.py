"""nla-report on a real short run: files written, numbers true to the run, several runs,
partial runs and directories that are not runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from nla_lightning.report.cli import main
from nla_lightning.report.runs import load_runs, number
from tests.launcher import run_python
from tests.report.conftest import copy_run

PNG = b"\x89PNG\r\n\x1a\n"
RL_PLOTS = ("fve.png", "reward_kl.png", "response_length.png")


def report(*args: object) -> int:
    return main([str(a) for a in args])


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG, f"{path.name} is not a PNG"
    assert len(data) > 5000, f"{path.name} is only {len(data)} bytes"


def images(page: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page)


def expected_fve(run: Path) -> dict[str, float | None]:
    """The FVE figures as the run's own files hold them (eval.json when it has them)."""
    summary = json.loads((run / "summary.json").read_text())["stages"]
    evaluation = run / "eval.json"
    fve = json.loads(evaluation.read_text()).get("fve") if evaluation.exists() else None
    # AR-SFT FVE is its own measurement: summary.json's unless eval.json has one.
    ar_sft = number(fve, "ar_sft") if isinstance(fve, dict) else None
    expected = {"fve_ar_sft": summary["ar_sft"]["fve"] if ar_sft is None else ar_sft}
    if isinstance(fve, dict):
        return expected | {
            "fve_warm_start": number(fve, "warm_start", "fve"),
            "fve_rl": number(fve, "rl", "fve"),
            "fve_mean_baseline": number(fve, "mean_baseline"),
        }
    return expected | {
        "fve_warm_start": summary["rl"]["fve_start"],
        "fve_rl": summary["rl"]["fve"],
        "fve_mean_baseline": summary["ar_sft"]["fve_mean_baseline"],
    }


def test_one_run_gives_page_json_and_plots(real_run, tmp_path):
    out = tmp_path / "report"
    assert report(real_run, "--out", out) == 0
    page = (out / "report.md").read_text()
    assert page.startswith("# NLA training report")
    linked = images(page)
    assert set(RL_PLOTS) | {"sft_loss.png"} <= set(linked)
    for name in linked:  # relative links that resolve next to the page
        assert not Path(name).is_absolute()
        assert_png(out / name)
    if (real_run / "eval.json").exists():
        assert "attribute_recall.png" in linked
    else:
        assert "_Skipped: no run has attribute scores" in page
    data = json.loads((out / "report.json").read_text())
    assert data["plots"]["fve.png"] is True
    assert [r["label"] for r in data["runs"]] == [real_run.name]


def test_table_numbers_are_the_runs_numbers(real_run, tmp_path):
    out = tmp_path / "report"
    assert report(real_run, "--out", out) == 0
    values = json.loads((out / "report.json").read_text())["runs"][0]["values"]
    summary = json.loads((real_run / "summary.json").read_text())
    for key, expected in expected_fve(real_run).items():
        assert values[key] == pytest.approx(expected), key
    stages = summary["stages"]
    assert values["steps_rl"] == stages["rl"]["steps"] == 3
    assert values["steps_av_sft"] == stages["av_sft"]["steps"]
    assert values["wall_s"] == summary["wall_s"]
    fve_row = next(
        line
        for line in (out / "report.md").read_text().splitlines()
        if line.startswith(f"| {real_run.name} |") and "json" in line
    )
    for key in ("fve_warm_start", "fve_rl", "fve_ar_sft", "fve_mean_baseline"):
        assert f"| {values[key]:.3f} |" in fve_row


def test_console_script_writes_the_report(real_run, tmp_path):
    script = shutil.which("nla-report") or str(Path(sys.executable).parent / "nla-report")
    env = {**os.environ, "MPLBACKEND": "TkAgg"}  # a display backend must not matter
    done = run_python([script, str(real_run), "--out", str(tmp_path / "r")], tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert "report.md" in done.stdout
    for name in ("report.md", "report.json", *RL_PLOTS):
        assert (tmp_path / "r" / name).exists()


def test_two_runs_are_overlaid_with_one_label_each(real_run, relabelled_run, tmp_path):
    out = tmp_path / "report"
    assert report(real_run, relabelled_run, "--out", out) == 0
    data = json.loads((out / "report.json").read_text())
    labels = [r["label"] for r in data["runs"]]
    assert labels == [real_run.name, "seed=1 rl.beta=0.05"]
    page = (out / "report.md").read_text()
    for label in labels:
        assert page.count(f"| {label} |") >= 3  # the runs table and each results table
    for name in RL_PLOTS:
        assert_png(out / name)


def test_the_same_labels_are_told_apart(real_run, tmp_path):
    twin = copy_run(real_run, tmp_path / "a" / real_run.name)
    labels = [run.label for run in load_runs([real_run, twin, twin])]
    assert len(set(labels)) == 3
    assert all(label.startswith(real_run.name) for label in labels)


def test_a_run_without_rl_still_reports(warm_start_only_run, tmp_path):
    out = tmp_path / "report"
    assert report(warm_start_only_run, "--out", out) == 0
    page = (out / "report.md").read_text()
    assert "_Skipped: no run has RL logs" in page
    for name in RL_PLOTS:
        assert not (out / name).exists()
    assert_png(out / "sft_loss.png")
    values = json.loads((out / "report.json").read_text())["runs"][0]["values"]
    summary = json.loads((warm_start_only_run / "summary.json").read_text())["stages"]
    assert values["fve_rl"] is None and values["steps_rl"] is None
    assert values["fve_ar_sft"] == pytest.approx(summary["ar_sft"]["fve"])
    assert f"| {values['fve_ar_sft']:.3f} |" in page and "| — |" in page


def test_eval_json_fills_attribute_and_fidelity_tables(real_run, tmp_path):
    """Page formatting of eval.json's numbers, missing keys and NaN (the file is written here
    so the test does not depend on the evaluation stage)."""
    run = copy_run(real_run, tmp_path / "evaluated")
    scores = {"recall": 0.5, "precision": 0.75, "confabulation": 0.125}
    per = {name: {"recall": 0.25 * i, "precision": 0.5} for i, name in enumerate(["who", "where"])}
    evaluation = {
        "model": "toy",
        "layer": 2,
        "eval_rows": 8,
        "fve": {"mean_baseline": -0.25, "warm_start": {"fve": 0.375, "fve_shuffled": -0.5}},
        "attributes": {"warm_start": {**scores, "per_attribute": per}, "shuffled": scores},
        "fidelity": {"rl": {"kl_nla": 0.07, "kl_mean": float("nan")}},
        "wall_s": 12.3,
    }
    (run / "eval.json").write_text(json.dumps(evaluation))
    out = tmp_path / "report"
    assert report(run, "--out", out) == 0
    values = json.loads((out / "report.json").read_text())["runs"][0]["values"]
    assert values["fve_warm_start"] == 0.375 and values["fve_rl"] is None  # no mixing files
    summary = json.loads((run / "summary.json").read_text())["stages"]
    assert values["fve_ar_sft"] == summary["ar_sft"]["fve"]  # not in this eval.json
    assert values["recall_warm_start"] == 0.5 and values["recall_rl"] is None
    assert values["kl_nla_rl"] == 0.07 and values["kl_mean_rl"] is None  # NaN is missing
    page = (out / "report.md").read_text()
    attributes = page.split("## Attributes")[1].split("##")[0]
    assert "| 0.500 | — | 0.500 | 0.750 | — | 0.750 | 0.125 | — | 0.125 |" in attributes
    assert "| 0.070 |" in page and "| 12.3 |" in page
    assert_png(out / "attribute_recall.png")


@pytest.mark.parametrize("kind", ["empty", "missing", "sweep"])
def test_a_dir_that_is_not_a_run_exits_2_and_says_what_to_pass(real_run, tmp_path, capsys, kind):
    bogus = tmp_path / kind
    if kind != "missing":
        bogus.mkdir()
    if kind == "sweep":
        copy_run(real_run, bogus / "0")
    assert report(bogus, "--out", tmp_path / "report") == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: nla-report") and "nla-report: error:" in err
    assert "summary.json" in err and "Traceback" not in err
    if kind == "sweep":
        assert str(bogus / "0") in err
    assert not (tmp_path / "report" / "report.md").exists()


def test_a_bogus_dir_fails_the_console_script_with_exit_2(tmp_path):
    script = shutil.which("nla-report") or str(Path(sys.executable).parent / "nla-report")
    done = run_python([script, str(tmp_path), "--out", str(tmp_path / "r")], tmp_path)
    assert done.returncode == 2
    assert "is not a training run directory" in done.stderr and "Traceback" not in done.stderr


def test_an_eval_json_of_another_version_is_noted_and_summary_json_used(real_run, tmp_path):
    """The one rule: eval.json when readable, else summary.json's eval section, never a mix."""
    run = copy_run(real_run, tmp_path / "other_version")
    (run / "eval.json").write_text(json.dumps({"fve": {}, "score_v0": 1}))
    [loaded] = load_runs([run])
    assert any("eval.json could not be read" in note for note in loaded.notes)
    in_summary = json.loads((run / "summary.json").read_text())["stages"]["eval"]
    assert loaded.evaluation is not None
    assert loaded.evaluation.fve == in_summary["fve"]
