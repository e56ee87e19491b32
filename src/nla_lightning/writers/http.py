"""Shared HTTP machinery: JSON POST, retries with backoff, bounded concurrency, HTTPWriter."""

from __future__ import annotations

import http.client
import json
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from nla_lightning.writers.base import SummaryWriter

T = TypeVar("T")
R = TypeVar("R")
EXCERPT_CHARS = 300
# 401/403 mean a bad key, 404 a wrong base_url or model: every other row would fail the same.
FATAL_STATUSES: frozenset[int] = frozenset({401, 403, 404})


class RetryableError(Exception):
    """A failure worth retrying (429, 5xx, timeout, connection error, malformed body)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class RequestRejectedError(RuntimeError):
    """A 4xx (other than 429) that retrying cannot fix; `fatal` ones abort the whole run."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
        self.fatal = status in FATAL_STATUSES


class GaveUpError(RuntimeError):
    """All attempts for one row failed; the message carries the last reason."""


@dataclass(frozen=True)
class Endpoint:
    """Where and how to POST: URL, headers, and the env var that holds the key (for hints)."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    auth_env: str | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: backoff_s * 2**attempt, capped; Retry-After wins when given."""

    max_retries: int = 4
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    max_retry_after_s: float = 60.0
    jitter: bool = True

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `attempt + 1`."""
        if retry_after is not None:
            return max(0.0, min(retry_after, self.max_retry_after_s))
        delay = min(self.backoff_s * (2**attempt), self.max_backoff_s)
        # Jitter spreads out many clients that were throttled at the same moment.
        return delay * random.uniform(0.5, 1.0) if self.jitter else delay


def _excerpt(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    text = " ".join(text.split())
    return text[:EXCERPT_CHARS] + ("..." if len(text) > EXCERPT_CHARS else "")


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        # An HTTP-date form is rare for LLM APIs; fall back to our own backoff.
        return None


def _hint(status: int, endpoint: Endpoint) -> str:
    if status in (401, 403):
        env = endpoint.auth_env or "the API key env var"
        state = "set" if endpoint.auth_env and os.environ.get(endpoint.auth_env) else "not set"
        return f"check the API key in env var {env} (currently {state})"
    if status == 404:
        return "check base_url (e.g. http://host:8000/v1 for OpenAI-compatible) and model"
    return "check the request parameters (model, max_tokens, prompt length)"


def post_json(endpoint: Endpoint, body: dict[str, Any], timeout_s: float) -> Any:
    """POST `body` as JSON and return the decoded JSON reply; raise typed errors on failure."""
    data = json.dumps(body).encode("utf-8")
    headers = {"content-type": "application/json", **endpoint.headers}
    request = urllib.request.Request(endpoint.url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            raw = response.read()
    except urllib.error.HTTPError as err:
        excerpt = _excerpt(err.read() or b"")
        if err.code == 429 or err.code >= 500:
            raise RetryableError(f"HTTP {err.code}: {excerpt}", _retry_after(err.headers)) from err
        raise RequestRejectedError(
            f"POST {endpoint.url} answered HTTP {err.code}: {excerpt!r}; "
            f"not retried, {_hint(err.code, endpoint)}",
            err.code,
        ) from err
    except TimeoutError as err:
        raise RetryableError(f"timed out after {timeout_s} s") from err
    except urllib.error.URLError as err:
        if isinstance(err.reason, TimeoutError):
            raise RetryableError(f"timed out after {timeout_s} s") from err
        raise RetryableError(f"could not connect to {endpoint.url}: {err.reason}") from err
    except (OSError, http.client.HTTPException) as err:
        raise RetryableError(f"connection error: {type(err).__name__}: {err}") from err
    try:
        return json.loads(raw)
    except ValueError as err:
        raise RetryableError(f"malformed JSON body: {_excerpt(raw)!r}") from err


def post_with_retries(
    endpoint: Endpoint,
    body: dict[str, Any],
    extract: Callable[[Any], str],
    policy: RetryPolicy,
    timeout_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """POST until `extract` yields an answer, retrying retryable failures per `policy`."""
    last: RetryableError | None = None
    attempts = policy.max_retries + 1
    for attempt in range(attempts):
        try:
            payload = post_json(endpoint, body, timeout_s)
            try:
                return extract(payload)
            except (KeyError, IndexError, TypeError, AttributeError) as err:
                # A 200 with the wrong shape is treated like a 5xx: often a proxy hiccup.
                shape = _excerpt(str(payload))
                raise RetryableError(f"malformed JSON body: unexpected shape {shape!r}") from err
        except RetryableError as err:
            last = err
            if attempt + 1 < attempts:
                sleep(policy.delay(attempt, err.retry_after))
    raise GaveUpError(f"gave up after {attempts} attempts; last error: {last}")


def map_bounded(
    fn: Callable[[T], R],
    items: Sequence[T],
    concurrency: int,
    on_done: Callable[[int], None] = lambda n: None,
) -> list[R | Exception]:
    """Run `fn` over `items` on at most `concurrency` threads; results keep input order."""
    results: list[R | Exception] = [RuntimeError("not run")] * len(items)
    # Set by the worker that meets a fatal rejection, before its thread can take the next row:
    # cancelling from the main thread alone would race with the pool.
    stop = threading.Event()

    def guarded(item: T) -> R:
        if stop.is_set():
            raise RuntimeError("not sent: an earlier request was rejected")
        try:
            return fn(item)
        except RequestRejectedError as err:
            if err.fatal:
                stop.set()
            raise

    pool = ThreadPoolExecutor(max_workers=concurrency)
    try:
        futures = {pool.submit(guarded, item): i for i, item in enumerate(items)}
        for future in as_completed(futures):
            try:
                results[futures[future]] = future.result()
            except RequestRejectedError as err:
                if err.fatal:
                    raise
                results[futures[future]] = err
            except Exception as err:
                results[futures[future]] = err
            on_done(1)
    except BaseException:
        # Stop queued rows from sending requests that would fail the same way.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results


class HTTPWriter(SummaryWriter):
    """A writer that POSTs one JSON request per prompt; subclasses give endpoint, body, extract,
    and set `base_url`."""

    # How requests are sent, never what they ask: out of the cache key, like the key's env var
    # (another key for the same model and server gives the same answers).
    settings_outside_key: ClassVar[frozenset[str]] = SummaryWriter.settings_outside_key | {
        "concurrency",
        "max_retries",
        "timeout_s",
        "backoff_s",
        "max_retry_after_s",
        "jitter",
        "api_key_env",
    }
    base_url: str

    def __init__(
        self,
        model: str,
        *,
        concurrency: int = 8,
        max_retries: int = 4,
        timeout_s: float = 60.0,
        backoff_s: float = 1.0,
        max_retry_after_s: float = 60.0,
        jitter: bool = True,
        cache_dir: str | os.PathLike[str] | None = None,
        min_features: int = 2,
        ending_words: int = 0,
    ) -> None:
        super().__init__(
            model, cache_dir=cache_dir, min_features=min_features, ending_words=ending_words
        )
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}; use 1 for serial")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}; use 0 for no retry")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s}")
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.policy = RetryPolicy(
            max_retries=max_retries,
            backoff_s=backoff_s,
            max_retry_after_s=max_retry_after_s,
            jitter=jitter,
        )

    def answer_settings(self) -> dict[str, Any]:
        """The server, and the request body with the prompt left out (the key holds the prompt
        itself): every field a subclass sends (model, max_tokens, temperature, ...) is in the
        key without being listed twice."""
        return {
            **super().answer_settings(),
            "base_url": self.base_url,
            "request": self._body(""),
        }

    def _endpoint(self) -> Endpoint:
        """URL and headers; raise here for config errors so no request is sent."""
        raise NotImplementedError(f"{type(self).__name__} must implement _endpoint")

    def _body(self, prompt: str) -> dict[str, Any]:
        """The JSON request body for one prompt."""
        raise NotImplementedError(f"{type(self).__name__} must implement _body")

    def _extract(self, payload: Any) -> str:
        """The answer text from a decoded reply, as a CutOffAnswer when the reply says it was
        cut off (so it is not cached); KeyError etc. mark a malformed reply."""
        raise NotImplementedError(f"{type(self).__name__} must implement _extract")

    def _answer_many(
        self, prompts: Sequence[str], on_done: Callable[[int], None]
    ) -> list[str | Exception]:
        """POST every prompt with bounded concurrency and retries; raise on fatal 4xx."""
        endpoint = self._endpoint()

        def answer(prompt: str) -> str:
            return post_with_retries(
                endpoint, self._body(prompt), self._extract, self.policy, self.timeout_s
            )

        return map_bounded(answer, prompts, self.concurrency, on_done)
