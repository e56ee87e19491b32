"""`progress.json`: how far an extraction got and with which settings, for safe resumes."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nla_lightning.core.files import write_text_atomically
from nla_lightning.errors import NLAConfigError

MANIFEST_NAME = "progress.json"


@dataclass
class Manifest:
    """Settings plus the state after the last complete flush. `fingerprint` is the sha256 of
    the first `docs_done` documents (fingerprint.py; None in manifests of older versions),
    `last_doc_id` the id of the last of them."""

    settings: dict[str, Any]
    docs_done: int = 0
    shards: dict[str, int] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    complete: bool = False
    fingerprint: str | None = None
    last_doc_id: str | None = None

    def save(self, out_dir: Path) -> Path:
        """Write atomically: a reader sees the old manifest or the new one, never half."""
        text = json.dumps(asdict(self), indent=2, sort_keys=True)
        return write_text_atomically(Path(out_dir) / MANIFEST_NAME, text)

    @classmethod
    def load(cls, out_dir: Path) -> Manifest | None:
        """The manifest in `out_dir`, or None for a fresh directory."""
        path = Path(out_dir) / MANIFEST_NAME
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                settings=dict(data["settings"]),
                docs_done=int(data["docs_done"]),
                shards={str(k): int(v) for k, v in data["shards"].items()},
                totals={str(k): int(v) for k, v in data.get("totals", {}).items()},
                complete=bool(data.get("complete", False)),
                fingerprint=_optional_str(data.get("fingerprint")),
                last_doc_id=_optional_str(data.get("last_doc_id")),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise NLAConfigError(
                f"{path} is not a valid extraction manifest ({err}); delete {out_dir} and "
                "extract again"
            ) from err

    def check_settings(self, settings: dict[str, Any], out_dir: Path) -> None:
        """Refuse to resume with settings that would mix two kinds of rows in one dataset."""
        # JSON round trip so tuples/lists and int/float keys compare as they were stored.
        wanted = json.loads(json.dumps(settings))
        keys = sorted(set(wanted) | set(self.settings))
        diffs = [
            f"{k}: {self.settings.get(k)!r} on disk vs {wanted.get(k)!r} now"
            for k in keys
            if self.settings.get(k) != wanted.get(k)
        ]
        if diffs:
            raise NLAConfigError(
                f"{out_dir} holds a partial extraction made with other settings ("
                + "; ".join(diffs)
                + "): resume with the original settings, or use a new --out directory"
            )


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)
