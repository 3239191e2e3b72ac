"""Cost of the dialect translations (pure functions, no network).

Run: ``python bench/dialects.py``. Prints microseconds per translated stream event
and per translated request/response pair.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from gatewayd.dialects import messages, responses
from gatewayd.dialects.messages_stream import MessagesStream
from gatewayd.dialects.responses_stream import ResponsesStream
from gatewayd.dialects.stages import Translating
from gatewayd.testing.replies import chat_completion, chat_stream


def per_event(make: Callable[[], Translating], events: list[bytes], runs: int = 50) -> float:
    start = time.perf_counter()
    for _ in range(runs):
        stage = make()
        for event in events:
            stage.feed(event)
        stage.end()
    return (time.perf_counter() - start) / (runs * len(events))


def per_call(fn: Callable[[], Any], runs: int = 5000) -> float:
    start = time.perf_counter()
    for _ in range(runs):
        fn()
    return (time.perf_counter() - start) / runs


def main() -> None:
    events = list(chat_stream(content=" ".join(["word"] * 1000)).pieces)
    print(f"messages stream:  {per_event(lambda: MessagesStream('m'), events) * 1e6:.1f} us/event")
    print(
        "responses stream: "
        f"{per_event(lambda: ResponsesStream({'model': 'm'}, 'resp_1', 'm'), events) * 1e6:.1f} us/event"
    )
    chat = chat_completion(content="hello " * 50, calls=[("c", "f", {"a": 1})])
    mbody = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}] * 10}
    rbody = {"model": "m", "input": [{"role": "user", "content": "hi"}] * 10}
    m = per_call(lambda: (messages.to_chat(mbody), messages.from_chat(chat, "m")))
    r = per_call(lambda: (responses.to_chat(rbody), responses.from_chat(chat, rbody, "r", "m")))
    print(f"messages request+response:  {m * 1e6:.1f} us")
    print(f"responses request+response: {r * 1e6:.1f} us")


if __name__ == "__main__":
    main()
