"""The running gateway as an :class:`IService`: config, routing table, listener, reload.

Embeddable in any Twisted application::

    from gatewayd.service import GatewayService
    GatewayService.from_file("gateway.yaml", "tcp:4000").setServiceParent(application)
"""

from __future__ import annotations

import os
import random
import signal
import sys
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet import endpoints, threads
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IListeningPort, IReactorTime, IStreamServerEndpoint
from twisted.internet.task import Cooperator
from twisted.logger import ILogObserver
from twisted.python.components import Componentized
from twisted.python.failure import Failure

from gatewayd.cache import CacheStage
from gatewayd.config import ConfigError, Deployment, GatewayConfig, load_config
from gatewayd.config.pace import reactor_first
from gatewayd.fleet.watch import FleetWatch
from gatewayd.limits import Limiter
from gatewayd.limits.usagelog import UsageLog
from gatewayd.observability.log import get_logger
from gatewayd.observability.metrics import GatewayMetrics, multiprocess_dir
from gatewayd.observability.reactor_lag import ReactorLag
from gatewayd.providers.base import Provider
from gatewayd.providers.factory import build_provider
from gatewayd.requestlog import RequestLog
from gatewayd.routing import Router, RoutingTable, build_table
from gatewayd.routing.state_setup import build_limiter
from gatewayd.routing.wildcard import Listings, with_wildcards
from gatewayd.sockets import systemd_notify as systemd
from gatewayd.sockets.listen import listen_description as listen_description
from gatewayd.sockets.listen import with_backlog as with_backlog
from gatewayd.stages import Pipeline
from gatewayd.tracing.setup import build_tracing
from gatewayd.upstream.http import UpstreamAgents
from gatewayd.web.request import GatewaySite
from gatewayd.web.resources import build_root
from gatewayd.web.stage_list import request_pipeline

log = get_logger("gatewayd.service")


class GatewayService(Service):
    """Holds one immutable config and routing table; a reload swaps both whole."""

    name = "gatewayd"

    def __init__(
        self,
        config: GatewayConfig,
        listen: str | IStreamServerEndpoint,
        reactor: Any = None,
        config_path: str | None = None,
        handle_sighup: bool = True,
        rng: random.Random | None = None,
        exit_on_listen_failure: bool = False,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.reactor = reactor
        self.listen = listen
        self.config_path = config_path
        self.handle_sighup = handle_sighup
        self.config = config
        self.agents = UpstreamAgents(reactor)
        self.metrics = GatewayMetrics()
        #: The models discovering deployments list (wildcard aliases serve those).
        self.listings = Listings()
        self._router = Router(self._table(config), reactor, rng, self.metrics)
        #: Key and deployment limits on the state store (memory, or shared Redis).
        self.state = build_limiter(config.general, reactor, self.metrics, self._router)
        #: The response cache: one for the service's life (a reload keeps its answers).
        self.cache = CacheStage()
        #: The console's request log: kept when it has a path or the console is on.
        self.request_log: RequestLog | None = None
        general = config.general
        if general.request_log.path is not None or general.ui:
            self.request_log = RequestLog(general.request_log, reactor, self.metrics)
        #: The stages around every routed request (:mod:`gatewayd.web.stage_list`).
        self.pipeline: Pipeline = self._pipeline(config)
        self.site = GatewaySite(build_root(self), lambda: self.config.general, self.metrics)
        self.site.request_log = self.request_log
        #: Active health checks and model discovery (docs/routing.md).
        self.fleet = FleetWatch(
            self._router.health,
            self.listings,
            reactor,
            self.agents.agent_for,
            lambda d: build_provider(d, self.agents, reactor),
            self.state.cooldowns,
        )
        self._observe()
        self.tracing = build_tracing(config.general.otel, reactor)
        self.site.tracing = self.tracing
        self.port: IListeningPort | None = None
        self._ready = False
        #: How the listen address reads in messages (the endpoint string).
        self.listen_description = listen if isinstance(listen, str) else None
        #: The daemon exits non-zero when it cannot listen; an embedding application
        #: gets ``listen_failure`` set and decides itself.
        self.exit_on_listen_failure = exit_on_listen_failure
        self.listen_failure: Failure | None = None
        self._reloading = False
        #: Called after each reload's swap (the daemon freezes the new heap: GC tuning).
        self.after_reload: list[Callable[[], None]] = []
        self._reload_waiters: list[Deferred[bool]] = []
        #: Runs a reload's reactor-side work one step per reactor turn.
        self._cooperator = Cooperator(
            terminationPredicateFactory=lambda: lambda: True,
            scheduler=lambda step: self.reactor.callLater(0, step),
        )
        for w in config.warnings:
            log.warn("config: {warning}", warning=w)

    @classmethod
    def from_file(cls, path: str, listen: str | IStreamServerEndpoint, **kw: Any) -> GatewayService:
        """Load and validate ``path`` (raises :class:`ConfigError`) and build the service."""
        return cls(load_config(path), listen, config_path=path, **kw)

    #: Installed as the application's log observer (``--log-format json``): twistd
    #: then logs through it instead of its own text observer.
    log_observer: ILogObserver | None = None

    def setServiceParent(self, parent: Any) -> None:
        if self.log_observer is not None and isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self.log_observer)
        super().setServiceParent(parent)  # type: ignore[no-untyped-call]

    # -- what the web layer sees -----------------------------------------------

    @property
    def router(self) -> Router:
        return self._router

    @property
    def limiter(self) -> Limiter:
        return self.state.limiter

    @property
    def usage_log(self) -> UsageLog | None:
        return self.state.usage_log

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def clock(self) -> IReactorTime:
        clock: IReactorTime = self.reactor
        return clock

    def _observe(self) -> None:
        """Metrics read from the service itself, and the reactor-lag probe."""
        m = self.metrics
        m.last_reload.set(self.reactor.seconds())
        m.client_connections.collect = lambda: [((), float(self.site.open_connections))]
        m.upstream_connections.collect = lambda: [
            s
            for origin, busy, idle in self.agents.pool_stats()
            for s in (((origin, "in_use"), float(busy)), ((origin, "idle"), float(idle)))
        ]
        # In multiprocess mode the probe's tick also publishes the callback gauges.
        tick = m.refresh if multiprocess_dir() else None
        self.lag = ReactorLag(self.reactor, m.reactor_lag.observe, tick=tick)

    # -- lifecycle -------------------------------------------------------------

    def _pipeline(self, config: GatewayConfig) -> Pipeline:
        return request_pipeline(
            self.cache if config.general.cache is not None else None,
            request_log=self.request_log is not None,
        )

    def _table(self, config: GatewayConfig) -> RoutingTable:
        def make(d: Deployment) -> Provider:
            return build_provider(d, self.agents, self.reactor)

        return with_wildcards(build_table(config, make), make, self.listings)

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self.state.start()
        endpoint = (
            endpoints.serverFromString(
                self.reactor, with_backlog(self.listen, self.config.general.listen_backlog)
            )
            if isinstance(self.listen, str)
            else self.listen
        )
        self.lag.start()
        self.fleet.retarget(self.config)
        d = endpoint.listen(self.site)
        d.addCallbacks(self._listening, self._listen_failed)
        if self.handle_sighup and hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, self._sighup)

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        self._ready = True
        host = port.getHost()
        if hasattr(host, "port"):
            addr = f"{getattr(host, 'host', '')}:{host.port}"
        else:
            addr = str(getattr(host, "name", host))
        log.info(
            "gatewayd listening on {addr} with {n} model alias(es): {aliases}",
            addr=addr,
            n=len(self._router.table.routes),
            aliases=", ".join(self._router.table.routes),
        )
        systemd.notify("READY=1")

    def _listen_failed(self, failure: Failure) -> None:
        where = self.listen_description or str(self.listen)
        self.listen_failure = failure
        if self.exit_on_listen_failure:  # said once, on stderr, by _stop_with_error
            self.reactor.callLater(0, self._stop_with_error, where, failure)
        else:
            log.critical("cannot listen on {listen}: {err}", listen=where, err=failure.value)

    def _stop_with_error(self, where: str, failure: Failure) -> None:
        # twistd has no exit-status hook: leave non-zero once the reactor has stopped.
        print(f"gatewayd: cannot listen on {where}: {failure.value}", file=sys.stderr)
        self.reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
        self.reactor.stop()

    def _sighup(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.reload)

    def reload(self) -> Deferred[bool]:
        """Read and validate the config file again; swap it in if valid.

        The file is read, parsed and built in a thread, so serving never waits on it (a
        huge file, a slow disk), paced so that the event loop keeps most of the GIL
        (:func:`reactor_first`); the swap happens in the reactor thread, in steps of
        about a millisecond, the last of which swaps config and table whole. An invalid file
        keeps the old config serving and logs why. The listening address does not
        change. Call it in the reactor thread. The Deferred fires with True when the new
        config is in force, False when it was refused (or the config came from no file).
        Reloads asked for while one runs are served by one more reload after it."""
        if self.config_path is None:
            log.warn("reload asked, but the config did not come from a file")
            return succeed(False)
        done: Deferred[bool] = Deferred()
        self._reload_waiters.append(done)
        if len(self._reload_waiters) == 1 and not self._reloading:
            self._next_reload()
        return done

    def _next_reload(self) -> None:
        waiters, self._reload_waiters = self._reload_waiters, []
        self._reloading = True
        systemd.reloading()
        assert self.config_path is not None
        loaded = threads.deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), self._load_and_build, self.config_path
        )
        d: Deferred[bool] = loaded.addCallback(self._swap)
        d.addErrback(self._reload_failed)  # a bad file, or a bug: the old config stays

        def finished(ok: bool) -> None:
            systemd.notify("READY=1")
            self._reloading = False
            for w in waiters:
                w.callback(ok)
            if self._reload_waiters:
                self._next_reload()

        d.addCallback(finished)

    def _load_and_build(self, path: str) -> tuple[GatewayConfig, RoutingTable]:
        """In a thread: the new config and its routing table; raises ConfigError."""
        with reactor_first():
            config = load_config(path)
            return config, self._table(config)

    def _reload_failed(self, failure: Failure) -> bool:
        self.metrics.reloads.inc("error")
        if failure.check(ConfigError):
            log.error("reload failed, keeping the running config: {err}", err=str(failure.value))
        else:
            log.failure("reload failed, keeping the running config", failure=failure)
        return False

    def _swap(self, loaded: tuple[GatewayConfig, RoutingTable]) -> Deferred[bool]:
        """In the reactor thread, in steps of about a millisecond (the new alias pools
        are built, then everything is swapped in one step). Fires with True."""
        config, table = loaded
        for w in config.warnings:
            log.warn("config: {warning}", warning=w)

        def swapped() -> None:
            self.config = config
            self._reload_request_log(config)
            self.pipeline = self._pipeline(config)
            self.state.reloaded(config.general)
            self.agents.retain_only([d.api_base for d in config.deployments if d.api_base])
            if self.running:
                self.fleet.retarget(config)
            self.metrics.reloads.inc("ok")
            self.metrics.last_reload.set(self.reactor.seconds())
            log.info(
                "config reloaded from {path}: {n} model alias(es)",
                path=self.config_path,
                n=len(table.routes),
            )
            for hook in self.after_reload:
                hook()

        steps = self._router.swap_in_steps(table, on_swap=swapped)
        return self._cooperator.coiterate(steps).addCallback(lambda _: True)

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        self.lag.stop()
        self.fleet.stop()
        self._ready = False
        systemd.notify("STOPPING=1")
        d: Deferred[Any] = succeed(None)
        if self.port is not None:
            d = Deferred.fromCoroutine(self._drain())
        d.addBoth(lambda _: self.agents.close())
        d.addBoth(lambda _: self.state.stop())
        if self.request_log is not None:
            d.addBoth(self._close_request_log)
        d.addBoth(lambda _: self.cache.close())
        d.addBoth(lambda _: self.tracing.shutdown())
        d.addBoth(lambda _: None)
        return d

    def _reload_request_log(self, config: GatewayConfig) -> None:
        """A request log given a path on reload starts; a kept one takes the new settings.
        (One kept for the console stays while the console runs: ``ui`` is read at start.)"""
        settings = config.general.request_log
        if self.request_log is not None:
            self.request_log.configure(settings)
        elif settings.path is not None:
            self.request_log = RequestLog(settings, self.reactor, self.metrics)
        self.site.request_log = self.request_log

    def _close_request_log(self, _: Any) -> None:
        if self.request_log is not None:
            self.request_log.close()

    async def _drain(self) -> None:
        """Stop accepting; give requests in flight up to the grace period to finish."""
        from twisted.internet.task import deferLater

        assert self.port is not None
        stopped = self.port.stopListening()
        if stopped is not None:
            await stopped
        grace = self.config.general.graceful_shutdown_timeout
        deadline = self.reactor.seconds() + grace
        while self._in_flight() and self.reactor.seconds() < deadline:
            await deferLater(self.reactor, 0.05)

    def _in_flight(self) -> int:
        """Requests not yet answered: waiting, retrying, or streaming."""
        return self.site.active_requests
