"""Compact wire form of Phase 1 token batches (what goes into Event History).

A batch of token events from one activity is mostly repetition: every token of an LLM
call carries the same node, namespace, task id, attempt, message id, source. A batch is
stored as an ordered list of segments; a run of consecutive tokens of one call becomes
one segment ``{"r": common_fields, "i": first_index, "t": [texts], "ts": first_ts,
"d": [ts deltas in 0.1 ms]}``; any other event (``llm_start``, ``llm_end``, ``reset``, a
token with tool-call chunks) is kept as ``{"e": event}``. About 10 bytes per token plus
the token text, instead of ~300.
"""

from __future__ import annotations

from typing import Any

VERSION = 1
_PER_TOKEN = ("token", "index", "ts", "type")


def _run_key(ev: dict[str, Any]) -> tuple[Any, ...] | None:
    if ev.get("type") != "token" or ev.get("tool_call_chunks") or "index" not in ev:
        return None
    return tuple(sorted((k, repr(v)) for k, v in ev.items() if k not in _PER_TOKEN))


def compact(events: list[dict[str, Any]]) -> dict[str, Any]:
    segments: list[dict[str, Any]] = []
    run: dict[str, Any] | None = None
    run_key: tuple[Any, ...] | None = None
    for ev in events:
        key = _run_key(ev)
        if (
            key is not None
            and run is not None
            and key == run_key
            and ev["index"] == run["i"] + len(run["t"])
        ):
            run["t"].append(ev.get("token") or "")
            run["d"].append(int(round((float(ev.get("ts") or 0) - run["ts"]) * 10000)))
            continue
        if key is not None:
            run = {
                "r": {k: v for k, v in ev.items() if k not in _PER_TOKEN},
                "i": ev["index"],
                "t": [ev.get("token") or ""],
                "ts": float(ev.get("ts") or 0),
                "d": [0],
            }
            run_key = key
            segments.append(run)
        else:
            run, run_key = None, None
            segments.append({"e": ev})
    return {"v": VERSION, "s": segments}


def expand(batch: Any) -> list[dict[str, Any]]:
    """Inverse of :func:`compact`; a plain list of events passes through."""
    if isinstance(batch, list):
        return [e for e in batch if isinstance(e, dict)]
    if not isinstance(batch, dict) or batch.get("v") != VERSION:
        return [batch] if isinstance(batch, dict) else []
    out: list[dict[str, Any]] = []
    for seg in batch.get("s") or []:
        if "e" in seg:
            out.append(seg["e"])
            continue
        base, first, ts0 = seg["r"], seg["i"], seg["ts"]
        for n, (text, delta) in enumerate(zip(seg["t"], seg["d"], strict=True)):
            out.append(
                {
                    "type": "token",
                    **base,
                    "token": text,
                    "index": first + n,
                    "ts": ts0 + delta / 10000,
                }
            )
    return out
