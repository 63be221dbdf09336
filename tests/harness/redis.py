"""Session fixture: a real redis-server on loopback that a test may stop and restart."""

from __future__ import annotations

import pytest

from deepagent_temporal.dev.servers import RedisServer
from tests.harness._logs import report_on_failure


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory, request):
    server = RedisServer(log_dir=tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    report_on_failure(request.session.testsfailed > 0, [server.process])
    server.stop()


@pytest.fixture
def redis_up(redis_server) -> RedisServer:
    """The session's Redis, restarted first if an earlier test left it stopped."""
    if not redis_server.process.running:
        redis_server.start()
    return redis_server
