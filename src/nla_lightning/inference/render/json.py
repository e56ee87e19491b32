"""JSON rendering: plain dicts, floats to 4 places, None kept."""

from __future__ import annotations

import json

from nla_lightning.inference.render.document import Document, clean, token_dicts


def dumps(value: object) -> str:
    """Strict JSON (NaN becomes null) of any plain value, UTF-8 kept readable, newline-ended."""
    return json.dumps(clean(value), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def explanations_json(report: Document) -> str:
    """The report as JSON: meta summary, then one entry per explained token."""
    return dumps(
        {
            "base_model": report.base_model,
            "layer": report.layer,
            "text": report.text,
            "tokens": token_dicts(report.results),
        }
    )
