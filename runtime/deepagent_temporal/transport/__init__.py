"""Transport: the Redis path (Streams writer and reader, circuit breaker, replay window)
and the Temporal path (batches into the workflow's stream)."""

from deepagent_temporal.transport.redis_reader import RedisStreamReader
from deepagent_temporal.transport.redis_writer import RedisStreamBackend, RedisUnavailable

__all__ = ["RedisStreamBackend", "RedisStreamReader", "RedisUnavailable"]
