"""Large payloads leave Event History (S3 on a real SeaweedFS); without storage, a state
over Temporal's payload limit fails the run with a message that names the fix.

The long loop's notes are 64 KB of text, so 40 steps carry 2.6 MB of state: more than
Temporal's 2 MB payload limit. The worker gets a small history budget so the run also
crosses continue-as-new boundaries (whose input is the state too).
"""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from langchain_core.messages import AIMessage
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError

from deepagent_temporal import RedisStreamBackend, TemporalDeepAgent
from deepagent_temporal import storage as payload_storage
from deepagent_temporal.client.agent import RunFailedError
from deepagent_temporal.contract import GET_STATE_QUERY, RunState, WorkerEnv
from deepagent_temporal.converter import data_converter
from deepagent_temporal.dev.histories import chain_histories
from deepagent_temporal.payloads import PayloadUnreadableError
from deepagent_temporal.s3 import CompactS3Driver

pytestmark = pytest.mark.integration

GRAPH = "deepagent_temporal.examples.shapes:long_loop"
BUDGET = {WorkerEnv.name("history_max_events"): "120"}
BIG = {"limit": 40, "note_bytes": 65536, "note_kind": "text"}


@pytest.fixture(scope="module")
def bucket(s3_server):
    return s3_server.create_bucket()


@pytest.fixture(scope="module")
def storage_env(s3_server, bucket):
    return s3_server.env(bucket)


@pytest.fixture(scope="module")
def worker_stored(start_worker, storage_env):
    return start_worker(GRAPH, "stored", redis=True, env={**BUDGET, **storage_env})


@pytest.fixture(scope="module")
def worker_plain(start_worker):
    return start_worker(GRAPH, "plain", redis=True, env=BUDGET)


def _storage_client(temporal_client: Client, env: dict[str, str]) -> Client:
    settings = payload_storage.PayloadStorage.from_env(WorkerEnv.from_env(env))
    converter = payload_storage.apply(data_converter, settings)
    return Client(**{**temporal_client.config(), "data_converter": converter})


def _agent(client, worker, redis_server):
    return TemporalDeepAgent(
        None,
        client,
        task_queue=worker.task_queue,
        graph_name=GRAPH,
        redis_stream_backend=RedisStreamBackend(redis_server.url),
    )


def _config():
    return {"configurable": {"thread_id": f"big-{uuid.uuid4().hex}"}, "recursion_limit": 10_000}


def _texts(events):
    seen = Counter(
        (e["message_id"], e["index"]) for e in events if e["type"] in ("token", "snapshot")
    )
    assert all(n == 1 for n in seen.values()), "a token was delivered twice"
    texts: dict[str, str] = {}
    for e in events:
        if e["type"] in ("token", "snapshot"):
            texts[e["message_id"]] = texts.get(e["message_id"], "") + e["token"]
    return texts


async def test_the_s3_client_tells_an_objects_age(storage_env):
    """What the driver's refresh rests on: ``HEAD``'s Last-Modified, on a real server."""
    settings = payload_storage.PayloadStorage.from_env(WorkerEnv.from_env(storage_env))
    s3 = settings.s3_client()
    bucket, key = settings.location.bucket, f"age-test/{uuid.uuid4().hex}"
    try:
        assert await s3.object_age(bucket=bucket, key=key) is None
        await s3.put_object(bucket=bucket, key=key, data=b"x")
        age = await s3.object_age(bucket=bucket, key=key)
        assert age is not None and -5 < age < 60, age  # whole seconds, two clocks
        assert await s3.object_exists(bucket=bucket, key=key)
    finally:
        await s3.aclose()


async def test_a_state_past_2mb_completes_with_payload_storage(
    temporal_client, redis_up, s3_server, bucket, storage_env, worker_stored
):
    client = _storage_client(temporal_client, storage_env)
    agent = _agent(client, worker_stored, redis_up)
    config = _config()
    events = [ev async for ev in agent.astream(BIG, config, stream_mode="tokens")]

    state = await agent.get_state(config)
    notes = state.values["notes"]
    assert state.values["steps"] == 40 and len(notes) == 40
    assert sum(len(n) for n in notes) > 2_500_000, "the state passed Temporal's 2 MB limit"
    ai = {m.id: m.content for m in state.values["messages"] if isinstance(m, AIMessage)}
    assert _texts(events) == ai and len(ai) == 40
    assert s3_server.objects(bucket) > 10, "large payloads went to the bucket"

    thread = config["configurable"]["thread_id"]
    runs = await chain_histories(client, thread)
    assert len(runs) >= 3, "the run continued as new"
    for run in runs:  # references only: every run's history stays small
        assert run.size_bytes < 1_000_000, run
    history = await client.get_workflow_handle(thread).fetch_history()
    references = [  # node inputs in the bucket: history holds the short reference only
        p
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        for p in e.activity_task_scheduled_event_attributes.input.payloads
        if p.external_payloads
    ]
    assert references, "node inputs went to the bucket"
    for ref in references:
        assert CompactS3Driver.NAME.encode() in ref.data, ref
        assert ref.ByteSize() < 300, ref

    # A client without the workers' storage settings is told which settings it lacks.
    plain = Client(**{**temporal_client.config(), "data_converter": data_converter})
    with pytest.raises(PayloadUnreadableError, match=WorkerEnv.name("payload_s3_bucket")):
        await _agent(plain, worker_stored, redis_up).get_state(config)


async def test_without_payload_storage_the_run_fails_naming_the_fix(
    temporal_client, redis_up, worker_plain
):
    agent = _agent(temporal_client, worker_plain, redis_up)
    config = _config()
    with pytest.raises(RunFailedError) as failed:
        async for _ in agent.astream(BIG, config, stream_mode="tokens"):
            pass
    message = str(failed.value)
    assert "Temporal's payload limit" in message
    assert WorkerEnv.name("payload_s3_bucket") in message
    assert "spec.payloadStorage" in message
    state = await agent.client.get_workflow_handle(config["configurable"]["thread_id"]).query(
        GET_STATE_QUERY, result_type=RunState
    )
    assert state.status == "failed" and "PayloadTooLargeError" in state.error
    assert 20 < state.step < 80, "it failed once the state neared the limit"


async def test_a_node_result_over_the_limit_fails_the_run_naming_the_fix(
    temporal_client, redis_up, worker_plain
):
    agent = _agent(temporal_client, worker_plain, redis_up)
    config = _config()
    with pytest.raises(WorkflowFailureError) as failed:
        await agent.ainvoke({"limit": 1, "note_bytes": 3_000_000, "note_kind": "text"}, config)
    root = failed.value.cause.cause  # ActivityError -> what the activity raised
    assert isinstance(root, ApplicationError) and root.type == "PayloadTooLargeError"
    assert root.non_retryable and WorkerEnv.name("payload_s3_bucket") in root.message


async def test_a_continue_as_new_input_over_the_limit_fails_the_run_naming_the_fix(
    start_worker, temporal_client, redis_up
):
    # 150 KB notes and a 3 MB history budget: the run continues as new every few steps,
    # carrying the state twice (checkpoint, values) and the stream's `updates` tail, so
    # a continuation's input passes 2 MB before a node's input (the state once) does
    worker = start_worker(
        GRAPH, "can-limit", redis=True, env={WorkerEnv.name("history_max_bytes"): "3000000"}
    )
    agent = _agent(temporal_client, worker, redis_up)
    config = _config()
    inp = {"limit": 12, "note_bytes": 150_000, "note_kind": "text"}
    with pytest.raises(RunFailedError) as failed:
        async for _ in agent.astream(inp, config, stream_mode=["tokens", "updates"]):
            pass
    message = str(failed.value)
    assert "continued run's input" in message and "Temporal's payload limit" in message
    assert WorkerEnv.name("payload_s3_bucket") in message
    handle = agent.client.get_workflow_handle(config["configurable"]["thread_id"])
    state = await handle.query(GET_STATE_QUERY, result_type=RunState)
    assert state.status == "failed" and state.step < 2 * 12
    history = await handle.fetch_history()
    assert history.events[-1].HasField("workflow_execution_failed_event_attributes")
