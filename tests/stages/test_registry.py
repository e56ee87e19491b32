"""Stages as a registry: one module per name with one face, and a run whose stages would miss
an input fails before any work, naming what to add."""

from __future__ import annotations

import inspect

import pytest

from nla_lightning.errors import NLAConfigError
from nla_lightning.pipeline import run
from nla_lightning.settings.run import STAGE_NAMES
from nla_lightning.stages import REGISTRY, stage
from tests.conftest import TINY_RUN, plain


def test_every_stage_name_has_one_module_with_the_same_face():
    assert tuple(REGISTRY) == STAGE_NAMES
    for name in STAGE_NAMES:
        module = stage(name)
        assert module.NAME == name
        faces = {"needs": ["settings"], "makes": ["settings"], "run": ["ctx"]}
        for function, params in faces.items():
            assert list(inspect.signature(getattr(module, function)).parameters) == params


def test_an_unknown_stage_lists_the_stages():
    with pytest.raises(KeyError, match="av_sft"):
        stage("warm_up")


@pytest.mark.parametrize(
    ("stages", "missing", "add"),
    [
        ("[rl,av_sft]", "stage rl needs", "av_sft"),  # RL before the warm start it continues
        ("[av_sft]", "stage av_sft needs the toy target", "add target"),  # an empty run
        ("[target,data,eval]", "stage eval needs a trained NLA", "av_sft and ar_sft, or rl"),
    ],
)
def test_a_stage_without_its_inputs_fails_before_any_work(tmp_path, stages, missing, add):
    out = tmp_path / "run"
    with pytest.raises(NLAConfigError) as err:
        run(plain([*TINY_RUN, f"stage.run={stages}"], out))
    message = str(err.value)
    assert missing in message and add in message and "from_run" in message
    assert not out.exists(), "nothing may be written before the inputs are known to exist"


def test_from_run_supplies_the_inputs(tiny_run, tmp_path):
    """The same stage list is accepted when from_run holds what it needs."""
    from nla_lightning.pipeline import check_inputs
    from nla_lightning.settings import validate
    from nla_lightning.stages.context import StageContext
    from nla_lightning.stages.run_dir import RunDir

    settings = validate(plain([*TINY_RUN, "stage.run=[eval]", f"from_run={tiny_run[1]}"], tmp_path))
    check_inputs(settings, StageContext(settings, RunDir(tmp_path / "new"), RunDir(tiny_run[1])))
