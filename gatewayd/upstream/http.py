"""HTTP plumbing shared by every networked provider.

One pooled agent per upstream origin and TLS settings, kept across reloads: the lean
HTTP/1.1 client (:mod:`gatewayd.upstream.pool`, :mod:`gatewayd.upstream.leanhttp`) by
default, Twisted's ``Agent`` (:mod:`gatewayd.upstream.twisted_agent`) with
``GATEWAYD_UPSTREAM_CLIENT=agent`` (a diagnostic for A/B measurement, see
docs/performance.md). Bodies are read through our own protocols so that they can be
bounded, decoded, cancelled and, for streams, paused.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from OpenSSL import SSL
from twisted.internet.defer import Deferred, gatherResults
from twisted.python.failure import Failure
from twisted.web.iweb import IAgent

from gatewayd.config.tls import TLSSettings

# Re-exported: the providers take bodies from here.
from gatewayd.upstream.body import BodyCollector as BodyCollector
from gatewayd.upstream.body import BytesProducer as BytesProducer
from gatewayd.upstream.pool import LeanAgent
from gatewayd.upstream.twisted_agent import QuietPool, pooled_agent

# Re-exported for the endpoint tests.
from gatewayd.upstream.twisted_agent import _CachedEndpoints as _CachedEndpoints

#: Connections kept open per upstream: treq's default of 2 would serialise a busy gateway.
MAX_PERSISTENT_PER_HOST = 128
#: Idle pooled connections are closed after this long.
CACHED_CONNECTION_TIMEOUT = 120
DEFAULT_TLS = TLSSettings()
#: The environment variable that picks Twisted's Agent instead of the lean client.
CLIENT_SWITCH = "GATEWAYD_UPSTREAM_CLIENT"


def origin_of(url: str) -> str:
    """``scheme://host:port`` of a URL (never its credentials): its pool's key."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


class UpstreamAgents:
    """An agent with its own connection pool for each upstream origin and TLS settings
    (two deployments of one origin with different certificates never share a
    connection).

    Owned by the service so that a reload keeps pooled connections to upstreams
    that stay in the config. Agents follow no redirects and keep no cookies.
    ``GATEWAYD_UPSTREAM_CLIENT=agent`` (read here, once) picks Twisted's Agent.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self.client = "agent" if os.environ.get(CLIENT_SWITCH) == "agent" else "lean"
        self._agents: dict[tuple[str, TLSSettings], tuple[IAgent, LeanAgent | QuietPool]] = {}

    def agent_for(self, url: str, tls: TLSSettings = DEFAULT_TLS) -> IAgent:
        key = (origin_of(url), tls)
        known = self._agents.get(key)
        if known is None:
            agent: IAgent
            pool: LeanAgent | QuietPool
            if self.client == "agent":
                agent, pool = pooled_agent(
                    self._reactor, tls, MAX_PERSISTENT_PER_HOST, CACHED_CONNECTION_TIMEOUT
                )
            else:
                agent = pool = LeanAgent(
                    self._reactor, key[0], tls, MAX_PERSISTENT_PER_HOST, CACHED_CONNECTION_TIMEOUT
                )
            known = self._agents[key] = (agent, pool)
        return known[0]

    def pool_stats(self) -> list[tuple[str, int, int]]:
        """``(origin, connections in use, idle connections)`` per upstream origin."""
        out: dict[str, tuple[int, int]] = {}
        for (origin, _), (_, pool) in self._agents.items():
            busy, idle = pool.connection_counts()
            was = out.get(origin, (0, 0))
            out[origin] = (was[0] + busy, was[1] + idle)
        return [(origin, busy, idle) for origin, (busy, idle) in out.items()]

    def retain_only(self, urls: list[str]) -> None:
        """Close the pools of origins no longer used (after a reload)."""
        keep = {origin_of(u) for u in urls}
        for key in list(self._agents):
            if key[0] not in keep:
                _, pool = self._agents.pop(key)
                _close(pool)

    def close(self) -> Deferred[Any]:
        ds = [_close(pool) for _, pool in self._agents.values()]
        self._agents.clear()
        return gatherResults(ds)


def _close(pool: LeanAgent | QuietPool) -> Deferred[Any]:
    if isinstance(pool, LeanAgent):
        return pool.close()
    d: Deferred[Any] = pool.closeCachedConnections()
    return d


def _describe(reason: Failure) -> str:
    """A short, secret-free description of a network failure."""
    value = reason.value
    inner = getattr(value, "reasons", None)
    if inner:
        value = inner[0].value
    if isinstance(value, SSL.Error):
        # pyOpenSSL's reasons are (library, function, reason) triples: keep the reasons.
        why = [str(r[-1]) for r in (value.args[0] if value.args else []) if r and r[-1]]
        hint = (
            " (the upstream's certificate is not trusted: see ssl_verify)"
            if any("verify" in w for w in why)
            else ""
        )
        return f"TLS error: {'; '.join(why) or 'handshake failed'}{hint}"
    name = type(value).__name__
    text = str(value).strip()
    return f"{name}: {text}" if text and len(text) < 200 else name
