"""Request ids: the client's ``x-request-id`` when it is sane, else a fresh one.

The id goes back on every response, upstream with every attempt, into the access
log line and onto the trace span. A client's id is kept only if it is short and made
of characters that are safe in a header, a log line and a label (no injection).
"""

from __future__ import annotations

import re
import uuid

HEADER = b"x-request-id"
#: Longest client-supplied id kept.
MAX_LENGTH = 128
_SAFE = re.compile(rb"[A-Za-z0-9._:/+=@-]{1,%d}\Z" % MAX_LENGTH)


def request_id(supplied: bytes | None) -> str:
    """``supplied`` if it is a sane id, else a new random (UUID4) one."""
    if supplied is not None and _SAFE.match(supplied):
        return supplied.decode("ascii")
    return str(uuid.uuid4())
