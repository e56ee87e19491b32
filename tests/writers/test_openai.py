"""OpenAIWriter against a real local server: bodies, headers, retries, faults, order, cache."""

from __future__ import annotations

import time
from typing import Any

import pytest

from nla_lightning.writers import OpenAIWriter, build_prompt
from nla_lightning.writers.http import RequestRejectedError
from tests.writers.fake_server import FakeLLM

GOOD = "feature one about the text\n\nfeature two about the end"


def writer(llm: FakeLLM, **kwargs: Any) -> OpenAIWriter:
    """A writer with test-sized timeouts and deterministic, tiny backoff."""
    opts: dict[str, Any] = dict(
        concurrency=4, max_retries=3, timeout_s=2.0, backoff_s=0.01, jitter=False
    )
    opts.update(kwargs)
    return OpenAIWriter(base_url=f"{llm.url}/v1", model="tiny-model", **opts)


def texts(n: int) -> list[str]:
    return [f"text ROW{i} ends with" for i in range(n)]


def test_success_sends_openai_body_and_bearer_header(llm, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    rows, report = writer(llm, max_tokens=99, temperature=0.5).write(["the cat sat"], False)
    assert [(r.summary, r.status) for r in rows] == [(GOOD, "written")]
    (req,) = llm.requests
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == "Bearer sk-test"
    assert req.headers["content-type"] == "application/json"
    assert req.body == {
        "model": "tiny-model",
        "messages": [{"role": "user", "content": build_prompt("the cat sat")}],
        "max_tokens": 99,
        "temperature": 0.5,
    }
    assert (report.written, report.dropped, report.failed, report.cached) == (1, 0, 0, 0)


def test_no_key_sends_no_auth_header(llm):
    rows, _ = writer(llm).write(["x"], progress=False)
    assert rows[0].status == "written"
    assert "authorization" not in llm.requests[0].headers


def test_retries_after_500_then_succeeds(llm):
    llm.faults.extend(["500", "500"])
    rows, _ = writer(llm).write(["x"], progress=False)
    assert rows[0].status == "written"
    assert len(llm.requests) == 3


def test_429_honours_retry_after_instead_of_backoff(llm):
    llm.faults.append("429")
    llm.retry_after = "0.05"
    start = time.monotonic()
    # A 2 s backoff would show up in the elapsed time if Retry-After were ignored.
    rows, _ = writer(llm, backoff_s=2.0).write(["x"], progress=False)
    elapsed = time.monotonic() - start
    assert rows[0].status == "written"
    assert len(llm.requests) == 2
    assert 0.05 <= elapsed < 1.0


def test_429_retry_after_is_capped(llm):
    llm.faults.append("429")
    llm.retry_after = "100"
    start = time.monotonic()
    rows, _ = writer(llm, max_retry_after_s=0.05).write(["x"], progress=False)
    assert rows[0].status == "written"
    assert time.monotonic() - start < 1.0


def test_429_without_header_uses_exponential_backoff(llm):
    llm.faults.extend(["429", "429"])
    llm.retry_after = None
    start = time.monotonic()
    rows, _ = writer(llm, backoff_s=0.1).write(["x"], progress=False)
    # 0.1 s then 0.2 s: the doubling is visible.
    assert time.monotonic() - start >= 0.3
    assert rows[0].status == "written"


def test_hang_past_timeout_is_retried(llm):
    llm.faults.append("hang")
    llm.hang_s = 0.6
    start = time.monotonic()
    rows, _ = writer(llm, timeout_s=0.15).write(["x"], progress=False)
    assert rows[0].status == "written"
    assert len(llm.requests) == 2
    assert time.monotonic() - start < 0.6


def test_gives_up_after_max_retries_other_rows_unaffected(llm):
    llm.rules["ROW1"] = "500"
    rows, report = writer(llm, max_retries=2).write(texts(3), progress=False)
    assert [r.status for r in rows] == ["written", "failed", "written"]
    assert rows[1].summary is None
    assert "gave up after 3 attempts" in rows[1].reason and "HTTP 500" in rows[1].reason
    assert "ROW0" in rows[0].summary and "ROW2" in rows[2].summary
    assert sum("ROW1" in r.body["messages"][0]["content"] for r in llm.requests) == 3
    assert (report.written, report.failed) == (2, 1)


def test_malformed_json_is_retried_then_succeeds(llm):
    llm.faults.append("malformed")
    rows, _ = writer(llm).write(["x"], progress=False)
    assert rows[0].status == "written"
    assert len(llm.requests) == 2


def test_malformed_json_every_time_fails_the_row(llm):
    llm.rules["ROW0"] = "malformed"
    rows, _ = writer(llm, max_retries=1).write(texts(2), progress=False)
    assert [r.status for r in rows] == ["failed", "written"]
    assert "malformed JSON" in rows[0].reason


def test_401_is_not_retried_and_names_the_env_var(llm, monkeypatch):
    monkeypatch.setenv("MY_LLM_KEY", "wrong")
    llm.rules["ROW"] = "401"
    w = writer(llm, api_key_env="MY_LLM_KEY", concurrency=1)
    with pytest.raises(RequestRejectedError, match="MY_LLM_KEY") as info:
        w.write(texts(3), progress=False)
    assert "401" in str(info.value) and "invalid x-api-key" in str(info.value)
    # One request: no retry, and the queued rows were cancelled.
    assert len(llm.requests) == 1


def test_400_fails_only_that_row_without_retry(llm):
    llm.rules["ROW1"] = "400"
    rows, _ = writer(llm).write(texts(3), progress=False)
    assert [r.status for r in rows] == ["written", "failed", "written"]
    assert "400" in rows[1].reason and "prompt is too long" in rows[1].reason
    assert sum("ROW1" in r.body["messages"][0]["content"] for r in llm.requests) == 1


def test_rows_without_tags_or_with_one_feature_are_dropped(llm):
    llm.rules.update({"ROW0": "no_tags", "ROW1": "one_feature"})
    rows, report = writer(llm).write(texts(3), progress=False)
    assert [(r.status, r.reason) for r in rows] == [
        ("dropped", "no_tags"),
        ("dropped", "too_few_features"),
        ("written", ""),
    ]
    assert rows[0].summary is None and rows[1].summary is None
    assert (report.written, report.dropped, report.failed) == (1, 2, 0)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_concurrency_is_bounded(llm, concurrency):
    llm.delay_s = 0.03
    rows, _ = writer(llm, concurrency=concurrency).write(texts(9), progress=False)
    assert all(r.status == "written" for r in rows)
    assert llm.max_inflight <= concurrency
    # It really ran in parallel when allowed to.
    assert llm.max_inflight == concurrency


def test_results_keep_input_order_when_later_rows_finish_first(llm):
    llm.delays.update({"ROW0": 0.2, "ROW1": 0.1})
    rows, _ = writer(llm, concurrency=4).write(texts(4), progress=False)
    assert [r.summary.split("\n")[0] for r in rows] == [
        f"feature one about ROW{i}" for i in range(4)
    ]


def test_cache_rerun_makes_no_requests_and_model_change_misses(llm, tmp_path):
    first, report1 = writer(llm, cache_dir=tmp_path).write(texts(3), progress=False)
    assert len(llm.requests) == 3 and report1.cached == 0
    second, report2 = writer(llm, cache_dir=tmp_path).write(texts(3), progress=False)
    assert len(llm.requests) == 3
    assert second == first
    assert (report2.written, report2.cached) == (3, 3)

    other = OpenAIWriter(f"{llm.url}/v1", "other-model", cache_dir=tmp_path, backoff_s=0.01)
    _, report3 = other.write(texts(3), progress=False)
    assert len(llm.requests) == 6 and report3.cached == 0


def test_failures_are_not_cached(llm, tmp_path):
    llm.rules["ROW1"] = "500"
    rows, _ = writer(llm, cache_dir=tmp_path, max_retries=0).write(texts(3), progress=False)
    assert [r.status for r in rows] == ["written", "failed", "written"]
    llm.rules.clear()
    before = len(llm.requests)
    rows, report = writer(llm, cache_dir=tmp_path).write(texts(3), progress=False)
    assert [r.status for r in rows] == ["written"] * 3
    assert len(llm.requests) - before == 1
    assert report.cached == 2


def test_connection_refused_fails_rows_with_reason(llm):
    w = OpenAIWriter("http://127.0.0.1:9/v1", "m", max_retries=1, backoff_s=0.01, jitter=False)
    rows, report = w.write(["x"], progress=False)
    assert rows[0].status == "failed"
    assert "could not connect" in rows[0].reason or "connection" in rows[0].reason
    assert report.failed == 1


def test_ending_words_add_a_rule_written_first_feature(llm, tmp_path):
    llm.rules["ROW1"] = "no_tags"
    docs = ["The for\nstatement  is used to iterate ROW0", "x ROW1", "ROW2"]
    rows, report = writer(llm, ending_words=3, cache_dir=tmp_path).write(docs, progress=False)
    assert [r.status for r in rows] == ["written", "dropped", "written"]
    # Whitespace collapses; fewer words than asked quotes them all; a dropped answer stays
    # dropped (the rule never rescues a row the writer failed).
    assert rows[0].summary == (
        'The text ends with "to iterate ROW0".\n\n'
        "feature one about ROW0\n\nfeature two about the end"
    )
    assert rows[2].summary.split("\n\n")[0] == 'The text ends with "ROW2".'
    assert (report.written, report.dropped) == (2, 1)
    # The raw answers are cached without the rule's feature: a writer without it reuses them.
    again, _ = writer(llm, cache_dir=tmp_path).write(docs, progress=False)
    assert len(llm.requests) == 3
    assert again[0].summary == "feature one about ROW0\n\nfeature two about the end"


def test_ending_words_must_not_be_negative(llm):
    with pytest.raises(ValueError, match="ending_words must be >= 0"):
        writer(llm, ending_words=-1)
