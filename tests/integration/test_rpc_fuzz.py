"""Fuzzing both gRPC APIs of real processes with malformed requests.

Every method of NodeService (a node daemon with no model it can load) and of
ControllerService (a controller with no nodes) gets raw bytes (random, or a
valid request truncated, bit-flipped, re-typed, nested past limits, oversized)
and well-formed requests with hostile values. Every answer must come within its
deadline with a status code the method allows: never UNKNOWN or INTERNAL (an
exception the server did not handle), and never a failure without a message.
Afterwards the server is alive and SERVING, its state is what the accepted
requests made it (a refused request changed nothing), and a normal request works.

EDGEFLEET_FUZZ_EXAMPLES scales the run (each service gets three times as many
cases: 6,000 each by default); EDGEFLEET_FUZZ_SEED repeats one. The counts of
status codes are printed per service and method.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgefleet.v1 import common_pb2, controller_pb2, controller_pb2_grpc, node_pb2, node_pb2_grpc
from tests.integration.controller_process import ControllerProcess, start_controller
from tests.integration.node_process import NodeProcess, start_node, unique_id
from tests.rpcfuzz import controller, node
from tests.rpcfuzz.runner import CHANNEL_OPTIONS, Api, Tally, fuzz, methods, plan

pytestmark = pytest.mark.slow

CASES = 3 * int(os.environ.get("EDGEFLEET_FUZZ_EXAMPLES", "2000"))
"""Per service."""
SEED = int(os.environ.get("EDGEFLEET_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
SERVING = health_pb2.HealthCheckResponse.SERVING
FAILED = common_pb2.MODEL_STATE_FAILED
UNCHANGED = node_pb2.ItemResult.ACTION_UNCHANGED


def run(
    connect: Callable[[], grpc.aio.Channel],
    api: Api,
    names: tuple[str, ...],
    alive: Callable[[], bool],
    capsys: pytest.CaptureFixture[str],
) -> Tally:
    """Fuzz one service; prints its counts; asserts every answer was right."""
    tally = Tally(api.service.full_name, SEED)
    cases = plan(api, random.Random(SEED), CASES, names)
    asyncio.run(fuzz(connect, api, cases, tally, alive=alive))
    with capsys.disabled():
        print(f"\n{tally.report()}")
    assert not tally.verdict(), tally.verdict()
    assert sorted(tally.by_method) == sorted(m.name for m in methods(api.service))
    return tally


async def serving(channel: grpc.aio.Channel, service: str) -> None:
    """The health check says SERVING."""
    answer = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=5
    )
    assert answer.status == SERVING


def plaintext(address: str) -> grpc.aio.Channel:
    """A channel that sends requests larger than the servers accept."""
    return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)


# -- the node ---------------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_the_node_api_answers_malformed_requests_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The one built-in alias points at a closed local port: no model on this node can load.
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        'models:\n  smollm2-135m: {runtime: openai, source: none, url: "http://127.0.0.1:9/v1"}\n'
    )
    node.hold_blob(tmp_path / "node")  # FetchBlob has one blob to serve
    with start_node(unique_id("fuzz"), tmp_path / "node", catalog=catalog) as daemon:
        api = node.NodeApi()
        # The node's own channel: as the controller talks to it (mutual TLS where it has a
        # certificate), so that requests get past its checks of the caller.
        run(daemon.aio_channel, api, node.NAMES, lambda: daemon.process.poll() is None, capsys)
        assert daemon.process.poll() is None, daemon.log()
        asyncio.run(node_state_is_intact(daemon, api))
        assert "unexpected error" not in "\n".join(daemon.process.lines), daemon.log()


async def node_state_is_intact(daemon: NodeProcess, api: node.NodeApi) -> None:
    """The node runs the last state it accepted, and still takes a normal one."""
    async with daemon.aio_channel() as channel:
        await serving(channel, api.service.full_name)
        stub = node_pb2_grpc.NodeServiceStub(channel)
        info = await stub.GetInfo(node_pb2.GetInfoRequest(), timeout=5)
        assert info.generation == api.generation, daemon.log()
        blob = stub.FetchBlob(node_pb2.FetchBlobRequest(sha256=node.BLOB_SHA256), timeout=10)
        assert b"".join([chunk.data async for chunk in blob]) == node.BLOB, daemon.log()
        if api.accepted is not None:
            assert info.controller_id == api.accepted.controller_id
            again = await stub.ApplyState(api.accepted, timeout=10)  # idempotent
            assert all(r.action == UNCHANGED for r in again.results), again
            watch = stub.WatchStatus(node_pb2.WatchStatusRequest(), timeout=5)
            status = await watch.read()
            watch.cancel()
            wanted = {m.alias for m in api.accepted.state.models}
            assert {m.alias for m in status.models} == wanted
        if api.generation < 2**64 - 1:
            fresh = node_pb2.ApplyStateRequest(
                generation=api.generation + 1,
                controller_id="after-fuzz",
                leader_term=node.LEADER_TERM,
                state=node_pb2.NodeDesiredState(
                    models=[common_pb2.ModelSpec(alias="after-fuzz")],
                    agents=[common_pb2.AgentSpec(name="after", model="after-fuzz")],
                ),
            )
            applied = await stub.ApplyState(fresh, timeout=10)
            assert applied.generation == api.generation + 1
            # The model fails at once (no catalog serves it); loading it again says so.
            load = stub.LoadModel(node_pb2.LoadModelRequest(alias="after-fuzz"), timeout=10)
            states = [p.state async for p in load]
            assert states[-1:] == [FAILED], states
        stale = node_pb2.ApplyStateRequest(
            generation=1, leader_term=node.LEADER_TERM, state=node_pb2.NodeDesiredState()
        )
        if api.generation > 1:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ApplyState(stale, timeout=5)
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        await routes_are_intact(stub, api)


async def routes_are_intact(stub: node_pb2_grpc.NodeServiceStub, api: node.NodeApi) -> None:
    """The node routes with the last table it accepted, again idempotently, and refuses an
    older one."""
    watch = stub.WatchStatus(node_pb2.WatchStatusRequest(), timeout=5)
    status = await watch.read()
    watch.cancel()
    assert status.routes_generation == api.routes_generation
    if api.routes is not None:
        # At the highest term: a term raised by a hostile request since must not refuse it.
        replay = node_pb2.ApplyRoutesRequest()
        replay.CopyFrom(api.routes)
        replay.leader_term = node.LEADER_TERM
        again = await stub.ApplyRoutes(replay, timeout=10)
        assert again.generation == api.routes_generation
    if api.routes_generation > 1:
        older = node_pb2.ApplyRoutesRequest(
            table=node_pb2.RoutingTable(generation=1), leader_term=node.LEADER_TERM
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ApplyRoutes(older, timeout=5)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION


# -- the controller ---------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_the_controller_api_answers_malformed_requests_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    process = start_controller(tmp_path / "controller")
    try:
        api = controller.ControllerApi()

        def alive() -> bool:
            return process.process.poll() is None

        run(lambda: plaintext(process.address), api, controller.NAMES, alive, capsys)
        assert alive(), process.log()
        asyncio.run(controller_state_is_intact(process, api))
        log = "\n".join(process.process.lines)
        assert "unexpected error" not in log, process.log()
    finally:
        process.close()


async def controller_state_is_intact(
    process: ControllerProcess, api: controller.ControllerApi
) -> None:
    """The controller stores the deployments the accepted requests left, and still
    takes a normal manifest."""
    async with plaintext(process.address) as channel:
        await serving(channel, "")
        stub = controller_pb2_grpc.ControllerServiceStub(channel)
        status = await stub.GetStatus(controller_pb2.GetStatusRequest(), timeout=10)
        stored = {d.name: d.revision.number for d in status.deployments}
        assert stored == api.deployments, process.log()
        marked = {n.id: n.mark for n in status.nodes if n.mark}
        assert marked == api.marks, process.log()
        document = {
            "deployment": {
                "type": "single-device",
                "name": "after-fuzz",
                "models": [{"alias": "after-model"}],
                "agents": [{"name": "after-agent", "model": "after-model"}],
            }
        }
        text = yaml.safe_dump(document)
        applied = await stub.Apply(
            controller_pb2.ApplyRequest(manifest=text, source="a.yaml"), timeout=10
        )
        assert applied.changed
        assert applied.revision.deployment == "after-fuzz"
        diff = await stub.Diff(controller_pb2.DiffRequest(manifest=text), timeout=10)
        assert (diff.current_revision, diff.manifest_diff) == (applied.revision.number, "")
        status = await stub.GetStatus(controller_pb2.GetStatusRequest(), timeout=10)
        assert {d.name for d in status.deployments} == {*api.deployments, "after-fuzz"}
