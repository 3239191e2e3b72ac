"""SSE framing: events split across reads, merged in one read, every line ending."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gatewayd.upstream.sse import EventTooLarge, SSEFramer, event_data, is_done, split_block

EVENTS = [
    b'data: {"a":1}\n\n',
    b": keepalive comment\n\n",
    b'event: message\ndata: {"b":2}\n\n',
    b"data: line one\ndata: line two\n\n",
    b"data: [DONE]\n\n",
]
STREAM = b"".join(EVENTS)


def feed_all(framer: SSEFramer, pieces: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for p in pieces:
        out += framer.feed(p)
    return out


def test_whole_stream_in_one_read() -> None:
    assert SSEFramer().feed(STREAM) == EVENTS


def test_byte_by_byte() -> None:
    pieces = [STREAM[i : i + 1] for i in range(len(STREAM))]
    assert feed_all(SSEFramer(), pieces) == EVENTS


def test_an_event_is_not_released_before_its_blank_line() -> None:
    f = SSEFramer()
    assert f.feed(b'data: {"a":1}\n') == []
    assert f.feed(b"\n") == [b'data: {"a":1}\n\n']


def test_crlf_and_cr_line_endings_normalised() -> None:
    crlf = STREAM.replace(b"\n", b"\r\n")
    assert SSEFramer().feed(crlf) == EVENTS
    cr = STREAM.replace(b"\n", b"\r")
    assert SSEFramer().feed(cr) == EVENTS


def test_crlf_split_between_reads() -> None:
    f = SSEFramer()
    # A blank line ended by a lone \r is complete; the \n that follows is its other half.
    assert f.feed(b"data: x\r\n\r") == [b"data: x\n\n"]
    assert f.feed(b"\ndata: y\r") == []
    assert f.feed(b"\n\r\n") == [b"data: y\n\n"]


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=20), st.booleans())
def test_any_split_gives_the_same_events(cuts: list[int], crlf: bool) -> None:
    data = STREAM.replace(b"\n", b"\r\n") if crlf else STREAM
    points = sorted({min(c, len(data)) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert feed_all(SSEFramer(), pieces) == EVENTS


def test_event_data_and_done() -> None:
    assert event_data(b"event: message\ndata: {}\n\n") == b"{}"
    assert event_data(b"data: a\ndata: b\n\n") == b"a\nb"
    assert event_data(b": comment\n\n") is None
    assert is_done(b"data: [DONE]\n\n")
    assert not is_done(b'data: {"text": "[DONE]"}\n\n')


@given(
    st.lists(st.sampled_from([*EVENTS, b"\n", b"\n\n", b"\r\n"]), max_size=12),
    st.lists(st.integers(min_value=0, max_value=400), max_size=12),
    st.integers(min_value=8, max_value=64),
)
def test_feed_block_is_the_join_of_feed(parts: list[bytes], cuts: list[int], bound: int) -> None:
    """The block reader gives the bytes the event reader gives, joined, and fails the
    same way past the bound: stray blank lines and all, whatever the reads."""
    data = b"".join(parts)
    points = sorted({min(c, len(data)) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    by_event, by_block = SSEFramer(bound), SSEFramer(bound)
    for p in pieces:
        try:
            want: bytes | type[Exception] = b"".join(by_event.feed(p))
        except EventTooLarge:
            want = EventTooLarge
        try:
            got: bytes | type[Exception] = by_block.feed_block(p)
        except EventTooLarge:
            got = EventTooLarge
        assert got == want
        if want is EventTooLarge:
            return
        assert by_block.pending == by_event.pending


def test_split_block_gives_the_events_back() -> None:
    block = SSEFramer().feed_block(STREAM)
    assert block == STREAM and split_block(block) == EVENTS
