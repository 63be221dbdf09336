"""TokenStreamMerger: exactly-once, ordered delivery from shuffled / duplicated inputs."""

from __future__ import annotations

import asyncio
import random

import pytest

from deepagent_temporal.client.delivery import TokenStreamMerger


def run_events(task: str, attempt: int, llm_call: int, text_tokens: list[str], node: str = "model"):
    mid = f"msg-{task}-{attempt}-{llm_call}"
    base = {
        "node": node,
        "namespace": [],
        "task_id": task,
        "attempt": attempt,
        "llm_call": llm_call,
    }
    evs = [{**base, "type": "llm_start", "token": "", "message_id": None}]
    for i, t in enumerate(text_tokens):
        evs.append({**base, "type": "token", "token": t, "index": i, "message_id": mid})
    evs.append(
        {**base, "type": "llm_end", "token": "", "token_count": len(text_tokens), "message_id": mid}
    )
    return evs


def check(out: list[dict], expected: dict[tuple, str]) -> None:
    seqs = [e["seq"] for e in out]
    assert seqs == sorted(set(seqs)), "seq strictly increasing"
    assert seqs == list(range(1, len(out) + 1))
    got: dict[tuple, list[dict]] = {}
    for e in out:
        if e["type"] == "token":
            got.setdefault((e["task_id"], e["attempt"], e["llm_call"]), []).append(e)
    assert set(got) == set(expected)
    for key, text in expected.items():
        toks = got[key]
        assert [e["index"] for e in toks] == list(range(len(toks))), key
        assert "".join(e["token"] for e in toks) == text
    ends = [e for e in out if e["type"] == "llm_end"]
    for e in ends:  # llm_end after the call's last token
        last = max(
            x["seq"] for x in got.get((e["task_id"], e["attempt"], e["llm_call"]), [{"seq": 0}])
        )
        assert e["seq"] > last
    assert "redis_id" not in out[0] and "replay" not in out[0]


def feed(merger: TokenStreamMerger, events: list[dict]) -> list[dict]:
    out: list[dict] = []
    for e in events:
        out.extend(merger.push(e))
    return out


def test_in_order_single_path_is_identity_plus_seq():
    evs = run_events("t1", 1, 0, ["a", "b", "c"])
    m = TokenStreamMerger()
    out = feed(m, evs)
    assert [e["type"] for e in out] == ["llm_start", "token", "token", "token", "llm_end"]
    check(out, {("t1", 1, 0): "abc"})
    assert m.duplicates == 0


@pytest.mark.parametrize("seed", range(60))
def test_shuffled_and_duplicated_two_paths(seed: int):
    rnd = random.Random(seed)
    expected = {}
    all_events = []
    for task in ("a", "b"):
        for call in range(rnd.randint(1, 3)):
            toks = [f"{task}{call}.{i} " for i in range(rnd.randint(0, 40))]
            expected_key = (task, 1, call)
            if toks:
                expected[expected_key] = "".join(toks)
            all_events.extend(run_events(task, 1, call, toks))
    # path A (redis): an ordered prefix; path B (temporal): everything, shuffled in chunks
    cut = rnd.randint(0, len(all_events))
    redis = [dict(e, source="redis", redis_id=f"{i}-0") for i, e in enumerate(all_events[:cut])]
    temporal = [dict(e, source="temporal", replay=True) for e in all_events]
    rnd.shuffle(temporal)
    dupes = [dict(e) for e in rnd.sample(all_events, k=len(all_events) // 3)]
    stream = redis + temporal + dupes
    # interleave the paths randomly while keeping each path's own order
    merged: list[dict] = []
    paths = [list(redis), list(temporal), list(dupes)]
    while any(paths):
        p = rnd.choice([p for p in paths if p])
        merged.append(p.pop(0))
    assert len(merged) == len(stream)
    m = TokenStreamMerger()
    out = feed(m, merged)
    out.extend(m.push({"type": "complete"}))
    check(out, expected)
    assert out[-1]["type"] == "complete"
    assert m.gaps == 0 and m.waiting == 0
    n_tokens = sum(1 for e in all_events if e["type"] == "token")
    assert sum(1 for e in out if e["type"] == "token") == n_tokens


@pytest.mark.parametrize("seed", range(20))
def test_failover_prefix_on_redis_rest_via_replay(seed: int):
    """Redis carried 0..k (client read only part of it), the Temporal path replays everything."""
    rnd = random.Random(seed)
    toks = [f"t{i} " for i in range(50)]
    evs = run_events("act", 1, 0, toks)
    k = rnd.randint(0, len(evs))
    read = rnd.randint(0, k)
    m = TokenStreamMerger()
    out = feed(m, [dict(e, source="redis") for e in evs[:read]])
    out += feed(m, [dict(e, source="temporal") for e in evs])  # replay + rest
    out += feed(m, [dict(e, source="redis") for e in evs[read:k]])  # late Redis reads
    check(out, {("act", 1, 0): "".join(toks)})
    assert m.duplicates == k


def test_out_of_order_token_waits_for_gap():
    evs = run_events("t", 1, 0, ["a", "b", "c", "d"])
    m = TokenStreamMerger()
    assert [e["type"] for e in m.push(evs[0])] == ["llm_start"]
    assert m.push(evs[3]) == [] and m.push(evs[5]) == []  # index 2 and llm_end wait
    assert m.waiting == 2
    out = m.push(evs[1])
    assert [e.get("index") for e in out] == [0]
    out = m.push(evs[2])
    assert [e.get("index") for e in out] == [1, 2]
    out = m.push(evs[4])
    assert [(e["type"], e.get("index")) for e in out] == [("token", 3), ("llm_end", None)]


def test_reset_drops_failed_attempt_and_keeps_retry():
    a1 = run_events("act", 1, 0, ["Hel", "lo ", "wor"])[:3]  # start + 2 tokens, then crash
    reset = {"type": "reset", "task_id": "act", "node": "model", "attempt": 1, "token": ""}
    a2 = run_events("act", 2, 0, ["Hello", " world"])
    m = TokenStreamMerger()
    out = feed(m, a1)
    out += feed(m, [reset, reset])
    out += feed(m, a1)  # late duplicates of attempt 1 (e.g. a Temporal-path batch after reset)
    out += feed(m, [a1[2] | {"index": 5}])
    out += feed(m, a2)
    types = [e["type"] for e in out]
    assert types.count("reset") == 1
    after = out[types.index("reset") + 1 :]
    assert all(e["attempt"] == 2 for e in after)
    assert "".join(e["token"] for e in after if e["type"] == "token") == "Hello world"
    assert [e["seq"] for e in out] == list(range(1, len(out) + 1))


def test_reset_discards_buffered_tokens_of_failed_attempt():
    a1 = run_events("act", 1, 0, ["x", "y", "z"])
    m = TokenStreamMerger()
    feed(m, [a1[0], a1[3]])  # index 2 buffered behind a gap
    assert m.waiting == 1
    out = m.push({"type": "reset", "task_id": "act", "attempt": 1})
    assert [e["type"] for e in out] == ["reset"] and m.waiting == 0
    assert m.finish() == []


def test_gap_timeout_and_finish():
    now = [0.0]
    m = TokenStreamMerger(gap_timeout=1.0, clock=lambda: now[0])
    evs = run_events("t", 1, 0, ["a", "b", "c"])
    feed(m, [evs[0], evs[2], evs[3]])  # index 0 lost forever
    assert m.flush_stale() == []
    now[0] = 1.5
    out = m.flush_stale()
    assert [e.get("index") for e in out] == [1, 2]
    assert m.gaps == 1
    assert m.push(evs[1]) == []  # too late: already skipped, counted as duplicate
    m2 = TokenStreamMerger()
    feed(m2, [evs[0], evs[3], evs[4]])
    out = m2.push({"type": "complete"})
    assert [e["type"] for e in out] == ["token", "llm_end", "complete"]


def test_complete_delivered_once():
    m = TokenStreamMerger()
    assert len(m.push({"type": "complete"})) == 1
    assert m.push({"type": "complete", "source": "temporal"}) == []
    assert m.completed


async def test_amerge_two_async_sources():
    toks = [f"w{i} " for i in range(30)]
    evs = run_events("t", 1, 0, toks)

    async def redis_src():
        for e in evs[:20]:
            await asyncio.sleep(0)
            yield dict(e, source="redis")
        await asyncio.sleep(3600)  # Redis died: this path hangs

    async def temporal_src():
        await asyncio.sleep(0.01)
        for e in evs:
            yield dict(e, source="temporal")
        yield {"type": "complete", "source": "temporal"}

    m = TokenStreamMerger()
    out = [e async for e in m.amerge(redis_src(), temporal_src())]
    check(out[:-1], {("t", 1, 0): "".join(toks)})
    assert out[-1]["type"] == "complete"


async def test_amerge_propagates_source_errors():
    async def bad():
        yield {"type": "llm_start", "task_id": "t", "attempt": 1, "llm_call": 0}
        raise RuntimeError("boom")

    m = TokenStreamMerger()
    with pytest.raises(RuntimeError, match="boom"):
        async for _ in m.amerge(bad()):
            pass


def _record(task: str, attempt: int, llm_call: int, tokens: list[str], text: bool = True):
    record = {
        "type": "llm_record",
        "node": "model",
        "namespace": [],
        "task_id": task,
        "attempt": attempt,
        "llm_call": llm_call,
        "message_id": f"msg-{task}-{attempt}-{llm_call}",
        "token_count": len(tokens),
        "transport": "redis",
    }
    if text:
        record["text"] = "".join(tokens)
    return record


def test_a_durable_record_completes_a_call_whose_tokens_were_lost():
    toks = ["a", "b", "c", "d", "e"]
    evs = run_events("t", 1, 0, toks)
    m = TokenStreamMerger(gap_timeout=float("inf"))
    out = []
    for ev in evs[:3] + evs[4:5]:  # start, a, b, then d (c was lost): d waits in the gap
        out += m.push(ev)
    assert m.waiting == 1
    out += m.settle(_record("t", 1, 0, toks))
    snap = [e for e in out if e["type"] == "snapshot"]
    assert len(snap) == 1 and snap[0]["token"] == "cde" and snap[0]["index"] == 2
    assert snap[0]["snapshot"] is True and out[-1]["type"] == "llm_end"
    text = "".join(e["token"] for e in out if e["type"] in ("token", "snapshot"))
    assert text == "abcde" and m.waiting == 0
    # late tokens of the settled call are duplicates
    assert m.push(evs[5]) == [] and m.push(evs[-1]) == []


def test_a_record_of_a_whole_call_adds_nothing_but_its_end():
    toks = ["x", "y"]
    m = TokenStreamMerger()
    out = []
    for ev in run_events("t", 1, 0, toks)[:-1]:  # llm_end not read yet
        out += m.push(ev)
    settled = m.settle(_record("t", 1, 0, toks))
    assert [e["type"] for e in settled] == ["llm_end"]
    assert m.settle(_record("t", 1, 0, toks)) == []


def test_a_joiner_gets_a_call_it_never_saw_as_start_snapshot_end():
    out = TokenStreamMerger().settle(_record("t", 1, 3, ["he", "llo"]))
    assert [e["type"] for e in out] == ["llm_start", "snapshot", "llm_end"]
    assert out[1]["token"] == "hello" and out[1]["index"] == 0


def test_records_without_text_or_of_reset_attempts_do_not_settle():
    m = TokenStreamMerger()
    assert m.settle(_record("t", 1, 0, ["a"], text=False)) == []
    m.push({"type": "reset", "token": "", "task_id": "t", "attempt": 1, "node": "model"})
    assert m.settle(_record("t", 1, 0, ["a"])) == []
