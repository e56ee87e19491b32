"""The answer cache over real HTTP (127.0.0.1), counted in requests the server saw: a rerun with
another answer setting asks again, the same settings are served from the cache, and answers
cut off by the token limit are used but never cached."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from nla_lightning.writers import AnswerCache, AnthropicWriter, OpenAIWriter, build_prompt
from nla_lightning.writers.http import HTTPWriter
from tests.writers.fake_server import FakeLLM

KINDS = ("openai", "anthropic")
TEXTS = [f"text ROW{i} ends with" for i in range(3)]


@pytest.fixture(autouse=True)
def anthropic_key(llm: FakeLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    # After `llm`, which clears the key from the environment.
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")


def make(kind: str, server: FakeLLM, cache_dir: Any, **kwargs: Any) -> HTTPWriter:
    opts: dict[str, Any] = dict(
        concurrency=2, max_retries=0, timeout_s=2.0, backoff_s=0.01, jitter=False
    )
    opts.update(kwargs)
    if kind == "openai":
        return OpenAIWriter(f"{server.url}/v1", "tiny-model", cache_dir=cache_dir, **opts)
    return AnthropicWriter("claude-tiny", base_url=server.url, cache_dir=cache_dir, **opts)


def cache_files(directory: Any) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.suffix == ".json")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("change", ["max_tokens", "temperature", "base_url"])
def test_a_changed_answer_setting_asks_the_server_again(kind, change, llm, other_llm, tmp_path):
    first, report = make(kind, llm, tmp_path).write(TEXTS, progress=False)
    assert len(llm.requests) == 3 and report.cached == 0
    server, kwargs = llm, {}
    if change == "base_url":
        server = other_llm
    else:
        kwargs = {"max_tokens": 512} if change == "max_tokens" else {"temperature": 0.7}
    rows, report = make(kind, server, tmp_path, **kwargs).write(TEXTS, progress=False)
    # Every row asked afresh, with the new setting, and nothing served from the old answers.
    assert report.cached == 0
    assert len(llm.requests) + len(other_llm.requests) == 6
    assert len(server.requests) == (6 if server is llm else 3)
    for name, value in kwargs.items():
        assert all(r.body[name] == value for r in server.requests[-3:])
    assert [r.status for r in rows] == ["written"] * 3


@pytest.mark.parametrize("kind", KINDS)
def test_the_same_answer_settings_are_served_from_the_cache(kind, llm, tmp_path):
    first, _ = make(kind, llm, tmp_path, max_tokens=300, temperature=0.3).write(TEXTS, False)
    assert len(llm.requests) == 3
    # Settings that cannot change an answer may differ: still no request at all.
    again = make(
        kind,
        llm,
        tmp_path,
        max_tokens=300,
        temperature=0.3,
        concurrency=1,
        max_retries=3,
        timeout_s=9.0,
        backoff_s=0.5,
        jitter=True,
        min_features=1,
        api_key_env="ANTHROPIC_API_KEY" if kind == "anthropic" else "OTHER_KEY",
    )
    rows, report = again.write(TEXTS, progress=False)
    assert len(llm.requests) == 3
    assert rows == first
    assert (report.written, report.cached, report.cut_off) == (3, 3, 0)


@pytest.mark.parametrize("kind", KINDS)
def test_a_cut_off_answer_is_used_but_not_cached(kind, llm, tmp_path):
    # ROW0: cut off right after a whole block (usable); ROW1: cut off mid-block (dropped).
    llm.rules.update({"ROW0": "cut_closed", "ROW1": "cut"})
    rows, report = make(kind, llm, tmp_path).write(TEXTS, progress=False)
    assert [r.status for r in rows] == ["written", "dropped", "written"]
    assert "ROW0" in rows[0].summary
    assert rows[1].reason.startswith("no_tags (cut off: ")
    assert ("length" if kind == "openai" else "max_tokens") in rows[1].reason
    assert (report.cut_off, report.cached) == (2, 0)
    assert "2 cut off, not cached" in str(report)
    assert len(cache_files(tmp_path)) == 1  # ROW2's only

    # The rerun asks again for both cut rows (now answered whole), and only for them.
    llm.rules.clear()
    rows, report = make(kind, llm, tmp_path).write(TEXTS, progress=False)
    assert len(llm.requests) == 5
    assert sorted(r.body["messages"][0]["content"] for r in llm.requests[3:]) == [
        build_prompt(TEXTS[0]),
        build_prompt(TEXTS[1]),
    ]
    assert [r.status for r in rows] == ["written"] * 3
    assert (report.cached, report.cut_off) == (1, 0)
    _, report = make(kind, llm, tmp_path).write(TEXTS, progress=False)
    assert len(llm.requests) == 5 and report.cached == 3


@pytest.mark.parametrize("kind", KINDS)
def test_a_whole_answer_the_parser_drops_is_cached(kind, llm, tmp_path):
    """Decided: the writer ended it on its own and would give it again; a rerun must not pay."""
    llm.rules.update({"ROW0": "no_tags", "ROW1": "one_feature"})
    rows, _ = make(kind, llm, tmp_path).write(TEXTS, progress=False)
    assert [r.reason for r in rows] == ["no_tags", "too_few_features", ""]
    rows, report = make(kind, llm, tmp_path).write(TEXTS, progress=False)
    assert len(llm.requests) == 3 and report.cached == 3
    assert [r.status for r in rows] == ["dropped", "dropped", "written"]
    # Parsing runs after the cache: a looser rule reads the same cached answers differently.
    rows, _ = make(kind, llm, tmp_path, min_features=1).write(TEXTS, progress=False)
    assert len(llm.requests) == 3
    assert [r.status for r in rows] == ["dropped", "written", "written"]


def test_an_entry_under_the_old_key_is_a_miss(llm, tmp_path):
    """Answers cached under the (writer, model, prompt) key are not served any more."""
    old = json.dumps(["openai", "tiny-model", build_prompt(TEXTS[0])], ensure_ascii=False)
    stale = "<analysis>\n- stale one\n- stale two\n</analysis>"
    AnswerCache(tmp_path).put(hashlib.sha256(old.encode("utf-8")).hexdigest(), stale)
    rows, report = make("openai", llm, tmp_path).write(TEXTS[:1], progress=False)
    assert len(llm.requests) == 1 and report.cached == 0
    assert "stale" not in rows[0].summary
