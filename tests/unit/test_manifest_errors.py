"""Each rule of the manifest language, with the line and column it reports."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import pytest

from orchestrator.manifest import Diagnostic, ManifestError, load_text


def at(text: str, needle: str, nth: int = 0) -> tuple[int, int]:
    """Line and column (from 1) where the nth occurrence of `needle` starts."""
    index = -1
    for _ in range(nth + 1):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


@dataclass
class Case:
    id: str
    yaml: str
    needle: str  # where the error must point
    path: str
    message: str
    hint: str | None = None
    nth: int = 0


SINGLE = """\
deployment:
  type: single-device
  models:
    - alias: "phi-4-mini"
      primary: true
  agents:
    - name: "primary-agent"
      model: "phi-4-mini"
      tools: ["database"]
"""

DISTRIBUTED = """\
deployment:
  type: distributed-edge
  nodes:
    - id: "edge-1"
      agents: ["customer-service"]
      models: ["phi-4-mini"]
    - id: "edge-2"
      agents: ["technical-support"]
      models: ["qwen2.5-coder-0.5b"]
  coordination:
    load_balancing: true
    failover: automatic
"""

CASES = [
    Case(
        "typo-key",
        SINGLE.replace("  agents:", "  agnets:"),
        "agnets",
        "deployment.agnets",
        "unknown key `agnets`",
        "did you mean `agents`?",
    ),
    Case(
        "undefined-model",
        SINGLE.replace('model: "phi-4-mini"', 'model: "phi-4-mni"'),
        '"phi-4-mni"',
        "deployment.agents[0].model",
        "uses model `phi-4-mni`, which no model declares",
        "did you mean `phi-4-mini`?",
    ),
    Case(
        "bad-type",
        SINGLE.replace("single-device", "single_device"),
        "single_device",
        "deployment.type",
        "unknown deployment type `single_device`",
        "allowed: distributed-edge, single-device",
    ),
    Case(
        "missing-type",
        SINGLE.replace("  type: single-device\n", ""),
        "models",
        "deployment",
        "missing `type`",
        "allowed: single-device, distributed-edge",
    ),
    Case(
        "duplicate-node-id",
        DISTRIBUTED.replace('id: "edge-2"', 'id: "edge-1"'),
        '"edge-1"',
        "deployment.nodes[1].id",
        "duplicate node id `edge-1` (first declared at line 4)",
        "must be unique",
        nth=1,
    ),
    Case(
        "bad-failover",
        DISTRIBUTED.replace("failover: automatic", "failover: automatc"),
        "automatc",
        "deployment.coordination.failover",
        "`automatc` is not allowed here",
        "did you mean `automatic`? allowed: automatic, manual, none",
    ),
    Case(
        "bad-strategy",
        DISTRIBUTED.replace("load_balancing: true", "load_balancing: fastest"),
        "fastest",
        "deployment.coordination.load_balancing",
        "`fastest` is not allowed here",
        "peak-ewma",
    ),
    Case(
        "duplicate-yaml-key",
        SINGLE.replace("      primary: true\n", "      primary: true\n      primary: false\n"),
        "primary",
        "deployment.models[0].primary",
        "duplicate key `primary` (first written at line 5)",
        "once per mapping",
        nth=1,
    ),
    Case(
        "unknown-tool",
        SINGLE.replace('["database"]', '["database", "calender"]'),
        '"calender"',
        "deployment.agents[0].tools[1]",
        "unknown tool `calender`",
        "did you mean `calendar`?",
    ),
    Case(
        "duplicate-agent",
        SINGLE + '    - name: "primary-agent"\n      model: "phi-4-mini"\n',
        '"primary-agent"',
        "deployment.agents[1].name",
        "duplicate agent name `primary-agent`",
        nth=1,
    ),
    Case(
        "duplicate-alias",
        SINGLE.replace("  agents:", '    - alias: "phi-4-mini"\n  agents:'),
        '"phi-4-mini"',
        "deployment.models[1].alias",
        "duplicate model alias `phi-4-mini`",
        nth=1,
    ),
    Case(
        "agent-on-node-without-its-model",
        DISTRIBUTED + '  agents:\n    - name: "technical-support"\n      model: "phi-4-mini"\n',
        '"technical-support"',
        "deployment.nodes[1].agents[0]",
        "needs model `phi-4-mini`, which node `edge-2` does not load",
        "add `phi-4-mini` to nodes[1].models",
    ),
    Case(
        "ambiguous-model-on-node",
        DISTRIBUTED.replace('models: ["phi-4-mini"]', 'models: ["phi-4-mini", "smol"]'),
        '"customer-service"',
        "deployment.nodes[0].agents[0]",
        "cannot tell which model agent `customer-service` uses on node `edge-1`",
        "declare `customer-service` under deployment.agents",
    ),
    Case(
        "replicas-beyond-hosts",
        DISTRIBUTED + '  agents:\n    - name: "customer-service"\n      model: "phi-4-mini"\n'
        "      replicas: 3\n",
        "3",
        "deployment.agents[0].replicas",
        "asks for 3 replicas but only 1 node(s) can host it (edge-1)",
        "lower replicas",
        nth=0,
    ),
    Case(
        "replicas-single-device",
        SINGLE + "      replicas: 2\n",
        "2\n",
        "deployment.agents[0].replicas",
        "single-device deployment has one node",
    ),
    Case(
        "wrong-type",
        SINGLE.replace("primary: true", "primary: maybe"),
        "maybe",
        "deployment.models[0].primary",
        "expected true or false, got a string",
    ),
    Case(
        "yaml-1.1-yes-is-not-a-bool",
        SINGLE.replace("primary: true", "primary: yes"),
        "yes",
        "deployment.models[0].primary",
        "expected true or false, got a string",
    ),
    Case(
        "bad-size",
        SINGLE.replace("primary: true", "primary: true\n      memory: 3 gigs"),
        "3 gigs",
        "deployment.models[0].memory",
        "`3 gigs` is not a size",
    ),
    Case(
        "bad-name",
        SINGLE.replace('"primary-agent"', '"primary agent"'),
        '"primary agent"',
        "deployment.agents[0].name",
        "is not a valid name",
    ),
    Case(
        "timeouts-out-of-order",
        DISTRIBUTED.replace(
            "failover: automatic", "failover: automatic\n    failure_timeout: 500ms"
        ),
        "500ms",
        "deployment.coordination.failure_timeout",
        "failure_timeout must be longer than heartbeat_interval",
    ),
    Case(
        "secret-in-manifest",
        SINGLE + '  escalation:\n    base_url: "https://x.example/v1"\n    model: big\n'
        "    api_key: sk-123\n",
        "api_key",
        "deployment.escalation.api_key",
        "unknown key `api_key`",
        "api_key_env",
    ),
    Case(
        "empty-models",
        "deployment:\n  type: single-device\n  models: []\n",
        "[]",
        "deployment.models",
        "must not be empty",
    ),
    Case(
        "not-a-mapping",
        "- just\n- a list\n",
        "-",
        "(document)",
        "expected a mapping, got a list",
    ),
    Case(
        "deployment-not-a-mapping",
        "deployment: 5\n",
        "5",
        "deployment",
        "expected a mapping, got an integer",
    ),
    Case(
        "tool-settings-for-unlisted-tool",
        SINGLE + "      tool_config:\n        email: {from_address: a@b.example}\n",
        "email",
        "deployment.agents[0].tool_config.email",
        "settings for tool `email`, which agent `primary-agent` does not list",
    ),
    Case(
        "percent-out-of-range",
        SINGLE + "  resources:\n    max_memory_usage: 150%\n",
        "150%",
        "deployment.resources.max_memory_usage",
        "at most 100%",
    ),
    Case(
        "parallel-zero",
        SINGLE.replace("primary: true", "primary: true\n      parallel: 0"),
        "0\n",
        "deployment.models[0].parallel",
        "must be at least 1, got 0",
    ),
    Case(
        "context-not-a-number",
        SINGLE.replace("primary: true", "primary: true\n      context: 4k"),
        "4k",
        "deployment.models[0].context",
        "expected an integer, got a string",
    ),
    Case(
        "context-beyond-the-wire",
        SINGLE.replace("primary: true", "primary: true\n      context: 4294967296"),
        "4294967296",
        "deployment.models[0].context",
        "must be at most 4294967295, got 4294967296",
    ),
    Case(
        "parallel-on-another-runtime",
        SINGLE.replace("primary: true", "primary: true\n      runtime: ollama\n      parallel: 8"),
        "parallel",
        "deployment.models[0].parallel",
        "`parallel` applies to llama.cpp only, but model `phi-4-mini` runs on ollama",
        "remove `parallel`, or use runtime: llama.cpp",
    ),
    Case(
        "merge-key",
        "base: &b {type: single-device}\ndeployment:\n  <<: *b\n  models: [{alias: m}]\n",
        "<<",
        "deployment",
        "merge keys (`<<`) are not supported",
    ),
]


def _errors(text: str) -> list[Diagnostic]:
    with pytest.raises(ManifestError) as caught:
        load_text(text, source="m.yaml", tools={"database", "calendar", "email", "time"})
    return caught.value.errors


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_error_points_at_the_right_place_with_a_hint(case: Case) -> None:
    text = textwrap.dedent(case.yaml)
    errors = _errors(text)
    matching = [e for e in errors if case.message in e.message]
    assert matching, f"no error says {case.message!r}; got: {[e.render() for e in errors]}"
    error = matching[0]
    assert (error.line, error.column) == at(text, case.needle, case.nth), error.render()
    assert error.path == case.path
    assert error.file == "m.yaml"
    if case.hint is not None:
        assert error.hint is not None
        assert case.hint in error.hint
    assert error.render().startswith(f"m.yaml:{error.line}:{error.column}: error: ")


def test_all_errors_are_reported_in_one_run() -> None:
    text = (
        SINGLE.replace("  agents:", "  agnets: []\n  agents:")
        .replace('model: "phi-4-mini"', 'model: "nope"')
        .replace('["database"]', '["databse"]')
    )
    messages = [e.message for e in _errors(text)]
    assert len(messages) == 3, messages
    assert any("unknown key `agnets`" in m for m in messages)
    assert any("model `nope`" in m for m in messages)
    assert any("unknown tool `databse`" in m for m in messages)


def test_distributed_agent_on_two_nodes_with_different_models_is_refused() -> None:
    text = DISTRIBUTED.replace('agents: ["technical-support"]', 'agents: ["customer-service"]')
    errors = _errors(text)
    assert any("would run on different models" in e.message for e in errors)


def test_an_unused_model_is_a_warning_not_an_error() -> None:
    loaded = load_text(
        DISTRIBUTED + '  models:\n    - alias: "spare"\n', source="m.yaml", tools=set()
    )
    (warning,) = loaded.warnings
    assert warning.severity == "warning"
    assert "no node loads it" in warning.message


def test_an_agent_with_no_model_uses_the_primary() -> None:
    text = SINGLE.replace('      model: "phi-4-mini"\n', "")
    desired = load_text(text, tools={"database"}).desired
    assert desired.agents[0].model == "phi-4-mini"


def test_a_valid_manifest_changes_nothing_in_its_input() -> None:
    loaded = load_text(SINGLE, source="m.yaml", tools={"database"})
    assert loaded.text == SINGLE
    assert loaded.desired.name == "m"


def test_a_models_slots_reach_the_desired_state_and_default_to_the_catalog() -> None:
    text = SINGLE.replace(
        "primary: true",
        "primary: true\n      runtime: llama.cpp\n      parallel: 8\n      context: 4096\n"
        '    - alias: "helper"',
    )
    loaded = load_text(text, source="m.yaml", tools={"database"})
    assert loaded.warnings == ()
    phi, helper = loaded.desired.models
    assert (phi.parallel, phi.context) == (8, 4096)
    assert (helper.parallel, helper.context) == (None, None), "None: the node's catalog decides"


def test_slots_on_a_model_whose_runtime_the_catalog_picks_are_accepted() -> None:
    text = SINGLE.replace("primary: true", "primary: true\n      parallel: 2")
    assert load_text(text, tools={"database"}).desired.models[0].parallel == 2
