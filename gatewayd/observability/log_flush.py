"""The daemon's log stream, flushed once per reactor turn instead of once per line.

twistd's observers write and flush each event: a ``write`` system call per access
line, the largest cost of the access log under load. :class:`TurnFlushed` keeps what
one reactor turn logs and writes it in one go at the start of the next turn (a
``callLater(0)``), so a saturated gateway writes many lines per call. Outside the
reactor thread, before the reactor runs and after it stops, every write goes out at
once, as before (a line from another thread may so go out before lines the reactor
logged in the same turn); the reactor's shutdown flushes what is held. What a ``SIGKILL``
can lose is one turn's lines.
"""

from __future__ import annotations

from typing import IO, Any

from twisted.python import threadable

#: Held text beyond this is written at once (a burst of lines in one turn).
_MAX_HELD = 64 * 1024


class TurnFlushed:
    """``stream`` (a text file) whose writes within one reactor turn are written and
    flushed once, at the next turn."""

    def __init__(self, stream: IO[Any], reactor: Any = None) -> None:
        self._stream = stream
        self._reactor = reactor
        self._held: list[Any] = []
        self._size = 0
        self._pending: Any = None
        self._hooked = False

    def _clock(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def write(self, text: Any) -> None:
        reactor = self._clock()
        if not threadable.isInIOThread():
            # Another thread's line goes out now; what the reactor thread holds is its
            # own to write (one turn later at most).
            self._stream.write(text)
            self._stream.flush()
            return
        if not reactor.running:
            self._write_now()
            self._stream.write(text)
            self._stream.flush()
            return
        self._held.append(text)
        self._size += len(text)
        if self._size > _MAX_HELD:
            self._write_now()
        elif self._pending is None:
            if not self._hooked:
                self._hooked = True
                reactor.addSystemEventTrigger("after", "shutdown", self._write_now)
            self._pending = reactor.callLater(0, self._turn_ended)

    def flush(self) -> None:
        """Nothing now: the held lines are flushed at the next turn (observers call this
        after every line)."""

    def _turn_ended(self) -> None:
        self._pending = None
        self._write_now()

    def _write_now(self) -> None:
        if not self._held:
            return
        held, self._held, self._size = self._held, [], 0
        self._stream.write(held[0][:0].join(held))
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        # The rest of the file's interface (``encoding``, ``fileno`` ...) as it is.
        return getattr(self._stream, name)
