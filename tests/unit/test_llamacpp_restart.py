"""When the llama.cpp runtime restarts a model's server: the backoff and the failure window.

Times are passed in (monotonic seconds), so nothing here waits.
"""

from __future__ import annotations

from pathlib import Path

from node_agent.runtimes.llamacpp_served import ServedModel
from node_agent.runtimes.llamacpp_server import ServerProcess
from node_agent.runtimes.llamacpp_supervision import (
    FAILURE_WINDOW_S,
    FAILURES_BEFORE_FAILED,
    next_restart,
)


def served() -> ServedModel:
    gguf = Path("/models/model.gguf")
    server = ServerProcess("model", gguf, port=8081, threads=1, context=512)  # never started
    return ServedModel("model", str(gguf), gguf, server)


def test_delays_double_then_the_model_fails_and_retries_every_30s() -> None:
    model = served()
    restarts = [next_restart(model, now=float(second)) for second in range(7)]
    assert restarts == [(0.5, 1), (1.0, 2), (2.0, 3), (4.0, 4), (30.0, 5), (30.0, 6), (30.0, 7)]
    assert FAILURES_BEFORE_FAILED == 5, "the fifth failure in the window marks the model failed"


def test_a_server_that_answers_again_starts_the_delays_over() -> None:
    model = served()
    for second in range(3):
        next_restart(model, now=float(second))
    model.answered()
    assert next_restart(model, now=10.0) == (0.5, 4)
    assert next_restart(model, now=11.0) == (30.0, 5), "the window still counts every failure"


def test_only_failures_within_the_window_count_towards_failed() -> None:
    model = served()
    spread = FAILURE_WINDOW_S / 2 + 1  # at most two failures in any window
    counts = [next_restart(model, now=i * spread)[1] for i in range(10)]
    assert counts == [1] + [2] * 9
    later = 9 * spread + FAILURE_WINDOW_S + 1
    assert next_restart(model, now=later)[1] == 1
