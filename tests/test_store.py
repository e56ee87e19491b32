import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from nla_lightning.data.splits import split_of
from nla_lightning.data.store import read_activations, sidecar_path, write_activations
from nla_lightning.errors import NLAConfigError


def write(path, meta, n=5, acts=None):
    acts = torch.randn(n, meta.d_model) if acts is None else acts
    cols = {"doc_id": list(range(n)), "response": [f"r{i}" for i in range(n)]}
    return write_activations(path, acts, cols, meta), acts


def test_round_trip_is_exact_and_uses_list_float32(tmp_path, meta):
    path, acts = write(tmp_path / "a.parquet", meta)
    kind = pq.read_schema(path).field("activation_vector").type
    assert kind.num_fields == 1 and str(kind.value_type) == "float"
    assert sidecar_path(path).exists()
    table = read_activations(path, expect=meta)
    assert torch.equal(table.activations, acts)
    assert table.columns["doc_id"] == list(range(5))
    assert table.meta == meta


def test_sidecar_of_another_layer_is_refused(tmp_path, meta):
    path, _ = write(tmp_path / "a.parquet", meta.with_updates(layer=1))
    with pytest.raises(NLAConfigError, match="layer is 1 there but 2 here"):
        read_activations(path, expect=meta)


def test_missing_sidecar_is_refused(tmp_path, meta):
    path, _ = write(tmp_path / "a.parquet", meta)
    sidecar_path(path).unlink()
    with pytest.raises(NLAConfigError, match="sidecar"):
        read_activations(path)


def test_corrupt_parquet_is_refused(tmp_path, meta):
    path, _ = write(tmp_path / "a.parquet", meta)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(NLAConfigError, match="not a readable Parquet file"):
        read_activations(path)


def test_nan_rows_are_refused_with_their_index(tmp_path, meta):
    acts = torch.randn(4, meta.d_model)
    acts[3, 0] = float("inf")
    path, _ = write(tmp_path / "a.parquet", meta, n=4, acts=acts)
    with pytest.raises(NLAConfigError, match=r"rows \[3\]"):
        read_activations(path)


def test_wrong_width_is_refused_on_write(tmp_path, meta):
    with pytest.raises(NLAConfigError, match="width"):
        write(tmp_path / "a.parquet", meta, acts=torch.randn(3, meta.d_model + 1))
    assert not (tmp_path / "a.parquet").exists()


def test_document_split_is_stable_and_close_to_the_fractions():
    fractions = {"a": 0.3, "b": 0.3, "c": 0.4}
    parts = [split_of(i, fractions, seed=0) for i in range(4000)]
    assert parts == [split_of(i, fractions, seed=0) for i in range(4000)]
    counts = {k: parts.count(k) / 4000 for k in fractions}
    assert all(abs(counts[k] - fractions[k]) < 0.03 for k in fractions)
    assert parts != [split_of(i, fractions, seed=1) for i in range(4000)]
    assert np.unique(parts).size == 3


def test_activations_are_memory_mapped_and_rebuilt_when_the_file_changes(tmp_path, meta):
    path, acts = write(tmp_path / "a.parquet", meta, n=6)
    table = read_activations(path)
    mapped = tmp_path / "a.parquet.f32"
    assert mapped.stat().st_size == 6 * meta.d_model * 4
    assert torch.equal(table.activations[torch.tensor([4, 1])], acts[torch.tensor([4, 1])])
    table.activations[0].zero_()  # copy-on-write: the file underneath is never changed
    assert torch.equal(read_activations(path).activations, acts)
    import os
    import time

    time.sleep(0.01)
    path2, acts2 = write(tmp_path / "a.parquet", meta, n=3)
    os.utime(path2, (time.time() + 5, time.time() + 5))
    assert torch.equal(read_activations(path2).activations, acts2)
