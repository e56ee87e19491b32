"""Writer for any OpenAI-compatible chat-completions server (vLLM, Ollama, llama.cpp, hosted)."""

from __future__ import annotations

import os
from typing import Any

from nla_lightning.writers.base import CutOffAnswer
from nla_lightning.writers.http import Endpoint, HTTPWriter

# finish_reason values of an answer that did not end on its own: the max_tokens limit, or a
# content filter that cut it. "stop" and the values of other servers (TGI's "eos_token",
# "stop_sequence") or none at all mean the answer is whole.
CUT_OFF_FINISH_REASONS = frozenset({"length", "content_filter"})


class OpenAIWriter(HTTPWriter):
    """POSTs to `{base_url}/chat/completions`; the key is optional since local servers need none."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        **http_kwargs: Any,
    ) -> None:
        # Concurrency, retries, timeouts and the cache are HTTPWriter's, with its defaults.
        super().__init__(model, **http_kwargs)
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.max_tokens = max_tokens
        # float: `temperature=0` from the command line keys (and asks) like the YAML's 0.0.
        self.temperature = float(temperature)

    def _endpoint(self) -> Endpoint:
        key = os.environ.get(self.api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return Endpoint(f"{self.base_url}/chat/completions", headers, self.api_key_env)

    def _body(self, prompt: str) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }

    def _extract(self, payload: Any) -> str:
        choice = payload["choices"][0]
        content = choice["message"]["content"]
        # Some servers send null content (e.g. all tokens spent on reasoning): parse as empty.
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise TypeError(f"expected message.content to be a string, got {type(content)}")
        finish = choice.get("finish_reason")
        if finish in CUT_OFF_FINISH_REASONS:
            return CutOffAnswer(content, f"finish_reason={finish}")
        return content
