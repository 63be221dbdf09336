"""Circuit breaker of the Redis path: when Redis fails, new LLM calls take the Temporal path."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from deepagent_temporal import metrics

logger = logging.getLogger(__name__)


class CircuitBreaker:
    """closed -> (failure) -> open -> (cooldown) -> half_open probe -> closed | open.

    ``generation`` counts openings: an event written in an earlier generation may have
    been lost with the Redis that failed since (see :class:`~.replay.ReplayWindow`).
    """

    def __init__(
        self,
        cooldown: float = 1.0,
        max_cooldown: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_cooldown = cooldown
        self.cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.clock = clock
        self.state = "closed"
        self.opened_at = 0.0
        self.generation = 0
        self.failures = 0

    def allow(self) -> bool:
        return self.state == "closed"

    def record_failure(self) -> None:
        self.failures += 1
        if self.state == "half_open":
            self.cooldown = min(self.cooldown * 2, self.max_cooldown)
        if self.state == "closed":
            self.generation += 1
        self.state = "open"
        self.opened_at = self.clock()
        metrics.CIRCUIT_STATE.set(1)

    def record_success(self) -> None:
        if self.state != "closed":
            logger.info("Redis circuit closed: new LLM calls stream through Redis again")
        self.state = "closed"
        self.cooldown = self.base_cooldown
        metrics.CIRCUIT_STATE.set(0)


__all__ = ["CircuitBreaker"]
