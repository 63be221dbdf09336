"""Event ids: what a cursor says survives its text form; foreign ids are refused."""

from __future__ import annotations

import pytest

from deepagent_temporal.gateway.cursor import CallProgress, Cursor, CursorError, call_hash
from deepagent_temporal.gateway.sse import frame


def test_cursor_round_trip():
    ev = {"task_id": "t-1", "attempt": 2, "llm_call": 0}
    cur = Cursor(
        offset=17,
        redis_id="1796070036202-3",
        calls={call_hash(ev): CallProgress(5, 26, True, False)},
        resets=[("t-1", 1)],
    )
    text = cur.encode()
    assert "\n" not in text and "\r" not in text
    assert Cursor.decode(text) == cur
    assert call_hash(ev) != call_hash({**ev, "attempt": 3})


@pytest.mark.parametrize("bad", ["1700000000000-0", "2~1~0-0~~~t", "1~x~0-0~~~t", "1~1~0-0~zz~~t"])
def test_foreign_ids_are_refused(bad):
    with pytest.raises(CursorError):
        Cursor.decode(bad)


def test_frame_matches_the_reference_server_bytes():
    # langgraph_api.sse.json_to_sse: CRLF separators, id after data, blank line
    assert frame("metadata", {"run_id": "r", "attempt": 1}, "1~0~0-0~~~t") == (
        b'event: metadata\r\ndata: {"run_id":"r","attempt":1}\r\nid: 1~0~0-0~~~t\r\n\r\n'
    )
    assert frame("end", None) == b"event: end\r\ndata: null\r\n\r\n"
