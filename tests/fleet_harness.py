"""A fleet of replicas on a fake clock, each answering after a scripted delay: for the
routing strategies' tests (latency, affinity, hedging)."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from gatewayd.config import Deployment, parse_config
from gatewayd.providers.base import (
    AttemptLimits,
    Endpoint,
    FailureKind,
    Provider,
    ProviderRequest,
    UpstreamFailure,
    UpstreamResponse,
    openai_error,
)
from gatewayd.routing import Router, build_table


class TimedProvider(Provider):
    """Answers after ``delay`` seconds of the fake clock (changeable at any time)."""

    def __init__(self, deployment: Deployment, clock: Clock, delay: float) -> None:
        super().__init__(deployment)
        self.clock = clock
        self.delay = delay
        self.fail_next = 0
        self.cancelled = 0
        self.calls: list[float] = []
        self.pending: list[tuple[Deferred[UpstreamResponse], Any]] = []

    def fail_pending(self) -> None:
        """Every answer still to come fails now (a 503)."""
        for d, call in self.pending:
            if call.active():
                call.cancel()
                d.errback(UpstreamFailure(FailureKind.HTTP, 503, openai_error("overloaded")))
        self.pending.clear()

    def send(self, request: ProviderRequest, limits: AttemptLimits) -> Deferred[UpstreamResponse]:
        self.calls.append(self.clock.seconds())

        def cancel(_: Deferred[UpstreamResponse]) -> None:
            self.cancelled += 1  # the connection would be closed here
            call.cancel()

        d: Deferred[UpstreamResponse] = Deferred(cancel)
        call: Any
        if self.fail_next:
            self.fail_next -= 1
            err = UpstreamFailure(FailureKind.CONNECT, 502, openai_error("refused"))
            call = self.clock.callLater(0.001, d.errback, err)
            return d
        body = b'{"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 10}}'
        call = self.clock.callLater(self.delay, d.callback, UpstreamResponse(200, body=body))
        self.pending.append((d, call))
        return d


def config(strategy: str = "latency-based-routing", n: int = 3, extra: str = "") -> str:
    entries = "".join(
        f"  - model_name: fleet\n"
        f"    params: {{model: openai/m, api_base: 'http://127.0.0.1:9/v1', api_key: k}}\n"
        f"    model_info: {{id: r{i}}}\n"
        for i in range(n)
    )
    return f"model_list:\n{entries}general_settings:\n  routing_strategy: {strategy}\n{extra}"


class Fleet:
    def __init__(self, text: str, delays: dict[str, float], seed: int = 7) -> None:
        self.clock = Clock()
        self.providers: dict[str, TimedProvider] = {}

        def make(d: Deployment) -> Provider:
            p = TimedProvider(d, self.clock, delays.get(d.id, 0.05))
            self.providers[d.id] = p
            return p

        self.router = Router(
            build_table(parse_config(text, environ={}), make), self.clock, random.Random(seed)
        )
        self.served: list[tuple[float, str]] = []

    def run(
        self,
        seconds: float,
        rate: float = 10.0,
        alias: str = "fleet",
        body: dict[str, Any] | None = None,
    ) -> Counter[str]:
        """Requests at ``rate`` per second for ``seconds``; which deployment served each."""
        got: Counter[str] = Counter()
        step = 1.0 / rate
        for _ in range(int(seconds * rate)):
            d = self.router.route(alias, ProviderRequest(Endpoint.CHAT, body or {"model": alias}))

            def done(result: object) -> None:
                dep = getattr(result, "deployment", None)
                if dep is not None:
                    got[dep] += 1
                    self.served.append((self.clock.seconds(), dep))

            d.addCallbacks(done, lambda f: None)
            self.clock.pump([step / 10] * 10)  # answers come back at their own times
        self.clock.pump([0.01] * 500)  # let the last answers come back
        return got
