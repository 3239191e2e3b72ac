"""Writing to a TCP connection at once when nothing is queued on it.

Twisted's ``transport.write`` only queues: the bytes go out on the next reactor turn,
after an ``epoll_ctl`` to watch the socket for writability, a dispatch of that event
(through the logging context) and a second ``epoll_ctl`` to stop watching. For a
gateway that writes one small answer per request, that turn costs more than the
``send`` itself. :func:`write_through` sends right away when the connection's queue is
empty and leaves the rest, if the kernel took only part, to the transport as usual (so
flow control, producers and closing behave exactly as before).

Only plain TCP (``tcp.Server``, ``tcp.Client``) is written through; TLS (whose bytes
must pass the TLS layer), UNIX sockets (which may carry descriptors) and anything else
go through ``write``.
"""

from __future__ import annotations

from errno import ENOBUFS, EWOULDBLOCK
from typing import Any

from twisted.internet import main, tcp
from twisted.internet.abstract import FileDescriptor

_PLAIN_TCP = (tcp.Server, tcp.Client)
_SEND_LIMIT = FileDescriptor.SEND_LIMIT
#: What Twisted's writeSomeData reads as "nothing sent, try later".
_TRY_LATER = (EWOULDBLOCK, ENOBUFS)


def write_through(transport: Any, data: bytes) -> None:
    """Write ``data`` to ``transport``: sent now if its queue is empty, else queued."""
    if (
        type(transport) in _PLAIN_TCP
        and transport.TLS is False
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnected
        and not transport._tempDataBuffer
        and transport.offset == len(transport.dataBuffer)
        and data
    ):
        if len(data) <= _SEND_LIMIT:
            # writeSomeData's own steps without its two calls (a memoryview, untilConcludes):
            # this runs once per relayed frame.
            try:
                sent = transport.socket.send(data)
            except InterruptedError:
                sent = transport.writeSomeData(data)
            except OSError as e:
                sent = 0 if e.errno in _TRY_LATER else main.CONNECTION_LOST
        else:
            sent = transport.writeSomeData(data)
        if isinstance(sent, int) and sent >= 0:
            if sent == len(data):
                return
            data = data[sent:]
        # An error: queued, so the transport meets it on its own write and closes.
    transport.write(data)
