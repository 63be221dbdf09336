"""SSE event ids: resume cursors of a run segment's merged stream.

An id says exactly what a client has received, so any gateway replica can continue the
stream after ``Last-Event-ID`` with exactly the rest:

- ``offset``: every workflow-stream item before it was consumed (graph, custom and run
  topics, Temporal-path token batches, durable call records);
- ``redis_id``: every Redis entry up to it was consumed;
- ``calls``: for each LLM call that is open (started, not ended) or that ended while
  the current input was being emitted: tokens delivered (``next_index``), characters
  delivered (for a later ``snapshot``) and whether its start / end were delivered.
  A call is named by a 48-bit hash of ``(task or node, attempt, llm_call)``;
- ``resets``: ``reset`` events delivered from an input the cursor does not count as
  consumed yet (rare: a worker died mid-call), so that re-reading it does not repeat them.

Calls of consumed inputs that are not in ``calls`` were delivered whole. Text form:
``1~<offset>~<redis id>~<calls>~<resets>~<flags>`` with calls ``hash:next:chars:flags``
joined by ``,``; ASCII without CR, LF or NUL, as an SSE ``id`` must be.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any

from deepagent_temporal.contract import dumps, loads

VERSION = "1"


class CursorError(ValueError):
    """A ``Last-Event-ID`` this gateway did not write (or of another version)."""


def call_hash(ev: dict[str, Any]) -> str:
    """48-bit name of an LLM call (the merger's identity of a call)."""
    scope = ev.get("task_id") or ev.get("node")
    key = f"{scope}|{int(ev.get('attempt') or 1)}|{ev.get('llm_call')}"
    return hashlib.blake2b(key.encode(), digest_size=6).hexdigest()


@dataclass
class CallProgress:
    next_index: int = 0
    chars: int = 0
    started: bool = False
    ended: bool = False


@dataclass
class Cursor:
    offset: int = 0
    redis_id: str = "0-0"
    calls: dict[str, CallProgress] = field(default_factory=dict)
    resets: list[tuple[Any, int]] = field(default_factory=list)
    #: token events were tracked (False: a stream without token modes)
    tokens: bool = True

    def encode(self) -> str:
        calls = ",".join(
            f"{h}:{p.next_index}:{p.chars}:{'s' if p.started else ''}{'e' if p.ended else ''}"
            for h, p in self.calls.items()
        )
        resets = ""
        if self.resets:
            resets = base64.urlsafe_b64encode(dumps([list(r) for r in self.resets])).decode()
        flags = "t" if self.tokens else ""
        return f"{VERSION}~{self.offset}~{self.redis_id}~{calls}~{resets}~{flags}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        parts = text.strip().split("~")
        if len(parts) != 6 or parts[0] != VERSION:
            raise CursorError(f"not an event id of this gateway: {text[:80]!r}")
        try:
            calls: dict[str, CallProgress] = {}
            for item in filter(None, parts[3].split(",")):
                h, n, c, flags = item.split(":")
                calls[h] = CallProgress(int(n), int(c), "s" in flags, "e" in flags)
            resets = []
            if parts[4]:
                resets = [(s, int(a)) for s, a in loads(base64.urlsafe_b64decode(parts[4]))]
            return cls(int(parts[1]), parts[2] or "0-0", calls, resets, "t" in parts[5])
        except (ValueError, TypeError) as exc:
            raise CursorError(f"malformed event id {text[:80]!r}: {exc}") from None
