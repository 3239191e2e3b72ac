"""The listening endpoint from the command line: ``--host``/``--port`` as a Twisted
endpoint string, and the listen(2) backlog added to one."""

from __future__ import annotations

import re


def listen_description(host: str, port: int) -> str:
    """A Twisted endpoint string for ``--host``/``--port``."""
    return f"tcp:port={port}:interface={host.replace(':', chr(92) + ':')}"


#: Endpoint types whose listen(2) backlog is ours to set (``systemd:`` sockets come set).
_BACKLOG_TYPES = ("tcp", "tcp6", "ssl", "unix")


def with_backlog(listen: str, backlog: int) -> str:
    """``listen`` with ``backlog=N`` added, unless it sets one or its type has none.

    Twisted's default backlog is 50: a burst of a few hundred connections overflows the
    accept queue and the kernel drops SYNs, which clients retry only after a second."""
    kind = listen.split(":", 1)[0].strip().lower()
    if kind not in _BACKLOG_TYPES or re.search(r"(^|:)backlog=", listen):
        return listen
    return f"{listen}:backlog={backlog}"
