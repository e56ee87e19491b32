"""stage=eval: eval.json with FVE, attribute scores and fidelity for each NLA of a run."""

import csv
import json

import pytest

from nla_lightning.core.models import load_causal_lm, load_tokenizer
from nla_lightning.errors import NLAConfigError
from nla_lightning.pipeline import run
from tests.conftest import TINY_RUN, check_eval_report_by_hand, plain


def test_eval_json_scores_both_nlas_of_the_run(tiny_run):
    """eval.json's numbers recomputed by hand from the run's checkpoints and data. The smoke
    NLA is untrained (fve -0.790, every explanation a failure; mean baseline -0.294; kl_nla
    0.0025, kl_mean 0.0017 seen), so the checks are equalities, not orderings."""
    summary, out = tiny_run
    report = json.loads((out / "eval.json").read_text())
    assert report == summary["stages"]["eval"]
    assert report["eval_rows"] == 16 and report["layer"] == summary["layer"]
    assert [report["fidelity"][c]["rows"] for c in ("warm_start", "rl")] == [8, 8]
    target = load_causal_lm(str(out / "target")).eval()
    check_eval_report_by_hand(report, out, target, load_tokenizer(str(out / "target")))
    for condition in ("warm_start", "rl"):
        if report["fve"][condition]["failure_rate"] == 1.0:
            assert report["attributes"][condition]["recall"] == 0.0  # nothing was said
    for condition in ("warm_start", "rl", "shuffled"):
        scores = report["attributes"][condition]
        assert scores["explanations_scored"] == 16
        assert set(scores["per_attribute"]) == {"who", "colour", "object", "where", "action"}
        for name in ("recall", "precision", "confabulation"):
            assert scores[name] is None or 0.0 <= scores[name] <= 1.0


def test_rl_logs_a_held_out_curve(tiny_run):
    summary, out = tiny_run
    curve = summary["stages"]["rl"]["curve"]
    assert [p["step"] for p in curve] == [0, 1, 2, 3]
    assert curve[0]["fve"] == summary["stages"]["rl"]["fve_start"]
    assert curve[-1]["fve"] == summary["stages"]["rl"]["fve"]
    with open(out / "logs" / "rl" / "metrics.csv") as f:
        logged = [r for r in csv.DictReader(f) if r.get("val/fve")]
    assert [int(r["step"]) for r in logged] == [0, 1, 2, 3]
    assert float(logged[-1]["val/fve"]) == pytest.approx(curve[-1]["fve"])
    # The toy world's ground truth scores every point of the curve too.
    assert all(0.0 <= p["recall"] <= 1.0 for p in curve)
    assert float(logged[-1]["val/recall"]) == pytest.approx(curve[-1]["recall"])


def test_stage_eval_of_an_earlier_run_writes_eval_json_there(tiny_run, tmp_path):
    _, previous = tiny_run
    before = json.loads((previous / "eval.json").read_text())
    summary = run(
        plain(
            [*TINY_RUN, "stage=eval", f"from_run={previous}", "eval.rows=8"],
            tmp_path,
        )
    )
    report = summary["stages"]["eval"]
    assert report["eval_rows"] == 8 and set(report["fve"]) >= {"warm_start", "rl"}
    assert json.loads((tmp_path / "eval.json").read_text()) == report
    assert json.loads((previous / "eval.json").read_text()) == report
    (previous / "eval.json").write_text(json.dumps(before))  # leave the shared run as it was


def test_stage_eval_needs_a_run_to_evaluate(tmp_path):
    with pytest.raises(NLAConfigError, match="from_run"):
        run(plain([*TINY_RUN, "stage=eval"], tmp_path))
    with pytest.raises(NLAConfigError, match="stage eval needs a trained NLA"):
        run(plain([*TINY_RUN, "stage=eval", f"from_run={tmp_path}"], tmp_path))


def test_printed_summary_has_a_line_per_evaluated_nla(tiny_run):
    from nla_lightning.stages.summary import RunSummary, human_summary

    summary, out = tiny_run
    text = human_summary(RunSummary.from_dict(summary), out)
    assert "eval     16 held-out rows (eval.json)" in text
    rl_fve = summary["stages"]["eval"]["fve"]["rl"]["fve"]
    assert f"after RL   FVE {rl_fve:.3f}" in text and "warm start FVE" in text
