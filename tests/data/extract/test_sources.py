"""Document sources: each file type, deterministic order and clear errors."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nla_lightning.data.extract.sources import iter_documents
from nla_lightning.errors import NLAConfigError


def test_txt_jsonl_parquet_and_directories(tmp_path):
    (tmp_path / "b.txt").write_text("second doc", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first doc", encoding="utf-8")
    lines = [{"text": "j one", "id": "x1"}, {"text": "", "id": "x2"}]
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in lines) + "\n", encoding="utf-8")
    parquet = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["p one", "p two"], "id": [7, 8]}), parquet)

    docs = list(iter_documents([tmp_path]))
    assert docs == [
        ("a", "first doc"),
        ("b", "second doc"),
        (f"{jsonl}:1", "j one"),
        (f"{jsonl}:2", ""),  # empty documents are yielded; the extractor skips them
        (f"{parquet}:0", "p one"),
        (f"{parquet}:1", "p two"),
    ]
    with_ids = list(iter_documents([jsonl, parquet], id_field="id"))
    assert [d for d, _ in with_ids] == ["x1", "x2", "7", "8"]
    assert list(iter_documents([tmp_path])) == docs  # deterministic


def test_non_utf8_txt_names_file_and_offset(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe bad")
    with pytest.raises(NLAConfigError, match=r"bad\.txt.*UTF-8.*byte offset 0.*re-encode"):
        list(iter_documents([bad]))


def test_non_utf8_jsonl_offset_counts_earlier_lines(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "ok"}\n{"text": "\xe9"}\n')
    with pytest.raises(NLAConfigError, match=r"bad\.jsonl:2.*byte offset 25"):
        list(iter_documents([bad]))


def test_malformed_jsonl_names_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": oops}\n', encoding="utf-8")
    docs = iter_documents([bad])
    assert next(docs)[1] == "fine"
    with pytest.raises(NLAConfigError, match=r"bad\.jsonl:2 is not valid JSON"):
        next(docs)


def test_missing_text_field(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"body": "x"}\n', encoding="utf-8")
    with pytest.raises(NLAConfigError, match=r"a\.jsonl:1 has no 'text' field.*body"):
        list(iter_documents([jsonl]))
    parquet = tmp_path / "a.parquet"
    pq.write_table(pa.table({"body": ["x"]}), parquet)
    with pytest.raises(NLAConfigError, match=r"has no column 'text'.*body"):
        list(iter_documents([parquet]))


def test_corrupt_parquet(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet at all")
    with pytest.raises(NLAConfigError, match=r"bad\.parquet is not a readable Parquet file"):
        list(iter_documents([bad]))


def test_unsupported_and_missing_inputs(tmp_path):
    (tmp_path / "x.csv").write_text("a,b", encoding="utf-8")
    with pytest.raises(NLAConfigError, match="unsupported file type '.csv'"):
        list(iter_documents([tmp_path / "x.csv"]))
    with pytest.raises(NLAConfigError, match="no such document file"):
        list(iter_documents([tmp_path / "nope.txt"]))
    with pytest.raises(NLAConfigError, match="no documents"):
        list(iter_documents())


def test_hf_dataset_without_datasets_library(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails even if installed
    with pytest.raises(NLAConfigError, match="pip install datasets"):
        list(iter_documents(hf_dataset="some/corpus"))
