"""The instruction asks for 2-3 features in <analysis> tags and carries the text."""

from __future__ import annotations

from nla_lightning.writers import INSTRUCTION, build_prompt


def test_prompt_contains_text_and_asks_for_tagged_features():
    prompt = build_prompt("Once upon a {time} there")
    assert "Once upon a {time} there" in prompt
    assert "{text}" in INSTRUCTION and "{text}" not in prompt
    for phrase in ("<analysis>", "</analysis>", "2-3", "80-100 words", "LAST token", "final token"):
        assert phrase in prompt


def test_the_short_instruction_for_small_writers():
    import pytest

    prompt = build_prompt("x = 1 +", "short")
    assert prompt.startswith("Text:\nx = 1 +") and "two sentences" in prompt
    with pytest.raises(ValueError, match="short"):
        build_prompt("x", "tiny")
