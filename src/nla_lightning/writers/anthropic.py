"""Writer for the Anthropic Messages API."""

from __future__ import annotations

import os
from typing import Any

from nla_lightning.writers.http import Endpoint, HTTPWriter

ANTHROPIC_VERSION = "2023-06-01"


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
        self.temperature = temperature

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
        return "".join(b["text"] for b in blocks if b.get("type") == "text")
