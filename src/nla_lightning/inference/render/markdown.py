"""Markdown rendering of explanations, steering and fidelity results."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import cast

from nla_lightning.inference.render.document import Document, clean, token_dicts


def cell(value: object) -> str:
    """A table cell: pipes escaped and newlines flattened so the row stays one row."""
    if value is None:
        return "—"
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def quoted(token: str) -> str:
    """A token in quotes, so leading spaces and newlines stay visible."""
    return json.dumps(token, ensure_ascii=False)


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]


def explanations_markdown(report: Document) -> str:
    """A table token | best score | best explanation, then every sample of each token."""
    tokens = token_dicts(report.results)
    lines = [
        "# NLA explanations",
        "",
        f"- base model: {cell(report.base_model)}",
        f"- layer: {cell(report.layer)}",
        f"- text: {cell(quoted(report.text))}",
        "",
    ]
    rows = [(t["index"], quoted(t["token"]), t["best_score"], t["best"]) for t in tokens]
    lines += table(["#", "token", "best score", "best explanation"], rows)
    for t in tokens:
        lines += ["", f"## {t['index']} {cell(quoted(t['token']))}", ""]
        for n, s in enumerate(t["samples"], 1):
            lines.append(f"{n}. ({cell(s['score'])}) {cell(s['explanation'])}")
    return "\n".join(lines) + "\n"


def steering_markdown(result: dict[str, object]) -> str:
    """Baseline and steered completions side by side."""
    lines = ["# NLA steering", ""]
    for key in ("prompt", "original", "edited", "alpha", "positions"):
        value = result[key]
        lines.append(f"- {key}: {cell(quoted(value) if isinstance(value, str) else value)}")
    pairs = zip(result["baseline"], result["steered"], strict=True)  # type: ignore[call-overload]
    rows = [(n, quoted(b), quoted(s)) for n, (b, s) in enumerate(pairs, 1)]
    return "\n".join(lines + [""] + table(["#", "baseline", "steered"], rows)) + "\n"


def fidelity_markdown(result: dict[str, object]) -> str:
    """Mean KL per replacement (lower is more faithful), then the KL at each position."""
    r = cast(dict, clean(result))
    kinds = [
        ("reconstruction AR(AV(h))", r["kl_reconstruction"]),
        ("mean activation", r["kl_mean"]),
        ("shuffled reconstruction", r["kl_shuffled"]),
        ("zero ablation", r["kl_zero_ablation"]),
    ]
    lines = ["# NLA fidelity (KL clean ‖ spliced, lower is more faithful)", ""]
    lines += table(["replacement", "mean KL"], kinds)
    per = zip(r["positions"], r["tokens"], r["kl_per_position"], r["explanations"], strict=True)
    rows = [(p, quoted(t), kl, e) for p, t, kl, e in per]
    lines += [""] + table(["#", "token", "KL (reconstruction)", "explanation"], rows)
    return "\n".join(lines) + "\n"
