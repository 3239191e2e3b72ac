"""``gatewayd check-config FILE``: validate a config as a start would and describe it.

For CI pipelines and ``ExecReload`` pre-checks: the report names every alias with its
deployments (ids, providers, models, URLs: never a key or a header value), its
fallbacks and its routing strategy, then every warning. The exit status says what a
pipeline needs to know: :data:`OK`, :data:`WARNINGS` (only with ``--strict``) or
:data:`ERRORS`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gatewayd.config.errors import ConfigError
from gatewayd.config.model import Deployment, GatewayConfig

#: Exit statuses.
OK = 0
WARNINGS = 1
ERRORS = 2


@dataclass(frozen=True)
class CheckResult:
    """What :func:`check_config` found: the exit status and the report's lines."""

    status: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def check_config(
    path: str,
    load: Callable[[str], GatewayConfig],
    strict: bool = False,
) -> CheckResult:
    """Load ``path`` with ``load`` (the loader a start and a reload use) and report.
    Never raises for a bad config: that is :data:`ERRORS` and the reason."""
    try:
        config = load(path)
    except ConfigError as e:
        return CheckResult(ERRORS, (f"{path}: config error: {e}",))
    lines = describe(config)
    if config.warnings:
        status = WARNINGS if strict else OK
        verdict = "has warnings" + (" (--strict: failing)" if strict else "")
    else:
        status, verdict = OK, "is valid"
    return CheckResult(status, (f"{path}: config {verdict}", *lines))


def describe(config: GatewayConfig) -> list[str]:
    """The aliases, their deployments, fallbacks and strategies, then the warnings."""
    g = config.general
    aliases = config.aliases
    out = [f"aliases: {len(aliases)}"]
    for alias, deployments in aliases.items():
        own = g.for_alias(alias)
        strategy = own.routing_strategy or g.routing_strategy
        out.append(f"  {alias}")
        out.append(f"    routing_strategy: {strategy}")
        hedge = g.hedge_for(alias)
        out.append(f"    hedge: {'off' if hedge is None else hedge.describe()}")
        out.append(f"    deployments: {len(deployments)}")
        out += [f"      - {_deployment_text(d)}" for d in deployments]
        fallbacks = g.fallbacks.get(alias, g.default_fallbacks)
        out.append(f"    fallbacks: {', '.join(a for a in fallbacks if a != alias) or '(none)'}")
        cw = g.context_window_fallbacks.get(alias, ())
        if cw:
            out.append(f"    context_window_fallbacks: {', '.join(cw)}")
    if g.health_check_interval:
        out.append(f"health checks: every {g.health_check_interval:g} s")
    out.append(
        f"num_retries: {g.num_retries}, allowed_fails: {g.allowed_fails}, "
        f"cooldown_time: {g.cooldown_time:g} s, request_timeout: {g.request_timeout:g} s"
    )
    out.append(
        f"client keys: {len(config.keys.keys)}, master_key: {'set' if g.master_key else 'not set'}"
    )
    out.append(f"warnings: {len(config.warnings)}")
    out += [f"  - {w}" for w in config.warnings]
    return out


def _deployment_text(d: Deployment) -> str:
    """Id, provider, model, URL and limits: the fields that are safe to print. The key,
    the headers and the provider-specific extras are left out (they may hold secrets)."""
    parts = [d.id, f"provider={d.provider.prefix}", f"model={d.model}"]
    if d.api_base is not None:
        parts.append(f"api_base={d.api_base}")
    for name in ("weight", "rpm", "tpm", "max_parallel_requests", "timeout", "stream_timeout"):
        value = getattr(d, name)
        if value is not None:
            parts.append(f"{name}={value:g}")
    parts.append(f"api_key={'set' if d.api_key else 'not set'}")
    if d.health_check is not None:
        check = d.health_check
        how = "completion" if check.completion else (check.path or "listing")
        every = f"/{check.interval:g}s" if check.interval is not None else ""
        parts.append(f"health_check={how}{every}")
    if d.discover:
        parts.append("discover=true")
    return " ".join(parts)
