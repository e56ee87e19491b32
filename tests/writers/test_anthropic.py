"""AnthropicWriter against a real local server: headers, body, key check, content blocks."""

from __future__ import annotations

import pytest

from nla_lightning.writers import AnthropicWriter, build_prompt
from nla_lightning.writers.http import RequestRejectedError

GOOD = "feature one about the text\n\nfeature two about the end"


def writer(llm, **kwargs) -> AnthropicWriter:
    """A writer with test-sized timeouts and deterministic, tiny backoff."""
    opts = dict(concurrency=2, max_retries=2, timeout_s=2.0, backoff_s=0.01, jitter=False)
    opts.update(kwargs)
    return AnthropicWriter("claude-tiny", base_url=llm.url, **opts)


def test_success_sends_messages_body_and_headers(llm, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    rows, report = writer(llm, max_tokens=77).write(["the cat sat"], progress=False)
    # The thinking block the server appends must not leak into the summary.
    assert [(r.summary, r.status) for r in rows] == [(GOOD, "written")]
    (req,) = llm.requests
    assert req.path == "/v1/messages"
    assert req.headers["x-api-key"] == "sk-ant-test"
    assert req.headers["anthropic-version"] == "2023-06-01"
    assert req.headers["content-type"] == "application/json"
    assert "authorization" not in req.headers
    assert req.body == {
        "model": "claude-tiny",
        "max_tokens": 77,
        "messages": [{"role": "user", "content": build_prompt("the cat sat")}],
    }
    assert report.written == 1


def test_missing_key_fails_before_any_request(llm):
    with pytest.raises(ValueError, match="ANTHROPIC_API_KEY"):
        writer(llm).write(["x"], progress=False)
    assert llm.requests == []


def test_401_names_the_env_var_and_is_not_retried(llm, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "bad")
    llm.faults.append("401")
    with pytest.raises(RequestRejectedError, match="ANTHROPIC_API_KEY"):
        writer(llm).write(["x"], progress=False)
    assert len(llm.requests) == 1


def test_retries_after_500_and_429(llm, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    llm.faults.extend(["500", "429"])
    rows, _ = writer(llm, concurrency=1).write(["x"], progress=False)
    assert rows[0].status == "written"
    assert len(llm.requests) == 3
