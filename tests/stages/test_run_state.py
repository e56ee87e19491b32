"""A run directory remembers its starts: finished stages are kept on the next start, a start
with other settings is refused before any work, and the command that continues it is written."""

import json

import pytest

from nla_lightning.errors import NLAConfigError
from nla_lightning.pipeline import run
from tests.conftest import TINY_RUN, plain


def test_a_second_start_keeps_finished_stages_and_runs_the_rest(tmp_path, capsys):
    out = tmp_path / "run"
    first = run(plain([*TINY_RUN, "stage.run=[target,data]"], out), command="python train.py x")
    weights = next((out / "target").glob("*.safetensors"))
    made = weights.stat().st_mtime_ns
    assert json.loads((out / "stages" / "target.json").read_text()) == first["stages"]["target"]
    assert not (out / "stages" / "target.started").exists()  # only while a stage runs
    assert (out / "command.txt").read_text() == "python train.py x\n"

    capsys.readouterr()
    second = run(plain([*TINY_RUN, "stage.run=[target,data,av_sft]", "verbose=true"], out))
    printed = capsys.readouterr().out
    assert "target: finished by an earlier start of this run (kept)" in printed
    assert "data: finished by an earlier start of this run (kept)" in printed
    assert weights.stat().st_mtime_ns == made  # not pretrained again
    assert second["stages"]["target"] == first["stages"]["target"]
    assert (out / "checkpoints" / "av").is_dir() and "av_sft" in second["stages"]
    assert not (out / "stages" / "av_sft.ckpt").exists()  # done: its checkpoint is removed


def test_a_start_with_other_settings_is_refused_naming_what_changed(tmp_path):
    out = tmp_path / "run"
    run(plain([*TINY_RUN, "stage.run=[target]"], out), command="python train.py debug=smoke")
    with pytest.raises(NLAConfigError) as refused:
        run(plain([*TINY_RUN, "stage.run=[target,data]", "seed=3"], out))
    message = str(refused.value)
    assert "seed: 0 -> 3" in message and "\n" not in message
    assert str(out / "command.txt") in message and "from_run=" in message
    assert not (out / "data").exists()  # refused before any work
