"""providers/wirejson.json_text: the same text as json.loads's encoding detection."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from gatewayd.upstream.wirejson import json_text

_ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"]


def _detected(data: bytes) -> str | type[Exception]:
    try:
        return data.decode(json.detect_encoding(data), "surrogatepass")
    except UnicodeDecodeError:
        return UnicodeDecodeError


def _ours(data: bytes) -> str | type[Exception]:
    try:
        return json_text(data)
    except UnicodeDecodeError:
        return UnicodeDecodeError


@given(st.binary(max_size=12))
def test_any_bytes_decode_as_detection_does(data: bytes) -> None:
    assert _ours(data) == _detected(data)
    assert _ours(b"{" + data) == _detected(b"{" + data)


@given(
    st.sampled_from(_ENCODINGS),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)
def test_a_json_object_in_any_encoding_json_reads(encoding: str, obj: dict[str, str]) -> None:
    data = json.dumps(obj, ensure_ascii=False).encode(encoding)
    assert json.loads(json_text(data)) == json.loads(data) == obj
