"""build_writer and WriterReport."""

from __future__ import annotations

import pytest

from nla_lightning.writers import (
    AnthropicWriter,
    LocalWriter,
    OpenAIWriter,
    WriterReport,
    build_writer,
)


def test_build_each_writer():
    w = build_writer({"name": "openai", "base_url": "http://h/v1/", "model": "m", "concurrency": 2})
    assert isinstance(w, OpenAIWriter) and w.base_url == "http://h/v1" and w.concurrency == 2
    assert isinstance(build_writer({"name": "anthropic", "model": "c"}), AnthropicWriter)
    local = build_writer({"name": "local", "model_or_path": "/nowhere", "batch_size": 3})
    assert isinstance(local, LocalWriter) and local.batch_size == 3


def test_unknown_name_lists_choices():
    with pytest.raises(ValueError, match=r"\['anthropic', 'local', 'openai'\]"):
        build_writer({"name": "gemini", "model": "x"})


def test_bad_option_says_what_is_accepted():
    with pytest.raises(ValueError, match="base_url"):
        build_writer({"name": "openai", "model": "m", "bogus": 1})


def test_bad_concurrency_is_rejected():
    with pytest.raises(ValueError, match="concurrency"):
        OpenAIWriter("http://h/v1", "m", concurrency=0)


def test_report_str_is_one_line():
    text = str(WriterReport(written=5, dropped=2, failed=1, cached=3))
    assert text == "8 rows: 5 written, 2 dropped, 1 failed (3 from cache)"
