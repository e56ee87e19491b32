"""extract_corpus: rows equal direct computation, document-level splits, skips, resumes."""

from __future__ import annotations

import pytest
import torch

from nla_lightning.core.activations import decoder_layers, last_token_activations
from nla_lightning.data.extract import extract_corpus, prefix_lengths, read_split
from nla_lightning.data.extract.manifest import Manifest
from nla_lightning.data.splits import split_of
from nla_lightning.errors import NLAConfigError
from tests.conftest import LAYER
from tests.data.extract.conftest import FRACTIONS

KW = {"seed": 0, "prefixes_per_doc": 3, "min_tokens": 4, "max_tokens": 40, "progress": False}


def read_all(out_dir, meta):
    return {split: read_split(out_dir, split, expect=meta) for split in FRACTIONS}


def test_rows_equal_direct_computation(target, toy_tokenizer, meta, toy_docs, tmp_path):
    docs = toy_docs[:8]
    report = extract_corpus(
        target, toy_tokenizer, meta, docs, tmp_path, FRACTIONS, batch_size=5, **KW
    )
    texts = dict(docs)
    n_rows = 0
    for split, (vectors, columns) in read_all(tmp_path, meta).items():
        assert vectors.shape == (len(columns["doc_id"]), meta.d_model)
        assert vectors.dtype == torch.float32
        assert set(columns["split"]) <= {split}
        assert set(columns["activation_layer"]) <= {LAYER}
        pairs = zip(columns["doc_id"], columns["n_raw_tokens"], strict=True)
        for i, (doc_id, n) in enumerate(pairs):
            ids = toy_tokenizer(texts[doc_id], add_special_tokens=True)["input_ids"][:n]
            assert columns["text"][i] == toy_tokenizer.decode(ids)
            row = torch.tensor([ids])
            direct = last_token_activations(target, row, torch.ones_like(row), LAYER)[0]
            torch.testing.assert_close(vectors[i], direct, atol=1e-5, rtol=1e-5)
        n_rows += len(columns["doc_id"])
    assert n_rows == report.vectors == 8 * 3
    assert report.docs == 8 and report.vectors_per_s > 0
    assert "24 vectors from 8 docs" in str(report)


def test_split_by_document(target, toy_tokenizer, meta, toy_docs, tmp_path):
    report = extract_corpus(
        target, toy_tokenizer, meta, toy_docs, tmp_path, FRACTIONS, shard_rows=10, **KW
    )
    seen: dict[str, str] = {}
    for split, (_, columns) in read_all(tmp_path, meta).items():
        assert columns["doc_id"], f"split {split} is empty: the test corpus is too small"
        for doc_id in columns["doc_id"]:
            assert seen.setdefault(doc_id, split) == split, f"{doc_id} is in two splits"
            assert split == split_of(doc_id, FRACTIONS, 0)
        # Rows come in corpus order, and each document's prefixes are the expected ones.
        order = [d for d, _ in toy_docs if d in set(columns["doc_id"])]
        assert list(dict.fromkeys(columns["doc_id"])) == order
    assert len(seen) == len(toy_docs)
    assert sum(report.shards.values()) >= 3 and report.shards == Manifest.load(tmp_path).shards
    _, columns = read_split(tmp_path, "rl", expect=meta)
    first = columns["doc_id"][0]
    n_tokens = len(toy_tokenizer(dict(toy_docs)[first], add_special_tokens=True)["input_ids"])
    expected = prefix_lengths(first, n_tokens, 3, 0, 4, 40)
    assert columns["n_raw_tokens"][: len(expected)] == expected


def test_short_and_empty_docs_are_skipped_and_counted(
    target, toy_tokenizer, meta, toy_docs, tmp_path
):
    docs = [("empty", ""), ("blank", "  \n"), ("short", "anna red"), *toy_docs[:2]]
    report = extract_corpus(target, toy_tokenizer, meta, docs, tmp_path, FRACTIONS, **KW)
    assert (report.docs, report.skipped_empty, report.skipped_short) == (5, 2, 1)
    ids = {d for _, cols in read_all(tmp_path, meta).values() for d in cols.get("doc_id", [])}
    assert ids == {toy_docs[0][0], toy_docs[1][0]}
    assert Manifest.load(tmp_path).totals["skipped_empty"] == 2


def test_resume_with_other_settings_is_refused(target, toy_tokenizer, meta, toy_docs, tmp_path):
    extract_corpus(target, toy_tokenizer, meta, toy_docs[:3], tmp_path, FRACTIONS, **KW)
    with pytest.raises(NLAConfigError, match=r"other settings \(prefixes_per_doc: 3 on disk"):
        extract_corpus(
            target,
            toy_tokenizer,
            meta,
            toy_docs,
            tmp_path,
            FRACTIONS,
            **{**KW, "prefixes_per_doc": 2},
        )
    other = {"train": 0.5, "test": 0.5}
    with pytest.raises(NLAConfigError, match="fractions"):
        extract_corpus(target, toy_tokenizer, meta, toy_docs, tmp_path, other, **KW)


def test_crash_and_resume_in_process(target, toy_tokenizer, meta, toy_docs, tmp_path):
    class Crash(Exception):
        pass

    batches = 0

    def crash_late(_rows: int) -> None:
        nonlocal batches
        batches += 1
        if batches == 9:
            raise Crash

    crashed, clean = tmp_path / "crashed", tmp_path / "clean"
    args = (target, toy_tokenizer, meta, toy_docs)
    settings = {**KW, "batch_size": 3, "shard_rows": 5}
    with pytest.raises(Crash):
        extract_corpus(*args, crashed, FRACTIONS, on_batch=crash_late, **settings)
    done = Manifest.load(crashed)
    assert 0 < done.docs_done < len(toy_docs) and not done.complete
    # A shard written after the last manifest (crash mid-flush) must not survive the resume.
    orphan = crashed / "rl" / "shard-00077.parquet"
    orphan.write_bytes(b"half a file")
    report = extract_corpus(*args, crashed, FRACTIONS, **settings)
    assert report.resumed_from == done.docs_done
    assert report.docs == len(toy_docs) - done.docs_done
    assert not orphan.exists()
    extract_corpus(*args, clean, FRACTIONS, **settings)
    for split, (vectors, columns) in read_all(clean, meta).items():
        resumed_vectors, resumed_columns = read_split(crashed, split, expect=meta)
        assert resumed_columns["doc_id"] == columns["doc_id"]
        assert resumed_columns["n_raw_tokens"] == columns["n_raw_tokens"]
        assert torch.equal(resumed_vectors, vectors)
    assert Manifest.load(crashed).totals == Manifest.load(clean).totals


def test_nan_activation_names_the_document(target, toy_tokenizer, meta, toy_docs, tmp_path):
    def poison(_module, _args, output):
        if isinstance(output, tuple):
            return (output[0] * float("nan"), *output[1:])
        return output * float("nan")

    handle = decoder_layers(target)[LAYER].register_forward_hook(poison)
    try:
        with pytest.raises(NLAConfigError, match=r"document '.*' at prefix length \d+ .*NaN"):
            extract_corpus(target, toy_tokenizer, meta, toy_docs[:2], tmp_path, FRACTIONS, **KW)
    finally:
        handle.remove()
    assert Manifest.load(tmp_path) is None  # nothing half-done was recorded
