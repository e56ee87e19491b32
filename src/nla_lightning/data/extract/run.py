"""`extract_corpus`: prefix activations of a corpus, written as resumable per-split shards."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from nla_lightning.core.activations import capture_activations
from nla_lightning.core.families import EncodedDocument, control_token_ids, encode_document
from nla_lightning.core.meta import NLAMeta
from nla_lightning.core.padding import pad_right
from nla_lightning.data.extract.fingerprint import (
    Fingerprint,
    document_digest,
    save_sources,
    skip_processed,
)
from nla_lightning.data.extract.manifest import Manifest
from nla_lightning.data.extract.prefixes import prefix_lengths
from nla_lightning.data.extract.shards import Row, ShardWriter, remove_orphans
from nla_lightning.data.extract.sources import describe_files
from nla_lightning.data.extract.stats import ExtractionStats
from nla_lightning.data.splits import split_of
from nla_lightning.errors import NLAConfigError

# Documents are processed in chunks of about this many batches: enough rows to pack batches by
# length, and flushes happen only between chunks so that a resumed run sees the same chunks
# (hence the same batches, hence bit-identical vectors) as an uninterrupted one.
BATCHES_PER_CHUNK = 4


@dataclass
class _Doc:
    """A tokenised document, its prefix lengths (empty when skipped) and its digest."""

    doc_id: str
    split: str
    encoded: EncodedDocument
    lengths: list[int]
    digest: bytes
    vectors: list[torch.Tensor] = field(default_factory=list)

    @property
    def ids(self) -> list[int]:
        return self.encoded.ids


def _settings(meta: NLAMeta, **values: Any) -> dict[str, Any]:
    settings = {"model": meta.base_model, "layer": meta.layer, "d_model": meta.d_model, **values}
    return json.loads(json.dumps(settings))  # stored as JSON, so compare as JSON


def _check_args(batch_size: int, shard_rows: int, fractions: Mapping[str, float]) -> None:
    if batch_size < 1 or shard_rows < 1:
        raise NLAConfigError(
            f"batch_size and shard_rows must be >= 1, got {batch_size} and {shard_rows}"
        )
    if not fractions:
        raise NLAConfigError("fractions must name at least one split, e.g. {'train': 1.0}")


def _run_chunk(
    model: torch.nn.Module,
    docs: list[_Doc],
    layer: int,
    batch_size: int,
    pad_id: int,
    on_batch: Callable[[int], None] | None,
) -> None:
    """Fill each doc's `vectors` (raw float32 on the CPU) with ONE forward per document: in a
    causal LM the activation at position p of the document is the last-token activation of
    its prefix of length p + 1, so the document is read once, up to its longest prefix, and
    every sampled position is taken from that pass. `batch_size` documents per forward."""
    todo = [d for d in docs if d.lengths]
    # Sorting by length keeps padding (wasted compute) small inside each batch.
    todo.sort(key=lambda d: max(d.lengths))
    device = next(model.parameters()).device
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        ids, mask = pad_right([d.ids[: max(d.lengths)] for d in batch], pad_id)
        rows = torch.tensor([j for j, d in enumerate(batch) for _ in d.lengths])
        positions = torch.tensor([n - 1 for d in batch for n in d.lengths])
        with torch.inference_mode():
            hidden = capture_activations(model, ids.to(device), mask.to(device), layer)
            acts = hidden[rows.to(device), positions.to(device)]
        acts = acts.to("cpu", torch.float32)
        bad = (~torch.isfinite(acts).all(dim=-1)).nonzero().flatten().tolist()
        if bad:
            doc = batch[int(rows[bad[0]])]
            raise NLAConfigError(
                f"the activation of document {doc.doc_id!r} at prefix length "
                f"{int(positions[bad[0]]) + 1} contains NaN or inf ({len(bad)} bad rows in "
                "this batch): the model overflows in its dtype; extract in float32 or drop "
                "that document"
            )
        offset = 0
        for doc in batch:
            doc.vectors = list(acts[offset : offset + len(doc.lengths)].clone().unbind(0))
            offset += len(doc.lengths)
        if on_batch is not None:
            on_batch(len(rows))


def extract_corpus(
    model: torch.nn.Module,
    tokenizer: Any,
    meta: NLAMeta,
    documents: Iterable[tuple[str, str]],
    out_dir: str | Path,
    fractions: Mapping[str, float],
    seed: int = 0,
    prefixes_per_doc: int = 4,
    min_tokens: int = 8,
    max_tokens: int = 512,
    batch_size: int = 32,
    shard_rows: int = 1024,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
    files: Sequence[str | Path] | None = None,
) -> ExtractionStats:
    """Extract block-`meta.layer` activations at random prefixes of each document into
    `out_dir/<split>/shard-NNNNN.parquet`, resuming from `out_dir/progress.json` if present.
    A resume first checks that the documents it skips are the ones already extracted (a
    fingerprint of their ids and texts); `files`, the document files behind `documents` if
    any, only make a refusal name the files that changed."""
    _check_args(batch_size, shard_rows, fractions)
    meta.check_model(model.config)
    prefix_lengths("check", 0, prefixes_per_doc, seed, min_tokens, max_tokens)  # validates
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = _settings(
        meta,
        seed=seed,
        fractions=dict(fractions),
        prefixes_per_doc=prefixes_per_doc,
        min_tokens=min_tokens,
        max_tokens=max_tokens,
        # Earlier versions tokenised without special tokens (no BOS): never resume across that.
        special_tokens=True,
    )
    manifest = Manifest.load(out_dir)
    if manifest is None:
        manifest = Manifest(settings=settings, shards={s: 0 for s in fractions})
    manifest.check_settings(settings, out_dir)
    documents = iter(documents)
    fingerprint = Fingerprint()
    files_now = describe_files(files) if files else None
    skip_processed(documents, manifest, out_dir, fingerprint, files_now)
    save_sources(out_dir, files_now)
    for split in fractions:
        remove_orphans(out_dir, split, manifest.shards.get(split, 0))
    writer = ShardWriter(out_dir, meta, shard_rows, dict(manifest.shards))
    report = ExtractionStats(resumed_from=manifest.docs_done)
    base_totals = dict(manifest.totals)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    chunk_rows = batch_size * BATCHES_PER_CHUNK
    model.eval()  # dropout off: the same prefix must always give the same vector
    start = time.perf_counter()
    bar = tqdm(desc=f"extract layer {meta.layer}", unit="doc", disable=not progress)

    def save_manifest(complete: bool) -> None:
        writer.flush()  # shards first: the manifest only ever mentions files already on disk
        manifest.docs_done = report.resumed_from + report.docs
        if fingerprint.count != manifest.docs_done:  # the fingerprint covers exactly docs_done
            raise RuntimeError(f"fingerprint of {fingerprint.count} != {manifest.docs_done} docs")
        manifest.fingerprint = fingerprint.hexdigest()
        manifest.last_doc_id = fingerprint.last_doc_id
        manifest.shards = dict(writer.shards)
        counts = {
            "docs": report.docs,
            "skipped_short": report.skipped_short,
            "skipped_empty": report.skipped_empty,
            "vectors": report.vectors,
        }
        manifest.totals = {k: base_totals.get(k, 0) + v for k, v in counts.items()}
        manifest.complete = complete
        manifest.save(out_dir)

    def commit(chunk: list[_Doc]) -> None:
        _run_chunk(model, chunk, meta.layer, batch_size, pad_id, on_batch)
        for doc in chunk:
            # The text leaves out the BOS the tokenizer added: whoever tokenises it again (with
            # add_special_tokens=True) gets the BOS back, once.
            rows = [
                Row(v, doc.doc_id, n, tokenizer.decode(doc.encoded.text_ids(n)))
                for n, v in zip(doc.lengths, doc.vectors, strict=True)
            ]
            if rows:
                writer.add(doc.split, rows)
            report.vectors += len(rows)
            fingerprint.add(doc.doc_id, doc.digest)
        report.docs += len(chunk)
        bar.update(len(chunk))
        bar.set_postfix(vectors_per_s=f"{report.vectors / (time.perf_counter() - start):.1f}")
        if writer.full():
            save_manifest(complete=False)

    chunk: list[_Doc] = []
    n_rows = 0
    control = control_token_ids(tokenizer)
    nothing = EncodedDocument([], [], [])
    try:
        for doc_id, text in documents:  # skip_processed consumed the first docs_done
            doc_id = str(doc_id)
            # method.md, "Tokenisation protocol": documents get their special tokens (a BOS for
            # Llama/Gemma), and a prefix never ends at one.
            encoded = encode_document(tokenizer, text, control) if text.strip() else nothing
            lengths = prefix_lengths(
                doc_id,
                len(encoded.ids),
                prefixes_per_doc,
                seed,
                min_tokens,
                max_tokens,
                skip=encoded.special_lengths(),
            )
            if not encoded.ids:
                report.skipped_empty += 1
            elif not lengths:
                report.skipped_short += 1
            split = split_of(doc_id, fractions, seed)
            chunk.append(_Doc(doc_id, split, encoded, lengths, document_digest(doc_id, text)))
            n_rows += len(lengths)
            if n_rows >= chunk_rows:
                commit(chunk)
                chunk, n_rows = [], 0
        if chunk:
            commit(chunk)
        save_manifest(complete=True)
    finally:
        bar.close()
    report.shards = dict(writer.shards)
    report.wall_s = time.perf_counter() - start
    return report
