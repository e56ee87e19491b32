"""Writer for the Anthropic Messages API."""

from __future__ import annotations

import os
from typing import Any

from nla_lightning.writers.base import CutOffAnswer
from nla_lightning.writers.http import Endpoint, HTTPWriter

ANTHROPIC_VERSION = "2023-06-01"
# stop_reason values of an answer that did not end on its own: the max_tokens limit, the
# context window, or a refusal that stopped it mid-way. "end_turn" and "stop_sequence" mean
# the answer is whole.
CUT_OFF_STOP_REASONS = frozenset({"max_tokens", "model_context_window_exceeded", "refusal"})


class AnthropicWriter(HTTPWriter):
    """POSTs to `{base_url}/v1/messages`; the key is required and checked before any request."""

    name = "anthropic"

    def __init__(
        self,
        model: str,
        base_url: str = "https://api.anthropic.com",
        api_key_env: str = "ANTHROPIC_API_KEY",
        *,
        max_tokens: int = 256,
        temperature: float | None = None,
        **http_kwargs: Any,
    ) -> None:
        # Concurrency, retries, timeouts and the cache are HTTPWriter's, with its defaults.
        super().__init__(model, **http_kwargs)
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.max_tokens = max_tokens
        # float: `temperature=0` from the command line keys (and asks) like the YAML's 0.0.
        self.temperature = None if temperature is None else float(temperature)

    def answer_settings(self) -> dict[str, Any]:
        # The API version header can change what the same body returns.
        return {**super().answer_settings(), "anthropic_version": ANTHROPIC_VERSION}

    def _endpoint(self) -> Endpoint:
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ValueError(
                f"AnthropicWriter needs an API key in env var {self.api_key_env}, which is "
                f"not set; export {self.api_key_env}=... or pass api_key_env=<your var name>"
            )
        headers = {
            "x-api-key": key,
            "anthropic-version": ANTHROPIC_VERSION,
            "content-type": "application/json",
        }
        return Endpoint(f"{self.base_url}/v1/messages", headers, self.api_key_env)

    def _body(self, prompt: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "messages": [{"role": "user", "content": prompt}],
        }
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return body

    def _extract(self, payload: Any) -> str:
        blocks = payload["content"]
        if not isinstance(blocks, list):
            raise TypeError(f"expected content to be a list of blocks, got {type(blocks)}")
        # Thinking and tool blocks are not part of the answer.
        text = "".join(b["text"] for b in blocks if b.get("type") == "text")
        stop = payload.get("stop_reason")
        if stop in CUT_OFF_STOP_REASONS:
            return CutOffAnswer(text, f"stop_reason={stop}")
        return text
