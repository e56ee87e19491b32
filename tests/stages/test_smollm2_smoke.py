"""experiment=smollm2_smoke: the real-model path end to end on SmolLM2-135M-Instruct (every
stage, tiny sizes), its summaries written by SmolLM2 itself."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow.parquet as pq
import yaml

from nla_lightning.core.injection_scale import round_above
from nla_lightning.core.models import load_causal_lm
from nla_lightning.core.target import load_hub_target
from nla_lightning.pipeline import run
from tests.conftest import check_eval_report_by_hand, plain


def test_smollm2_smoke_runs_every_stage(smollm2_cache, tmp_path):
    cache, _ = smollm2_cache
    out = tmp_path / "run"
    summary = run(plain(["experiment=smollm2_smoke", f"paths.cache_dir={cache}"], out))
    stages = summary["stages"]
    assert list(stages) == ["target", "data", "av_sft", "ar_sft", "rl", "eval"]
    assert summary["model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and summary["layer"] == 20
    assert summary["d_model"] == 576
    # The writer's counts are reported per summarised split, and some rows were kept.
    assert set(stages["data"]["writer"]) == {"av_sft", "ar_sft", "eval"}
    assert all(rows > 0 for rows in stages["data"]["rows"].values())
    # injection_scale=auto: the rule applied to this run's own AV-SFT activations.
    table = pq.read_table(out / "data" / "av_sft.parquet", columns=["activation_vector"])
    rows = np.asarray(table.column(0).combine_chunks().flatten()).reshape(table.num_rows, -1)
    mean = float(np.linalg.norm(rows.astype(np.float64), axis=-1).mean())
    assert stages["data"]["injection_scale"] == round_above(mean)
    av_meta = yaml.safe_load((out / "checkpoints" / "rl" / "av" / "nla_meta.yaml").read_text())
    assert av_meta["tokens"]["injection_char"] == "†"
    assert math.isclose(av_meta["extraction"]["injection_scale"], round_above(mean))
    report = stages["eval"]
    assert set(report["fidelity"]) == {"warm_start", "rl"}
    assert all(kl["rows"] == 2 for kl in report["fidelity"].values())  # eval.fidelity_rows
    # Recomputed by hand on SmolLM2 itself: the mean baseline, each kl_mean, and (where the
    # 2-step AV closed no explanation) fve and kl_nla, which then read AR("").
    settings = json.loads((out / "run_settings.json").read_text())
    target = load_hub_target(settings["model"], cache)
    model = load_causal_lm(target.path).eval()
    check_eval_report_by_hand(report, out, model, target.tokenizer)
