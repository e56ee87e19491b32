"""A resume must see the corpus it was interrupted on: documents already extracted that were
edited, removed or moved are refused (one line, nothing written); documents added after them
are extracted as an uninterrupted run over the new corpus would."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from nla_lightning.data.extract import cli as extract_cli
from nla_lightning.data.extract import extract_corpus, read_split
from nla_lightning.data.extract.manifest import MANIFEST_NAME, Manifest
from nla_lightning.errors import NLAConfigError
from tests.data.extract.conftest import FRACTIONS
from tests.data.extract.test_extract import KW
from tests.data.extract.test_kill import cli_args

SETTINGS = {**KW, "batch_size": 3, "shard_rows": 5}


class Crash(Exception):
    pass


def crash_after_checkpoint(out_dir: Path):
    """An on_batch hook that kills the run at the first batch after a manifest exists."""

    def hook(_rows: int) -> None:
        if (Path(out_dir) / MANIFEST_NAME).exists():
            raise Crash

    return hook


def interrupt(target, tokenizer, meta, docs, out_dir) -> Manifest:
    with pytest.raises(Crash):
        extract_corpus(
            target,
            tokenizer,
            meta,
            docs,
            out_dir,
            FRACTIONS,
            on_batch=crash_after_checkpoint(out_dir),
            **SETTINGS,
        )
    done = Manifest.load(out_dir)
    assert 2 <= done.docs_done < len(docs) - 2 and not done.complete
    assert done.fingerprint is not None
    return done


def snapshot(out_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out_dir)): p.read_bytes() for p in out_dir.rglob("*") if p.is_file()}


def assert_same_rows(got_dir: Path, want_dir: Path, meta) -> None:
    for split in FRACTIONS:
        want_vectors, want = read_split(want_dir, split, expect=meta)
        got_vectors, got = read_split(got_dir, split, expect=meta)
        assert got["doc_id"] == want["doc_id"]
        assert got["n_raw_tokens"] == want["n_raw_tokens"]
        assert torch.equal(got_vectors, want_vectors)
    assert Manifest.load(got_dir).totals == Manifest.load(want_dir).totals
    assert Manifest.load(got_dir).fingerprint == Manifest.load(want_dir).fingerprint


def refusal(target, tokenizer, meta, docs, out_dir) -> str:
    """The message of the refused resume, after checking that nothing on disk changed."""
    before = snapshot(out_dir)
    with pytest.raises(NLAConfigError) as info:
        extract_corpus(target, tokenizer, meta, docs, out_dir, FRACTIONS, **SETTINGS)
    assert snapshot(out_dir) == before  # no rows appended, no shard removed, same manifest
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        f"{out_dir} holds an extraction of another corpus: the corpus changed since the "
        "interrupted extraction ("
    )
    assert message.endswith(
        f": restore the corpus as it was, or delete {out_dir} (or extract into another "
        "directory) to start again"
    )
    return message


def test_resume_after_an_extracted_document_was_edited_is_refused(
    target, toy_tokenizer, meta, toy_docs, tmp_path
):
    out, clean = tmp_path / "out", tmp_path / "clean"
    done = interrupt(target, toy_tokenizer, meta, toy_docs, out)
    edited = list(toy_docs)
    edited[1] = (edited[1][0], edited[1][1] + " anna")
    message = refusal(target, toy_tokenizer, meta, edited, out)
    assert f"(documents 0..{done.docs_done - 1} no longer match the ones extracted)" in message
    # The refused directory is intact: with the corpus restored, it resumes to the same rows.
    report = extract_corpus(target, toy_tokenizer, meta, toy_docs, out, FRACTIONS, **SETTINGS)
    assert report.resumed_from == done.docs_done
    extract_corpus(target, toy_tokenizer, meta, toy_docs, clean, FRACTIONS, **SETTINGS)
    assert_same_rows(out, clean, meta)


def test_resume_after_an_extracted_document_was_removed_is_refused(
    target, toy_tokenizer, meta, toy_docs, tmp_path
):
    done = interrupt(target, toy_tokenizer, meta, toy_docs, tmp_path)
    n = done.docs_done
    message = refusal(target, toy_tokenizer, meta, toy_docs[1:], tmp_path)
    assert f"documents 0..{n - 1} no longer match the ones extracted" in message
    # The last extracted position now holds the next document: the ids say so.
    assert f"document {n - 1} was {toy_docs[n - 1][0]!r}, is now {toy_docs[n][0]!r}" in message


def test_resume_on_fewer_documents_than_extracted_is_refused(
    target, toy_tokenizer, meta, toy_docs, tmp_path
):
    done = interrupt(target, toy_tokenizer, meta, toy_docs, tmp_path)
    n = done.docs_done
    message = refusal(target, toy_tokenizer, meta, toy_docs[: n - 1], tmp_path)
    assert f"(it has {n - 1} documents now, {n} were extracted)" in message


def test_documents_added_after_the_extracted_ones_resume_but_not_before(
    target, toy_tokenizer, meta, toy_docs, tmp_path
):
    """Splits and prefixes are keyed by doc id, and the resume starts a chunk where the killed
    run saved its last one: appending (or editing a document not reached yet) gives the rows
    an uninterrupted run over the new corpus gives. Inserting before them shifts them."""
    out, clean = tmp_path / "out", tmp_path / "clean"
    done = interrupt(target, toy_tokenizer, meta, toy_docs, out)
    added = [("doc-new-a", toy_docs[3][1]), ("doc-new-b", toy_docs[4][1])]
    inserted = [added[0], *toy_docs]
    assert "no longer match" in refusal(target, toy_tokenizer, meta, inserted, out)

    grown = [*toy_docs[:-1], (toy_docs[-1][0], toy_docs[5][1]), *added]
    report = extract_corpus(target, toy_tokenizer, meta, grown, out, FRACTIONS, **SETTINGS)
    assert report.resumed_from == done.docs_done
    assert report.docs == len(grown) - done.docs_done
    extract_corpus(target, toy_tokenizer, meta, grown, clean, FRACTIONS, **SETTINGS)
    assert_same_rows(out, clean, meta)
    ids = {d for split in FRACTIONS for d in read_split(out, split, expect=meta)[1]["doc_id"]}
    assert {"doc-new-a", "doc-new-b"} <= ids


def test_old_manifest_without_fingerprint_resumes_with_a_warning(
    target, toy_tokenizer, meta, toy_docs, tmp_path
):
    out, clean = tmp_path / "out", tmp_path / "clean"
    done = interrupt(target, toy_tokenizer, meta, toy_docs, out)
    path = out / MANIFEST_NAME
    old = json.loads(path.read_text())
    del old["fingerprint"], old["last_doc_id"]
    path.write_text(json.dumps(old))
    assert Manifest.load(out).fingerprint is None
    with pytest.warns(UserWarning, match=f"resuming after {done.docs_done} documents without"):
        extract_corpus(target, toy_tokenizer, meta, toy_docs, out, FRACTIONS, **SETTINGS)
    # The resumed run fingerprinted the documents it skipped too: later resumes are checked.
    extract_corpus(target, toy_tokenizer, meta, toy_docs, clean, FRACTIONS, **SETTINGS)
    assert_same_rows(out, clean, meta)
    edited = [(toy_docs[0][0], toy_docs[0][1] + " anna"), *toy_docs[1:]]
    with pytest.raises(NLAConfigError, match="changed since the earlier extraction"):
        extract_corpus(target, toy_tokenizer, meta, edited, out, FRACTIONS, **SETTINGS)


def test_cli_names_the_changed_file_and_trusts_content_over_mtime(
    target_dir, docs_dir, toy_docs, tmp_path, monkeypatch, capsys
):
    docs, out = tmp_path / "docs", tmp_path / "out"
    shutil.copytree(docs_dir, docs)
    args = cli_args(target_dir, docs, out)
    with monkeypatch.context() as patch:
        patch.setattr(extract_cli, "batch_hook", lambda: crash_after_checkpoint(out))
        with pytest.raises(Crash):
            extract_cli.main(args)
    done = Manifest.load(out)
    assert 2 <= done.docs_done < len(toy_docs)
    edited = docs / f"{toy_docs[1][0]}.txt"  # sorted by name: among the extracted documents
    original = edited.read_text(encoding="utf-8")
    edited.write_text(original + " anna", encoding="utf-8")
    capsys.readouterr()
    assert extract_cli.main(args) == 2
    err = capsys.readouterr().err  # after the model's loading bar: the error, one line
    line = err.splitlines()[-1]
    assert err == f"{line}\n" or err.endswith((f"\n{line}\n", f"\r{line}\n"))
    assert line.startswith(f"error: {out} holds an extraction of another corpus")
    assert f"files changed: {edited} modified)" in line
    # Restored: its mtime differs from the record, its content does not, and content decides.
    edited.write_text(original, encoding="utf-8")
    assert extract_cli.main(args) == 0
    final = Manifest.load(out)
    assert final.complete and final.docs_done == len(toy_docs)
