"""Fixtures: fake LLM servers on 127.0.0.1, started per test in background threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from tests.writers.fake_server import FakeLLM, QuietServer, make_handler


def _serve() -> Iterator[FakeLLM]:
    state = FakeLLM()
    server = QuietServer(("127.0.0.1", 0), make_handler(state))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
    thread.daemon = True
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def llm(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLLM]:
    """A fresh fake server; program it via `.faults`, `.rules`, `.delays`."""
    # Proxies from the environment must not intercept loopback requests.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    yield from _serve()


@pytest.fixture
def other_llm(llm: FakeLLM) -> Iterator[FakeLLM]:
    """A second fake server beside `llm`, on its own port: another base_url."""
    yield from _serve()
