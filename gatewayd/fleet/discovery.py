"""Model discovery: a wildcard alias's deployment with ``params.discover: true`` lists
its upstream's models every ``params.discover_interval`` (default
``general_settings.discover_interval``, 60 s), at start and at every reload.

The listing is the provider's: OpenAI-compatible ``GET {api_base}/models`` (vLLM,
llama.cpp, LM Studio, Docker Model Runner's ``/engines/v1/models``) or Ollama's
``GET /api/tags``. What it finds goes into the :class:`~gatewayd.routing.wildcard.Listings`
the routing table reads: ``/v1/models`` shows those models, and a name no deployment
lists is answered 404 without an upstream call. A failed listing keeps the last good
one (an upstream that restarts does not lose its models for a minute).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from gatewayd.config.model import Deployment, GatewayConfig
from gatewayd.observability.log import get_logger
from gatewayd.routing.wildcard import Listings

log = get_logger(__name__)

#: Seconds a listing may take.
LISTING_TIMEOUT = 10.0

#: GETs a URL with a deployment's credentials: fires with (status, body).
Get = Callable[[Deployment, str, float], Deferred[tuple[int, bytes]]]


def parse_listing(body: bytes) -> frozenset[str]:
    """The model ids of an OpenAI ``{"data": [{"id"}]}`` or Ollama ``{"models":
    [{"name"}]}`` listing; raises ValueError for anything else."""
    doc = json.loads(body)
    items = None
    if isinstance(doc, dict):
        items = doc.get("data") if isinstance(doc.get("data"), list) else doc.get("models")
    elif isinstance(doc, list):
        items = doc
    if not isinstance(items, list):
        raise ValueError("not a model listing (no data or models list)")
    ids = set()
    for item in items:
        if isinstance(item, str):
            ids.add(item)
        elif isinstance(item, dict):
            for key in ("id", "name", "model"):
                if isinstance(item.get(key), str) and item[key]:
                    ids.add(item[key])
                    break
    return frozenset(ids)


class Discoverer:
    """Lists the models of the discovering deployments of the config in force."""

    def __init__(
        self,
        listings: Listings,
        clock: IReactorTime,
        get: Get,
        listing_url: Callable[[Deployment], str],
        rng: random.Random | None = None,
    ) -> None:
        self.listings = listings
        self.clock = clock
        self.get = get
        self.listing_url = listing_url
        self.rng = rng or random.Random()
        self._timers: dict[str, IDelayedCall] = {}
        self._targets: dict[str, tuple[Deployment, float]] = {}
        #: Fires after each listing is judged (tests wait on it).
        self.listed: list[Callable[[str], None]] = []

    def retarget(self, config: GatewayConfig) -> None:
        """List every discovering deployment of ``config`` now (a reload lists again),
        then every interval; forget the listings of deployments that are gone."""
        self.stop()
        general = config.general.discover_interval
        self._targets = {
            d.id: (d, d.discover_interval or general)
            for d in config.deployments
            if d.discover and d.api_base is not None
        }
        self.listings.retain_only(set(self._targets))
        for dep_id in self._targets:
            self._schedule(dep_id, self.rng.uniform(0.0, 0.2))

    def stop(self) -> None:
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()

    def _schedule(self, dep_id: str, delay: float) -> None:
        self._timers[dep_id] = self.clock.callLater(delay, self._due, dep_id)

    def _due(self, dep_id: str) -> None:
        target = self._targets.get(dep_id)
        if target is None:
            return
        d, interval = target
        self._schedule(dep_id, interval)
        try:
            sent = self.get(d, self.listing_url(d), min(LISTING_TIMEOUT, interval))
        except Exception as e:
            sent = Deferred()
            sent.errback(e)
        sent.addCallbacks(lambda r: self._answered(d, *r), lambda f: self._failed(d, f))
        sent.addBoth(lambda _: self._tell(dep_id))

    def _answered(self, d: Deployment, status: int, body: bytes) -> None:
        if self._targets.get(d.id, (None,))[0] is not d:
            return  # a reload replaced or removed it while the listing was under way
        if not 200 <= status < 300:
            log.warn("model discovery for {dep}: HTTP {status}", dep=d.id, status=status)
            return
        try:
            models = parse_listing(body)
        except ValueError as e:
            log.warn("model discovery for {dep}: {err}", dep=d.id, err=str(e))
            return
        if self.listings.record(d.id, models):
            log.info(
                "model discovery for {dep}: {n} model(s): {models}",
                dep=d.id,
                n=len(models),
                models=", ".join(sorted(models)[:20]),
            )

    def _failed(self, d: Deployment, failure: Failure) -> None:
        log.warn(
            "model discovery for {dep} failed: {err}; keeping the last listing",
            dep=d.id,
            err=failure.getErrorMessage() or type(failure.value).__name__,
        )

    def _tell(self, dep_id: str) -> None:
        for hook in list(self.listed):
            hook(dep_id)
