"""On-disk cache of raw writer answers: one JSON file per (answer settings, prompt).

The key is the sha256 of the prompt and of every setting that can change the raw answer, as
the writer declares them in `SummaryWriter.answer_settings()` (writer, model, base URL, the
instruction's name and text digest, token limit, temperature, ...). Settings that cannot
change the answer (concurrency, retries, timeouts, cache_dir, batch size) and the parsing
applied after the cache (min_features, sentence_rule, ending_words) stay out of it, so changing
them reuses the cached answers.

Only answers that ended normally are stored (writers/base.py): failures and answers cut off by
the token limit are asked for again on the next run.

Entries written under an older key layout (KEY_FORMAT, or the (writer, model, prompt) key
before it) are never read again: they are misses, answered afresh and stored under the new
key. Nothing needs deleting; old files just stay unused.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Bumped whenever the framing below or the meaning of a setting changes.
KEY_FORMAT = 2


def cache_key(settings: Mapping[str, Any], prompt: str) -> str:
    """Hex sha256 of the answer settings (a JSON-able mapping) and the prompt."""
    # JSON framing keeps ("ab", "c") and ("a", "bc") apart and sorted keys make the order of
    # `settings` irrelevant; a value JSON cannot hold raises instead of being keyed loosely.
    blob = json.dumps(
        {"format": KEY_FORMAT, "settings": dict(settings), "prompt": prompt},
        sort_keys=True,
        ensure_ascii=False,
        allow_nan=False,
        separators=(",", ":"),
    ).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


class AnswerCache:
    """Directory of `<key>.json` files; writes are atomic, so concurrent writers are safe."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def get(self, key: str) -> str | None:
        """The cached answer for `key`, or None on a miss or an unreadable entry."""
        try:
            payload = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            # A torn or hand-edited file is a miss; the next put overwrites it.
            return None
        answer = payload.get("answer") if isinstance(payload, dict) else None
        return answer if isinstance(answer, str) else None

    def put(self, key: str, answer: str) -> None:
        """Store `answer` under `key` via a temp file and os.replace."""
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{key}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"answer": answer}, handle, ensure_ascii=False)
            os.replace(tmp, self._path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
