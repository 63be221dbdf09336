"""Token batches of the Temporal path are compacted for Event History and expand back exactly."""

from __future__ import annotations

import json

from deepagent_temporal.transport.temporal import compact, expand


def _events():
    base = {
        "node": "model",
        "namespace": [],
        "task_id": "7",
        "llm_call": 0,
        "attempt": 1,
        "message_id": "lc_run--0198c0de-1111-2222-3333-444455556666",
        "source": "temporal",
    }
    evs = [{"type": "llm_start", "token": "", **base, "ts": 1.0}]
    evs += [
        {"type": "token", "token": f" w{i}", "index": i, **base, "ts": 1.0 + i * 0.0042}
        for i in range(50)
    ]
    evs.append(
        {
            "type": "token",
            "token": "",
            "index": 50,
            **base,
            "ts": 1.3,
            "tool_call_chunks": [{"name": "add", "args": "{", "id": "c", "index": 0}],
        }
    )
    evs.append({"type": "llm_end", "token": "", **base, "token_count": 51, "ts": 1.31})
    evs.append({"type": "token", "token": "x", "index": 0, **{**base, "llm_call": 1}, "ts": 2.0})
    return evs


def test_round_trip_keeps_order_and_fields():
    evs = _events()
    back = expand(json.loads(json.dumps(compact(evs))))
    assert len(back) == len(evs)
    for a, b in zip(evs, back, strict=True):
        assert {k: v for k, v in a.items() if k != "ts"} == {
            k: v for k, v in b.items() if k != "ts"
        }
        assert abs(a["ts"] - b["ts"]) < 1e-4


def test_compact_is_much_smaller():
    evs = _events()
    plain = len(json.dumps(evs))
    small = len(json.dumps(compact(evs)))
    assert small * 4 < plain, (small, plain)
    text = sum(len(e["token"]) for e in evs)
    assert small - text < 2000  # ~12 bytes per token + the verbatim start/end events


def test_plain_lists_pass_through():
    evs = _events()[:3]
    assert expand(evs) == evs
