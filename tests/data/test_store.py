import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from nla_lightning.data.splits import split_of
from nla_lightning.data.store import (
    ActivationWriter,
    read_activations,
    sidecar_path,
    write_activations,
)
from nla_lightning.errors import NLAConfigError


def write(path, meta, n=5, acts=None):
    acts = torch.randn(n, meta.d_model) if acts is None else acts
    cols = {"doc_id": list(range(n)), "response": [f"r{i}" for i in range(n)]}
    return write_activations(path, acts, cols, meta), acts


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir())


def test_round_trip_is_exact_and_vectors_are_a_fixed_size_list(tmp_path, meta):
    path, acts = write(tmp_path / "a.parquet", meta)
    kind = pq.read_schema(path).field("activation_vector").type
    assert pa.types.is_fixed_size_list(kind) and kind.list_size == meta.d_model
    assert kind.value_type == pa.float32()
    table = read_activations(path, expect=meta)
    assert torch.equal(table.activations, acts)
    assert table.columns["doc_id"] == list(range(5))
    # A dataset does not record the injection scale: it is a training setting of the AV.
    assert table.meta == meta.with_updates(injection_scale=None)


def test_sidecar_is_a_dataset_sidecar_with_stage_and_row_count(tmp_path, meta):
    path, _ = write(tmp_path / "av_sft.parquet", meta, n=4)
    sidecar = yaml.safe_load(sidecar_path(path).read_text(encoding="utf-8"))
    assert sidecar["kind"] == "nla_dataset" and sidecar["schema_version"] == 1
    assert sidecar["stage"] == "av_sft" and sidecar["row_count"] == 4
    assert sidecar["extraction"]["d_model"] == meta.d_model
    assert "injection_scale" not in sidecar["extraction"]


@pytest.mark.parametrize(
    "name, stage",
    [("rl.parquet", "rl"), ("ar_sft/shard-00003.parquet", "ar_sft"), ("eval.parquet", "base")],
)
def test_stage_comes_from_the_file_or_its_directory(tmp_path, meta, name, stage):
    path, _ = write(tmp_path / name, meta, n=2)
    assert yaml.safe_load(sidecar_path(path).read_text(encoding="utf-8"))["stage"] == stage


def test_streaming_writer_appends_row_groups_on_disk_and_reads_back_exactly(tmp_path, meta):
    path = tmp_path / "big.parquet"
    chunks = [torch.randn(n, meta.d_model) for n in (3, 0, 5, 2)]
    with ActivationWriter(path, meta, columns=["doc_id"]) as writer:
        start = 0
        for chunk in chunks:
            writer.write(chunk, {"doc_id": [f"d{start + i}" for i in range(len(chunk))]})
            start += len(chunk)
            if start:  # rows go to disk as they come, not into a buffer held until the end
                assert (tmp_path / "big.parquet.tmp").stat().st_size > 0
            assert not path.exists() and not sidecar_path(path).exists()
    assert leftovers(tmp_path) == ["big.parquet", "big.parquet.nla_meta.yaml"]
    assert pq.ParquetFile(path).metadata.num_row_groups == 3
    table = read_activations(path, expect=meta)
    assert torch.equal(table.activations, torch.cat(chunks))
    assert table.columns["doc_id"] == [f"d{i}" for i in range(10)]
    assert yaml.safe_load(sidecar_path(path).read_text(encoding="utf-8"))["row_count"] == 10
    with pytest.raises(ValueError, match="already closed"):
        writer.write(chunks[0], {"doc_id": ["late"] * 3})


def test_an_exception_leaves_nothing_and_keeps_the_earlier_file(tmp_path, meta):
    path, acts = write(tmp_path / "a.parquet", meta, n=3)
    before = leftovers(tmp_path)
    with pytest.raises(RuntimeError, match="extraction died"):
        with ActivationWriter(path, meta, columns=["doc_id"]) as writer:
            writer.write(torch.randn(4, meta.d_model), {"doc_id": list(range(4))})
            raise RuntimeError("extraction died")
    assert leftovers(tmp_path) == before
    assert torch.equal(read_activations(path).activations, acts)


def test_a_chunk_with_other_columns_is_refused_and_nothing_is_left(tmp_path, meta):
    path = tmp_path / "a.parquet"
    with pytest.raises(ValueError, match=r"columns \['text'\], the writer was opened with"):
        with ActivationWriter(path, meta, columns=["doc_id"]) as writer:
            writer.write(torch.randn(2, meta.d_model), {"doc_id": [1, 2]})
            writer.write(torch.randn(2, meta.d_model), {"text": ["a", "b"]})
    assert leftovers(tmp_path) == []


def test_an_empty_file_round_trips(tmp_path, meta):
    path = write_activations(tmp_path / "e.parquet", torch.empty(0, meta.d_model), {}, meta)
    kind = pq.read_schema(path).field("activation_vector").type
    assert kind.list_size == meta.d_model
    assert read_activations(path).activations.shape == (0, meta.d_model)


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
    with pytest.raises(NLAConfigError, match=f"width {meta.d_model + 1}.*d_model is"):
        write(tmp_path / "a.parquet", meta, acts=torch.randn(3, meta.d_model + 1))
    assert leftovers(tmp_path) == []


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
    # A rewrite of the same size drops the cache even where the mtimes cannot tell the two
    # apart (coarse timestamps, a copied file): here the new file looks older than the cache.
    cached_at = mapped.stat().st_mtime
    path, acts2 = write(tmp_path / "a.parquet", meta, n=6)
    os.utime(path, (cached_at - 10, cached_at - 10))
    assert torch.equal(read_activations(path).activations, acts2)
