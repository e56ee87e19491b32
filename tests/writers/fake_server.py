"""A real HTTP server on 127.0.0.1 that speaks OpenAI chat-completions and Anthropic messages."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

GOOD_ANSWER = "<analysis>\n- feature one about {tag}\n- feature two about the end\n</analysis>"
NO_TAGS_ANSWER = "feature one about the text\nfeature two about the end"
ONE_FEATURE_ANSWER = "<analysis>\n- only one feature here\n</analysis>"
# Cut off by the token limit mid-way: the block never closes.
CUT_ANSWER = "<analysis>\n- feature one about {tag}\n- feature tw"
# Replies marked as cut off (OpenAI finish_reason "length", Anthropic stop_reason "max_tokens"):
# "cut" mid-block, "cut_closed" with a whole block (the limit came right after it).
CUT_BEHAVIOURS = ("cut", "cut_closed")
BEHAVIOURS = (
    "ok",
    "500",
    "429",
    "hang",
    "malformed",
    "401",
    "400",
    "no_tags",
    "one_feature",
    *CUT_BEHAVIOURS,
)


@dataclass
class Recorded:
    """One request as the server saw it."""

    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeLLM:
    """Programmable state shared with the handler threads."""

    faults: deque[str] = field(default_factory=deque)  # consumed one per request, in order
    rules: dict[str, str] = field(default_factory=dict)  # prompt substring -> behaviour, always
    delays: dict[str, float] = field(default_factory=dict)  # prompt substring -> seconds
    delay_s: float = 0.0
    retry_after: str | None = "0.05"
    hang_s: float = 0.5
    requests: list[Recorded] = field(default_factory=list)
    inflight: int = 0
    max_inflight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def behaviour_for(self, prompt: str) -> str:
        """Next scripted fault, else the first matching rule, else ok."""
        with self.lock:
            if self.faults:
                return self.faults.popleft()
        return next((b for s, b in self.rules.items() if s in prompt), "ok")

    def delay_for(self, prompt: str) -> float:
        """Per-prompt delay, used to make later rows finish first."""
        return next((d for s, d in self.delays.items() if s in prompt), self.delay_s)


def _answer_text(behaviour: str, prompt: str) -> str:
    if behaviour == "no_tags":
        return NO_TAGS_ANSWER
    if behaviour == "one_feature":
        return ONE_FEATURE_ANSWER
    match = re.search(r"ROW\d+", prompt)
    tag = match.group(0) if match else "the text"
    return (CUT_ANSWER if behaviour == "cut" else GOOD_ANSWER).format(tag=tag)


def _reply(path: str, text: str, cut: bool = False) -> dict[str, Any]:
    if path.endswith("/messages"):
        # A thinking block after the text must be ignored by the client.
        return {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "content": [
                {"type": "text", "text": text[:12]},
                {"type": "text", "text": text[12:]},
                {"type": "thinking", "thinking": "<analysis>\n- bogus a\n- bogus b\n</analysis>"},
            ],
            "stop_reason": "max_tokens" if cut else "end_turn",
        }
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "length" if cut else "stop",
            }
        ],
    }


def make_handler(state: FakeLLM) -> type[BaseHTTPRequestHandler]:
    """A handler class bound to `state`."""

    class Handler(BaseHTTPRequestHandler):
        _counted = False

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

        def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
            self._leave()
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_POST(self) -> None:  # noqa: N802
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = json.loads(raw)
            prompt = body["messages"][0]["content"]
            with state.lock:
                state.requests.append(
                    Recorded(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                state.inflight += 1
                state.max_inflight = max(state.max_inflight, state.inflight)
            self._counted = True
            try:
                self._respond(state.behaviour_for(prompt), prompt)
            except OSError:
                pass  # the client gave up (timeout); nothing to answer
            finally:
                self._leave()

        def _leave(self) -> None:
            # A request stops counting as in flight before its answer is written: once
            # the client has the answer it may send its next request, which can reach
            # another handler thread before this one would get past the write.
            if self._counted:
                self._counted = False
                with state.lock:
                    state.inflight -= 1

        def _respond(self, behaviour: str, prompt: str) -> None:
            time.sleep(state.delay_for(prompt))
            if behaviour == "500":
                self._send(500, b'{"error": "internal"}')
            elif behaviour == "429":
                headers = {"Retry-After": state.retry_after} if state.retry_after else {}
                self._send(429, b'{"error": "rate limited"}', headers)
            elif behaviour == "401":
                self._send(401, b'{"error": {"message": "invalid x-api-key"}}')
            elif behaviour == "400":
                self._send(400, b'{"error": {"message": "prompt is too long"}}')
            elif behaviour == "malformed":
                self._send(200, b'{"choices": [ this is not json')
            else:
                if behaviour == "hang":
                    time.sleep(state.hang_s)
                text = _answer_text(behaviour, prompt)
                reply = _reply(self.path, text, cut=behaviour in CUT_BEHAVIOURS)
                self._send(200, json.dumps(reply).encode())

    return Handler


class QuietServer(ThreadingHTTPServer):
    """Daemon handler threads, no join on close, no tracebacks for clients that hung up."""

    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass
