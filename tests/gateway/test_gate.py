"""The Redis gate (``gateway/gate.py``) alone: what waits, for what, and what releases it."""

from __future__ import annotations

from deepagent_temporal.gateway.gate import RedisGate


def ev(kind: str, call: int = 0, **extra):
    return {"type": kind, "task_id": "t1", "llm_call": call, "attempt": 1, **extra}


def test_a_new_call_waits_for_the_temporal_path_up_to_the_asked_offset():
    gate = RedisGate(lambda e: True)
    gate.add("1-0", [ev("llm_start"), ev("token", index=0)])
    gate.add("2-0", [ev("token", index=1)])
    assert gate.ready(consumed=3) == ([], True)  # ask the workflow its offset
    assert gate.ready(consumed=3) == ([], False)  # still asking: nothing goes
    gate.answer(5)
    assert gate.ready(consumed=4) == ([], False)  # items 4 not read yet
    out, ask = gate.ready(consumed=5)
    assert [e[0] for e in out] == ["1-0", "2-0"] and not ask
    # the same call again never waits
    gate.add("3-0", [ev("token", index=2), ev("llm_end")])
    assert [e[0] for e in gate.ready(consumed=5)[0]] == ["3-0"]


def test_calls_seen_elsewhere_and_old_segments_pass():
    gate = RedisGate(lambda e: int(e.get("segment") or 0) >= 1)
    gate.know(ev("llm_start", call=0))  # came on the Temporal path
    gate.add("1-0", [ev("llm_start", call=0)])
    gate.add("2-0", [ev("llm_start", call=1)])  # segment 0: an earlier run segment
    assert [e[0] for e in gate.ready(consumed=0)[0]] == ["1-0", "2-0"]


def test_the_calls_own_record_releases_the_wait():
    gate = RedisGate(lambda e: True)
    gate.add("1-0", [ev("llm_start"), ev("token", index=0)])
    assert gate.ready(consumed=0)[1]
    gate.answer(9)
    gate.release_for([ev("llm_record", call=7)])  # another call's record: still waits
    assert gate.ready(consumed=2) == ([], False)
    gate.release_for([ev("llm_record")])
    assert [e[0] for e in gate.ready(consumed=2)[0]] == ["1-0"]


def test_no_answer_releases_and_drain_gives_everything():
    gate = RedisGate(lambda e: True)
    gate.add("1-0", [ev("llm_start")])
    assert gate.ready(consumed=0)[1]
    gate.answer(-1)  # the query failed
    assert [e[0] for e in gate.ready(consumed=0)[0]] == ["1-0"]
    gate.add("2-0", [ev("llm_start", call=1)])
    assert gate.ready(consumed=0)[1]
    assert [e[0] for e in gate.drain()] == ["2-0"] and not gate.backlog


def test_a_stamped_call_waits_for_its_offset_without_asking():
    """Workers stamp ``llm_start`` with the workflow stream's length when the node was
    scheduled: the gate waits for that, and makes no request."""
    gate = RedisGate(lambda e: True)
    gate.add("1-0", [ev("llm_start", stream_offset=4), ev("token", index=0)])
    gate.add("2-0", [ev("token", index=1)])
    assert gate.ready(consumed=3) == ([], False)  # item 3 not read yet; no query
    out, ask = gate.ready(consumed=4)
    assert [e[0] for e in out] == ["1-0", "2-0"] and not ask
    # already read that far: it goes at once
    gate.add("3-0", [ev("llm_start", call=1, stream_offset=2)])
    assert [e[0] for e in gate.ready(consumed=4)[0]] == ["3-0"]
    # its own record still releases a wait
    gate.add("4-0", [ev("llm_start", call=2, stream_offset=9)])
    assert gate.ready(consumed=4) == ([], False)
    gate.release_for([ev("llm_record", call=2)])
    assert [e[0] for e in gate.ready(consumed=4)[0]] == ["4-0"]
    # an offset that is not a number is no stamp: the gate asks
    gate.add("5-0", [ev("llm_start", call=3, stream_offset="9")])
    assert gate.ready(consumed=4) == ([], True)
