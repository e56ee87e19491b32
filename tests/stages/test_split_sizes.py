"""A training split smaller than one batch is refused as soon as the data is known, before
the stage loads a model: from from_run's data up front, or right after the data stage."""

import pyarrow.parquet as pq
import pytest

from nla_lightning.errors import NLAConfigError
from nla_lightning.pipeline import run
from tests.conftest import TINY_RUN, plain


@pytest.mark.parametrize(
    ("stage", "key"), [("av_sft", "sft.av.batch_size"), ("rl", "rl.batch_size")]
)
def test_a_split_smaller_than_one_batch_is_refused_before_the_stage(tiny_run, tmp_path, stage, key):
    _, made = tiny_run
    rows = pq.read_metadata(made / "data" / f"{stage}.parquet").num_rows
    out = tmp_path / "run"
    overrides = [*TINY_RUN, f"stage={stage}", f"from_run={made}", f"{key}={rows + 1}"]
    with pytest.raises(NLAConfigError) as refused:
        run(plain(overrides, out))
    message = str(refused.value)
    assert f"has {rows} rows, fewer than one batch ({key}={rows + 1})" in message
    assert f"lower {key} to at most {rows}" in message
    assert not (out / "stages").exists()  # nothing started
    if stage == "av_sft":  # exactly one batch is enough
        ok = [*TINY_RUN, f"stage={stage}", f"from_run={made}", f"{key}={rows}"]
        assert run(plain(ok, tmp_path / "ok"))["stages"][stage]["train_rows"] == rows


def test_checked_right_after_the_data_stage(tmp_path):
    out = tmp_path / "run"
    overrides = [*TINY_RUN, "stage.run=[target,data,av_sft]", "sft.av.batch_size=100000"]
    with pytest.raises(NLAConfigError, match=r"sft\.av\.batch_size=100000"):
        run(plain(overrides, out))
    assert (out / "stages" / "data.json").exists()  # the data is kept for the next start
    assert not (out / "stages" / "av_sft.started").exists()  # no model was loaded for it
