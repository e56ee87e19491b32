"""Reading `activation_vector` in every layout that exists: the release's FixedSizeList, and the
variable-length lists of older files; refusing widths that do not match the sidecar."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from nla_lightning.data import store
from nla_lightning.data.store import read_activations
from nla_lightning.errors import NLAConfigError
from tests.data.release import D_MODEL, provenance, random_vectors, write_table


def variable_lists(rows: list[np.ndarray], large: bool) -> pa.Array:
    """list<float32> (int32 offsets) or large_list<float32> (int64), as older files hold."""
    lengths = [len(r) for r in rows]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = pa.array(np.concatenate(rows).astype(np.float32))
    if large:
        return pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), flat)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), flat)


def write_vectors(path, vectors: pa.Array, d_model: int = D_MODEL):
    columns = {"activation_vector": vectors, **provenance(len(vectors))}
    return write_table(path, "base", columns, d_model=d_model)


@pytest.fixture
def small_batches(monkeypatch):
    """Record batches of 4 rows: a bad row past the first batch must still be named right."""
    monkeypatch.setattr(store, "READ_BATCH_ROWS", 4)


@pytest.mark.parametrize("large", [False, True], ids=["list", "large_list"])
def test_variable_length_lists_of_older_files_read_bit_for_bit(tmp_path, small_batches, large):
    vectors = random_vectors(11)
    path = write_vectors(tmp_path / "old.parquet", variable_lists(list(vectors), large))
    table = read_activations(path)
    assert table.activations.dtype == torch.float32
    assert np.array_equal(table.activations.numpy(), vectors)
    assert table.columns["n_raw_tokens"] == list(range(60, 71))


def test_fixed_size_list_of_another_width_names_field_file_and_widths(tmp_path):
    vectors = random_vectors(3, d_model=D_MODEL - 1)
    columns = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), D_MODEL - 1)
    path = write_vectors(tmp_path / "narrow.parquet", columns)
    with pytest.raises(NLAConfigError) as err:
        read_activations(path)
    message = str(err.value)
    assert "'activation_vector'" in message and str(path) in message
    assert f"width {D_MODEL - 1}" in message and f"d_model={D_MODEL}" in message
    assert "Re-extract" in message and "narrow.parquet.nla_meta.yaml" in message
    assert not (tmp_path / "narrow.parquet.f32").exists()
    assert not (tmp_path / "narrow.parquet.f32.tmp").exists()


def test_ragged_lists_are_refused_naming_the_first_bad_row(tmp_path, small_batches):
    rows = list(random_vectors(9))
    rows[6] = rows[6][:-2]  # in the second record batch
    path = write_vectors(tmp_path / "ragged.parquet", variable_lists(rows, large=False))
    with pytest.raises(NLAConfigError) as err:
        read_activations(path)
    message = str(err.value)
    assert "'activation_vector'" in message and str(path) in message
    assert f"width {D_MODEL - 2} (the first at row 6)" in message
    assert f"d_model={D_MODEL}" in message
    assert not (tmp_path / "ragged.parquet.f32").exists()


def test_variable_lists_all_of_another_width_are_refused(tmp_path):
    rows = list(random_vectors(3, d_model=D_MODEL + 4))
    path = write_vectors(tmp_path / "wide.parquet", variable_lists(rows, large=True))
    with pytest.raises(NLAConfigError, match=rf"width {D_MODEL + 4} \(the first at row 0\)"):
        read_activations(path)


def test_a_null_vector_is_refused_with_its_row(tmp_path, small_batches):
    vectors = random_vectors(6)
    flat = pa.array(vectors.reshape(-1))
    mask = pa.array([False] * 5 + [True])
    column = pa.FixedSizeListArray.from_arrays(flat, D_MODEL, mask=mask)
    path = write_vectors(tmp_path / "null.parquet", column)
    with pytest.raises(NLAConfigError, match="row 5 of column 'activation_vector' .* is null"):
        read_activations(path)


def test_a_column_that_is_not_float_vectors_is_refused(tmp_path):
    column = pa.array([[1, 2]] * 3, pa.list_(pa.int64()))
    path = write_vectors(tmp_path / "ints.parquet", column)
    expected = r"type list<\w+: int64>.*fixed_size_list<float>\[16\]"
    with pytest.raises(NLAConfigError, match=expected):
        read_activations(path)
