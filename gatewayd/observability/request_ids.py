"""Request ids: the client's ``x-request-id`` when it is sane, else a fresh one.

The id goes back on every response, upstream with every attempt, into the access
log line and onto the trace span. A client's id is kept only if it is short and made
of characters that are safe in a header, a log line and a label (no injection).
"""

from __future__ import annotations

import os
import random
import re

HEADER = b"x-request-id"
#: Longest client-supplied id kept.
MAX_LENGTH = 128
_SAFE = re.compile(rb"[A-Za-z0-9._:/+=@-]{1,%d}\Z" % MAX_LENGTH)


def request_id(supplied: bytes | None) -> str:
    """``supplied`` if it is a sane id, else a new random (UUID4) one."""
    if supplied is not None and _SAFE.match(supplied):
        return supplied.decode("ascii")
    return new_id()


#: Ids need to be unique, not secret: a PRNG seeded from the OS, not a system call
#: (``uuid.uuid4`` reads ``os.urandom``) and a UUID object per request.
_rng = random.Random()
os.register_at_fork(after_in_child=_rng.seed)
#: The version (4) and variant (10xx) bits of a random UUID.
_V4 = (0x4 << 76) | (0x8 << 60)
_V4_MASK = ~((0xF << 76) | (0xC << 60))


def new_id() -> str:
    """A random UUID (version 4) as text."""
    h = "%032x" % ((_rng.getrandbits(128) & _V4_MASK) | _V4)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
