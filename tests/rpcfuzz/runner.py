"""Sending fuzz cases to a live gRPC server and judging every answer.

A case is one request, as bytes, to one method, with a deadline. It goes out on a
generic call (no serializers), so bytes that are no message at all reach the
server as they are. Every answer is checked: it came within the deadline, its
status code is one the API allows for that method (never UNKNOWN or INTERNAL,
which mean an exception the server did not handle), and a failure says why.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from tests.rpcfuzz import wire
from tests.rpcfuzz.values import Hostile

_C = grpc.StatusCode
DEFAULT_ALLOWED = frozenset(
    {
        _C.OK,
        _C.INVALID_ARGUMENT,
        _C.NOT_FOUND,
        _C.ALREADY_EXISTS,
        _C.FAILED_PRECONDITION,
        _C.OUT_OF_RANGE,
        _C.PERMISSION_DENIED,
        _C.UNAUTHENTICATED,
    }
)
"""What a method the API module does not list may answer: a deliberate refusal of a bad
request (never UNKNOWN, INTERNAL, UNIMPLEMENTED, or UNAVAILABLE without a documented
reason)."""
CLIENT_HANG = "CLIENT_HANG"
"""The code recorded when a call outlived its deadline on the client (grpc never ended it)."""
OPEN_UNTIL_DEADLINE = "DEADLINE_EXCEEDED(open follow stream)"
"""Counted for a follow stream that stayed open, as it should, until the case's deadline."""
HANG_GRACE_S = 10.0
CHANNEL_OPTIONS = [
    # Larger than the servers accept, so that oversized requests reach them.
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.enable_retries", 0),
]
"""For a plaintext channel of the fuzz's own."""


class Policy(enum.Enum):
    """How much of a response stream a case reads."""

    TO_END = "to the end"
    FIRST = "until its first message (it must come)"
    OPEN = "until its first message, or its deadline (a follow stream may stay silent)"


@dataclass(frozen=True, slots=True)
class Method:
    """One RPC of a service, as its descriptor declares it."""

    name: str
    path: str
    request: type[Message]
    client_streaming: bool
    server_streaming: bool


def methods(service: ServiceDescriptor) -> list[Method]:
    """Every method the service declares."""
    return [
        Method(
            m.name,
            f"/{service.full_name}/{m.name}",
            GetMessageClass(m.input_type),
            m.client_streaming,
            m.server_streaming,
        )
        for m in service.methods
    ]


@dataclass(frozen=True, slots=True)
class Case:
    """One request to send."""

    method: Method
    kind: str
    payload: bytes
    timeout: float
    policy: Policy = Policy.TO_END


@dataclass(frozen=True, slots=True)
class Outcome:
    """How the server answered a case."""

    case: Case
    code: str
    details: str
    elapsed: float
    responses: tuple[bytes, ...]


class Api(Protocol):
    """What the runner needs to know about one API."""

    service: ServiceDescriptor
    serial: frozenset[str]
    """Methods whose cases go one at a time, so their effects can be followed."""

    def allowed(self, method: str) -> frozenset[str]:
        """Status codes (by name) the method may answer with."""
        ...

    def policy(self, method: str, payload: bytes) -> Policy:
        """How far to read the method's response stream for this request."""
        ...

    def seed(self, method: str, hostile: Hostile) -> Message:
        """A valid request, for raw mutations to break."""
        ...

    def structured(self, method: str, hostile: Hostile, progress: float) -> Message | None:
        """A request with hostile values that mean something to this API (None: none)."""
        ...

    def tame(self, method: str, message: Message, hostile: Hostile, progress: float) -> Message:
        """A request filled with hostile values, with those that would spoil the rest of the
        run (such as the last possible generation) kept for its end."""
        ...

    def observe(self, outcome: Outcome) -> None:
        """Follow the effect of a serial case."""
        ...


# -- the cases -----------------------------------------------------------------------------

RAW_SHARE = 0.45
GENERIC_SHARE = 0.15
TIMEOUT_S = 5.0
LARGE_TIMEOUT_S = 30.0
OPEN_TIMEOUT_S = 0.5
LARGE_BYTES = 512 * 1024


def _make(
    api: Api, method: Method, rng: random.Random, names: Sequence[str], i: int, n: int
) -> Case:
    hostile = Hostile(rng, names)
    pick, progress = rng.random(), i / max(n, 1)
    if pick < RAW_SHARE or i == n // 2:
        seed = api.seed(method.name, hostile).SerializeToString()
        if i == n // 2:  # one case per method far larger than any real request
            kind, mutation = "oversized", wire.RARE_MUTATIONS["oversized"]
        else:
            kind = rng.choice(list(wire.MUTATIONS))
            mutation = wire.MUTATIONS[kind]
        payload, kind = mutation(rng, seed, method.request.DESCRIPTOR), f"raw:{kind}"
    else:
        message = None
        if pick >= RAW_SHARE + GENERIC_SHARE:
            message = api.structured(method.name, hostile, progress)
        kind = "structured" if message is not None else "hostile"
        if message is None:
            message = api.tame(method.name, hostile.fill(method.request()), hostile, progress)
        payload = message.SerializeToString()
    policy = api.policy(method.name, payload)
    timeout = TIMEOUT_S if len(payload) < LARGE_BYTES else LARGE_TIMEOUT_S
    if policy is Policy.OPEN:
        timeout = OPEN_TIMEOUT_S
    return Case(method, kind, payload, timeout, policy)


def plan(
    api: Api, rng: random.Random, total: int, names: Sequence[str]
) -> tuple[Iterator[Case], Iterator[Case]]:
    """(serial cases, parallel cases): `total` in all, spread evenly over the methods, made
    as they are taken (so that they can use what earlier cases did)."""
    declared = methods(api.service)
    serial: list[tuple[Method, int]] = []
    parallel: list[tuple[Method, int]] = []
    for index, method in enumerate(declared):
        count = total // len(declared) + (1 if index < total % len(declared) else 0)
        slots = serial if method.name in api.serial else parallel
        slots += [(method, i) for i in range(count)]
    rng.shuffle(serial)
    rng.shuffle(parallel)
    counts = collections.Counter(m.name for m, _ in serial + parallel)

    def cases(slots: list[tuple[Method, int]]) -> Iterator[Case]:
        for method, i in slots:
            yield _make(api, method, rng, names, i, counts[method.name])

    return cases(serial), cases(parallel)


# -- sending ---------------------------------------------------------------------------------


async def _requests(payload: bytes) -> AsyncIterator[bytes]:
    yield payload


async def _call(channel: grpc.aio.Channel, case: Case) -> list[bytes]:
    method, timeout = case.method, case.timeout
    if not method.server_streaming:
        if method.client_streaming:
            unary = channel.stream_unary(method.path)(_requests(case.payload), timeout=timeout)
        else:
            unary = channel.unary_unary(method.path)(case.payload, timeout=timeout)
        return [await unary]
    if method.client_streaming:
        stream = channel.stream_stream(method.path)(_requests(case.payload), timeout=timeout)
    else:
        stream = channel.unary_stream(method.path)(case.payload, timeout=timeout)
    responses: list[bytes] = []
    try:
        async for response in stream:
            responses.append(response)
            if case.policy is not Policy.TO_END:
                break
    finally:
        stream.cancel()
    return responses


async def send(channel: grpc.aio.Channel, case: Case) -> Outcome:
    """Send one case and record its answer (CLIENT_HANG if it never came)."""
    started = time.monotonic()
    responses: list[bytes] = []
    try:
        async with asyncio.timeout(case.timeout + HANG_GRACE_S):
            responses = await _call(channel, case)
        code, details = grpc.StatusCode.OK.name, ""
    except grpc.aio.AioRpcError as exc:
        code, details = exc.code().name, exc.details() or ""
    except TimeoutError:
        code, details = CLIENT_HANG, f"no answer {HANG_GRACE_S:.0f}s past the deadline"
    return Outcome(case, code, details, time.monotonic() - started, tuple(responses))


def problem(api: Api, outcome: Outcome) -> str | None:
    """What is wrong with an answer, or None."""
    case = outcome.case
    allowed = api.allowed(case.method.name)
    if case.policy is Policy.OPEN:
        allowed |= {grpc.StatusCode.DEADLINE_EXCEEDED.name}
    if outcome.code not in allowed:
        return f"status {outcome.code} is not one of {', '.join(sorted(allowed))}"
    if "metadata size exceeds" in outcome.details:
        return "the status message was too large for the client to receive"
    if outcome.code != "OK" and not outcome.details.strip():
        return f"status {outcome.code} without a message"
    if outcome.code == "OK" and case.policy is Policy.FIRST and not outcome.responses:
        return "the stream ended without its first message"
    return None


# -- the tally -------------------------------------------------------------------------------


@dataclass
class Tally:
    """The cases sent to one service, their answers, and what was wrong."""

    service: str
    seed: int
    codes: collections.Counter[str] = field(default_factory=collections.Counter)
    by_method: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )
    kinds: collections.Counter[str] = field(default_factory=collections.Counter)
    busy: collections.Counter[str] = field(default_factory=collections.Counter)
    """Seconds spent in calls, by method."""
    failures: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Wrong answers by kind (method, code, start of the message): how many, one in full."""
    seconds = 0.0

    @property
    def cases(self) -> int:
        """How many cases were sent."""
        return sum(self.codes.values())

    def add(self, outcome: Outcome, wrong: str | None) -> None:
        """Count one answer; keep the first few wrong ones in full."""
        case = outcome.case
        code = outcome.code
        if case.policy is Policy.OPEN and code == _C.DEADLINE_EXCEEDED.name:
            code = OPEN_UNTIL_DEADLINE
        self.codes[code] += 1
        self.by_method[case.method.name][code] += 1
        self.kinds[case.kind.split(":")[0]] += 1
        self.busy[case.method.name] += outcome.elapsed  # type: ignore[assignment]
        if wrong is None:
            return
        key = f"{case.method.name} {outcome.code}: {re.sub(r'[0-9]+', 'N', outcome.details[:60])}"
        count, example = self.failures.get(key, (0, ""))
        self.failures[key] = (
            count + 1,
            example
            or (
                f"{case.method.name} [{case.kind}, {len(case.payload)} bytes, "
                f"{outcome.elapsed:.2f}s of {case.timeout:.1f}s]: {wrong}; "
                f"details: {outcome.details[:300]!r}; request: {case.payload[:80].hex()}"
            ),
        )

    def report(self) -> str:
        """The counts, for people (and reports)."""
        lines = [
            f"{self.service}: {self.cases} cases in {self.seconds:.1f}s "
            f"(EDGEFLEET_FUZZ_SEED={self.seed}; {_counts(self.kinds)})",
            f"  status codes: {_counts(self.codes)}",
        ]
        lines += [
            f"  {name} ({self.busy[name]:.1f}s in calls): {_counts(codes)}"
            for name, codes in sorted(self.by_method.items())
        ]
        return "\n".join(lines)

    def verdict(self) -> str:
        """Empty when every answer was right; else the wrong ones."""
        if not self.failures:
            return ""
        failed = sum(count for count, _ in self.failures.values())
        kinds = sorted(self.failures.values(), reverse=True)
        return (
            f"{failed} of {self.cases} answers were wrong, {len(kinds)} kinds of them "
            f"(rerun with EDGEFLEET_FUZZ_SEED={self.seed}):\n"
            + "\n".join(f"{count} x {example}" for count, example in kinds[:30])
        )


def _counts(counter: collections.Counter[str]) -> str:
    return ", ".join(f"{key} {count}" for key, count in counter.most_common())


async def fuzz(
    connect: Callable[[], grpc.aio.Channel],
    api: Api,
    cases: tuple[Iterator[Case], Iterator[Case]],
    tally: Tally,
    *,
    workers: int = 6,
    alive: Callable[[], bool] = lambda: True,
) -> None:
    """Send every case (serial ones one at a time, the others `workers` at a time), check
    each answer, and stop early if the server dies."""
    serial, parallel = cases
    started = time.monotonic()
    async with connect() as channel:

        async def lane(source: Iterator[Case], observe: bool) -> None:
            for case in source:
                outcome = await send(channel, case)
                wrong = problem(api, outcome)
                tally.add(outcome, wrong)
                if observe and outcome.code == "OK":
                    api.observe(outcome)
                if not alive():
                    raise AssertionError(f"the server died after {case}")

        async with asyncio.TaskGroup() as group:
            group.create_task(lane(serial, observe=True))
            for _ in range(workers):
                group.create_task(lane(parallel, observe=False))
    tally.seconds = time.monotonic() - started
