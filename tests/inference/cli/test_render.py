"""Renderers on hand-made explanations: escaping, rounding, colours, None and NaN."""

from __future__ import annotations

import json
import math
import re

from nla_lightning.inference.nla import TokenExplanation
from nla_lightning.inference.render.document import Document
from nla_lightning.inference.render.html import colour, explanations_html
from nla_lightning.inference.render.json import explanations_json
from nla_lightning.inference.render.markdown import explanations_markdown


def report() -> Document:
    results = [
        TokenExplanation(0, "<script>", ['a "<b>" & c', None], [0.123456, 2.0], [0.5, 0.25]),
        TokenExplanation(2, " x|y", ["pipe | here", "z"], [-3.0, math.nan], [0.1, 0.2]),
    ]
    return Document("<script> a x|y", results, "tiny", 2, ["<script>", " a", " x|y"])


def test_json_rounds_and_keeps_none():
    data = json.loads(explanations_json(report()))
    assert (data["base_model"], data["layer"]) == ("tiny", 2)
    first, second = data["tokens"]
    assert first["samples"][0] == {"explanation": 'a "<b>" & c', "score": 0.1235, "cosine": 0.5}
    assert first["samples"][1]["explanation"] is None
    assert first["best"] is None and first["best_score"] == 2.0
    assert second["samples"][1]["score"] is None  # NaN is not strict JSON


def test_markdown_table_escapes_pipes():
    md = explanations_markdown(report())
    assert '| 0 | "<script>" | 2.0 | — |' in md
    assert '| 2 | " x\\|y" | ' in md
    assert "1. (-3.0) pipe \\| here" in md


def test_html_escapes_everything_and_shows_untouched_tokens():
    page = explanations_html(report())
    assert page.count("<script>") == 1  # only the page's own inline script
    assert '<span class="tok" data-index="0" title="(no explanation)"' in page
    assert "&lt;script&gt;</span>" in page
    assert "a &quot;&lt;b&gt;&quot; &amp; c" in page
    assert '<span class="tok none"> a</span>' in page  # token 1 was not explained
    assert len(re.findall(r'data-index="\d+"', page)) == 2


def test_colour_clamps_to_red_and_green():
    assert colour(5.0) == colour(1.0) == "hsl(120,75%,75%)"
    assert colour(-7.0) == colour(-1.0) == "hsl(0,75%,75%)"
    assert colour(0.0) == "hsl(60,75%,75%)"
