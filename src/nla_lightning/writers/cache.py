"""On-disk cache of raw writer answers: one JSON file per (writer, model, prompt)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


def cache_key(writer: str, model: str, prompt: str) -> str:
    """Hex sha256 of the writer name, model and prompt."""
    # JSON framing keeps ("ab", "c") and ("a", "bc") apart.
    blob = json.dumps([writer, model, prompt], ensure_ascii=False).encode("utf-8")
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
