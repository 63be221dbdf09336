"""What the reconciler remembers per DeepAgent, and the per-agent locks; both bounded.

* :class:`AgentLocks` - one lock per agent that exists only while a thread holds it or waits
  for it (reference counted), so a late event for a deleted agent cannot leak one, and
  forgetting an agent never drops a lock an in-flight reconcile holds.
* :class:`AgentState` - what the child watch has seen (and the children as last seen), the
  generations and status inputs of the children, the status last written, the child writes
  the API server refused (back-off).
  The reconciler drops it when the agent is deleted, when a reconcile finds the agent gone,
  and for every agent the periodic resync no longer lists.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
from collections.abc import Iterator
from typing import Any

from .model import SpecError

#: (namespace, name) of a DeepAgent
AgentKey = tuple[str, str]
#: (kind, name) of a child in the agent's namespace
ChildKey = tuple[str, str]
#: Child kinds the operator watches (Secrets never: that would need list on all of them).
WATCHED_KINDS = ("Deployment", "StatefulSet", "Service", "NetworkPolicy", "HorizontalPodAutoscaler")


class Cached:
    """An object as the cache keeps it: compact JSON without managedFields (the bulk of it,
    only needed right before a write, which reads the object again); a tenth of the parsed
    size. ``generation`` and ``resource_version`` stay readable without parsing."""

    __slots__ = ("_raw", "generation", "resource_version")

    def __init__(self, obj: Any) -> None:
        meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
        self._raw = json.dumps({**obj, "metadata": meta}, separators=(",", ":"))
        self.generation: int | None = meta.get("generation")
        self.resource_version: str | None = meta.get("resourceVersion")

    def load(self) -> dict[str, Any]:
        return json.loads(self._raw)

    def older_than(self, other: Cached) -> bool:
        """Whether this snapshot is older than ``other`` of the same object: a queued watch
        event must not replace what a later write returned. Resource versions are etcd
        revisions (decimal) on every API server we know; anything else counts as newer."""
        mine, theirs = self.resource_version or "", other.resource_version or ""
        return mine.isdigit() and theirs.isdigit() and int(mine) < int(theirs)


@dataclasses.dataclass
class Rejection:
    """A child manifest the API server refused: not written again before ``retry_at``
    (monotonic seconds) unless the manifest changes."""

    digest: str
    error: SpecError
    attempts: int
    retry_at: float


@dataclasses.dataclass
class AgentState:
    #: children that exist, as far as the child watch knows
    seen: set[ChildKey] = dataclasses.field(default_factory=set)
    #: metadata.generation of a child last written or seen by the operator
    generations: dict[ChildKey, int] = dataclasses.field(default_factory=dict)
    #: the fields of a Deployment / StatefulSet that the status depends on, last seen
    digests: dict[ChildKey, tuple[Any, ...]] = dataclasses.field(default_factory=dict)
    #: (uid, status) this process last wrote: fresher than any snapshot of the object
    written: tuple[Any, dict[str, Any]] | None = None
    #: child writes the API server refused (HTTP 400 / 422), for back-off
    rejections: dict[ChildKey, Rejection] = dataclasses.field(default_factory=dict)
    #: the watched children as last seen (watch event, write or read): a resync with nothing
    #: changed compares against these instead of reading every child again, and a status
    #: refresh computes from them
    children: dict[ChildKey, Cached] = dataclasses.field(default_factory=dict)
    #: the DeepAgent as its watch last saw it (a status refresh reads no DeepAgent when
    #: this is at least as new as what the last reconcile worked from)
    body: Cached | None = None
    #: metadata.generation of the DeepAgent the last reconcile worked from
    reconciled_generation: int | None = None

    def see_child(self, key: ChildKey, obj: Any) -> None:
        """Cache a watched child as an event shows it, unless a later write is cached."""
        snapshot, cached = Cached(obj), self.children.get(key)
        if cached is None or not snapshot.older_than(cached):
            self.children[key] = snapshot

    def forget_child(self, key: ChildKey) -> None:
        self.seen.discard(key)
        self.generations.pop(key, None)
        self.digests.pop(key, None)
        self.children.pop(key, None)

    def see_body(self, body: Any) -> None:
        """Cache the DeepAgent as a watch event shows it (newest first)."""
        snapshot = Cached(body)
        if self.body is None or not snapshot.older_than(self.body):
            self.body = snapshot

    def fresh_body(self) -> dict[str, Any] | None:
        """The cached DeepAgent, if it is at least as new as what the last reconcile
        worked from (a status refresh then needs no read)."""
        cached = self.body
        if cached is None or (cached.generation or 0) < (self.reconciled_generation or 0):
            return None
        return cached.load()


class AgentLocks:
    """Per-agent locks that exist only while in use."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        #: key -> [lock, number of threads holding or waiting for it]
        self._locks: dict[AgentKey, list[Any]] = {}

    @contextlib.contextmanager
    def hold(self, key: AgentKey) -> Iterator[None]:
        with self._guard:
            entry = self._locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[key]

    def busy(self, key: AgentKey) -> bool:
        """True while some thread holds or waits for the agent's lock."""
        with self._guard:
            return key in self._locks

    def __len__(self) -> int:
        with self._guard:
            return len(self._locks)


class AgentStates:
    """``AgentState`` per agent, created on first use."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._states: dict[AgentKey, AgentState] = {}

    def get(self, key: AgentKey) -> AgentState:
        with self._guard:
            state = self._states.get(key)
            if state is None:
                state = self._states[key] = AgentState()
            return state

    def peek(self, key: AgentKey) -> AgentState | None:
        with self._guard:
            return self._states.get(key)

    def drop(self, key: AgentKey) -> None:
        with self._guard:
            self._states.pop(key, None)

    def keys(self) -> list[AgentKey]:
        with self._guard:
            return list(self._states)

    def __len__(self) -> int:
        with self._guard:
            return len(self._states)
