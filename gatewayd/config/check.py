"""``gatewayd check-config FILE``: validate a config as a start would and describe it.

For CI pipelines and ``ExecReload`` pre-checks: the report names every alias with its
deployments (ids, providers, models, URLs: never a key or a header value), its
fallbacks and its routing strategy, then every warning. The exit status says what a
pipeline needs to know: :data:`OK`, :data:`WARNINGS` (only with ``--strict``) or
:data:`ERRORS`."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from gatewayd.config.errors import ConfigError
from gatewayd.config.model import Deployment, GatewayConfig

#: Exit statuses.
OK = 0
WARNINGS = 1
ERRORS = 2


@dataclass(frozen=True)
class CheckResult:
    """What :func:`check_config` found: the exit status, the report's lines, and the
    same as a JSON document (``--json``)."""

    status: int
    lines: tuple[str, ...]
    document: Mapping[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + "\n"

    @property
    def json(self) -> str:
        return json.dumps(self.document, indent=2) + "\n"


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
        error = {"path": e.path, "reason": e.reason, "message": str(e)}
        doc = {"file": path, "status": "error", "exit_status": ERRORS, "error": error}
        return CheckResult(ERRORS, (f"{path}: config error: {e}",), doc)
    lines = describe(config)
    if config.warnings:
        status = WARNINGS if strict else OK
        verdict = "has warnings" + (" (--strict: failing)" if strict else "")
    else:
        status, verdict = OK, "is valid"
    doc = {
        "file": path,
        "status": "warnings" if config.warnings else "ok",
        "exit_status": status,
        **document(config),
    }
    return CheckResult(status, (f"{path}: config {verdict}", *lines), doc)


def document(config: GatewayConfig) -> dict[str, Any]:
    """:func:`describe` as data: aliases (strategy, hedge, deployments, fallbacks) and
    warnings. No secrets: the same fields as the text."""
    g = config.general
    aliases: dict[str, Any] = {}
    for alias, deployments in config.aliases.items():
        own = g.for_alias(alias)
        hedge = g.hedge_for(alias)
        aliases[alias] = {
            "routing_strategy": own.routing_strategy or g.routing_strategy,
            "hedge": None if hedge is None else asdict(hedge),
            "deployments": [_deployment_doc(d) for d in deployments],
            "fallbacks": [a for a in g.fallbacks.get(alias, g.default_fallbacks) if a != alias],
            "context_window_fallbacks": list(g.context_window_fallbacks.get(alias, ())),
        }
    return {
        "aliases": aliases,
        "health_check_interval": g.health_check_interval,
        "warnings": list(config.warnings),
    }


def _deployment_doc(d: Deployment) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": d.id,
        "provider": d.provider.prefix,
        "model": d.model,
        "api_base": d.api_base,
        "api_key_set": bool(d.api_key),
    }
    for name in ("weight", "rpm", "tpm", "max_parallel_requests", "timeout", "stream_timeout"):
        doc[name] = getattr(d, name)
    doc["health_check"] = None if d.health_check is None else asdict(d.health_check)
    doc["discover"] = d.discover
    return doc


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
