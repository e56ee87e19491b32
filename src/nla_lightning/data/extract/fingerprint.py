"""The corpus fingerprint: a resume goes on only if the documents it skips are the ones that
were already extracted (a resume skips documents by position, so a changed corpus would
otherwise mix rows of two corpora in one dataset)."""

from __future__ import annotations

import hashlib
import itertools
import json
import warnings
from collections.abc import Iterator
from pathlib import Path

from nla_lightning.core.files import write_text_atomically
from nla_lightning.data.extract.manifest import Manifest
from nla_lightning.errors import NLAConfigError

# {path: [size, mtime_ns]} of the document files, written once per run (not at every
# checkpoint: it can be long). Only a hint for the refusal's message; the content is checked.
SOURCES_NAME = "sources.json"
FILES_SHOWN = 3


def document_digest(doc_id: str, text: str) -> bytes:
    """sha256 of one document; both fields length-prefixed, so no two pairs collide."""
    digest = hashlib.sha256()
    for part in (doc_id, text):
        data = part.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.digest()


class Fingerprint:
    """Running sha256 over the digests of the documents consumed so far, in stream order."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256(b"nla-corpus-fingerprint-v1\n")
        self.count = 0
        self.last_doc_id: str | None = None

    def add(self, doc_id: str, digest: bytes) -> None:
        self._hash.update(digest)
        self.count += 1
        self.last_doc_id = doc_id

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def save_sources(out_dir: Path, files: dict[str, list[int]] | None) -> None:
    """Record the document files this run reads (None: no files, forget an old record)."""
    path = Path(out_dir) / SOURCES_NAME
    if files is None:
        path.unlink(missing_ok=True)
        return
    write_text_atomically(path, json.dumps(files, indent=1, sort_keys=True))


def load_sources(out_dir: Path) -> dict[str, list[int]] | None:
    try:
        data = json.loads((Path(out_dir) / SOURCES_NAME).read_text(encoding="utf-8"))
        return {str(k): [int(x) for x in v] for k, v in data.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return None  # a hint only: no record (or a broken one) gives no hint


def changed_files(before: dict[str, list[int]] | None, now: dict[str, list[int]] | None) -> str:
    """'a.txt modified, b.txt removed' (size or mtime differ), or '' when unknown or equal."""
    if before is None or now is None:
        return ""
    notes = []
    for path in sorted(set(before) | set(now)):
        if path not in now:
            notes.append(f"{path} removed")
        elif path not in before:
            notes.append(f"{path} new")
        elif before[path] != now[path]:
            notes.append(f"{path} modified")
    more = len(notes) - FILES_SHOWN
    return ", ".join(notes[:FILES_SHOWN]) + (f" and {more} more" if more > 0 else "")


def skip_processed(
    documents: Iterator[tuple[str, str]],
    manifest: Manifest,
    out_dir: Path,
    fingerprint: Fingerprint,
    files: dict[str, list[int]] | None = None,
) -> None:
    """Consume the first `manifest.docs_done` documents into `fingerprint` (hashing only, no
    model), refusing to go on when they are not the documents already extracted."""
    done = manifest.docs_done
    for doc_id, text in itertools.islice(documents, done):
        doc_id = str(doc_id)
        fingerprint.add(doc_id, document_digest(doc_id, text))
    if manifest.fingerprint is None:
        if done:
            warnings.warn(
                f"{Path(out_dir) / 'progress.json'} was written by a version that recorded no "
                f"corpus fingerprint: resuming after {done} documents without checking that "
                f"they are the documents already extracted (if the corpus changed since, "
                f"delete {out_dir} and extract again); later resumes are checked",
                UserWarning,
                stacklevel=3,
            )
        return
    if fingerprint.count == done and fingerprint.hexdigest() == manifest.fingerprint:
        return
    details = []
    if fingerprint.count < done:
        details.append(f"it has {fingerprint.count} documents now, {done} were extracted")
    else:
        details.append(f"documents 0..{done - 1} no longer match the ones extracted")
        if manifest.last_doc_id is not None and fingerprint.last_doc_id != manifest.last_doc_id:
            details.append(
                f"document {done - 1} was {manifest.last_doc_id!r}, is now "
                f"{fingerprint.last_doc_id!r}"
            )
    files_note = changed_files(load_sources(out_dir), files)
    if files_note:
        details.append(f"files changed: {files_note}")
    when = "earlier" if manifest.complete else "interrupted"
    raise NLAConfigError(
        f"{out_dir} holds an extraction of another corpus: the corpus changed since the "
        f"{when} extraction ({'; '.join(details)}): restore the corpus as it was, or delete "
        f"{out_dir} (or extract into another directory) to start again"
    )
