"""gatewayd's text observer writes exactly twistd's lines, and debug costs nothing off."""

from __future__ import annotations

import io
from typing import Any

from twisted.logger import ILogObserver, Logger, LogLevel, LogPublisher, textFileLogObserver
from twisted.python.failure import Failure
from zope.interface import provider

from gatewayd.observability import log as gwlog
from gatewayd.observability.log import emit_text, event_as_json, text_observer


def _collect(events: list[dict[str, Any]]) -> ILogObserver:
    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        events.append(event)

    result: ILogObserver = observe
    return result


def _both(emit: Any) -> tuple[str, str]:
    """What twistd's own text observer and gatewayd's write for the same events."""
    theirs, ours = io.StringIO(), io.StringIO()
    publisher = LogPublisher(textFileLogObserver(theirs), text_observer(ours))
    emit(Logger(namespace="gatewayd.access", observer=publisher))
    return theirs.getvalue(), ours.getvalue()


def test_template_events_are_written_as_twistd_writes_them() -> None:
    def emit(logger: Logger) -> None:
        logger.info("hello {who} {n:.2f}", who="world", n=1.5)
        logger.warn("two\nlines {x}", x="{not a field}")
        logger.failure("boom", Failure(ValueError("bad")))

    theirs, ours = _both(emit)
    assert "hello world 1.50" in ours and "Traceback" in ours
    assert ours == theirs


def test_prebuilt_text_is_written_as_its_template_would_be() -> None:
    def emit(logger: Logger) -> None:
        emit_text(logger, LogLevel.info, 'a "b {c}" d', {"status": 200})
        emit_text(logger, LogLevel.warn, "x\ny", {})

    theirs, ours = _both(emit)
    assert 'a "b {c}" d' in ours and "x\n\ty" in ours
    assert ours == theirs


def test_prebuilt_text_is_the_json_message_and_fields_stay() -> None:
    events: list[dict[str, Any]] = []
    emit_text(
        Logger(namespace="n", observer=_collect(events)), LogLevel.info, "the {line}", {"a": 1}
    )
    out = event_as_json(events[0])
    assert '"message": "the {line}"' in out and '"a": 1' in out and "_text" not in out


def test_debug_is_not_even_built_when_not_verbose() -> None:
    events: list[dict[str, Any]] = []
    logger = gwlog.GatewayLogger(namespace="n", observer=_collect(events))
    logger.debug("x {y}", y=1)
    assert events == []
    gwlog.set_verbose(True)
    try:
        logger.debug("x {y}", y=1)
    finally:
        gwlog.set_verbose(False)
    assert len(events) == 1 and events[0]["log_level"] is LogLevel.debug
