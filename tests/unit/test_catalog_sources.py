"""Catalog entries for models the node downloads: checked sources, pins and token variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet_contract.desired import ModelWant
from node_agent.catalog import Catalog, CatalogEntry, CatalogError, SourceAccess

PIN = "0123456789abcdef" * 4
OTHER_PIN = "f" * 64
HF = "hf://bartowski/phi-4-mini-GGUF/phi-4-mini-Q4_K_M.gguf@main"
CATALOG = f"""\
models:
  phi: {{runtime: llama.cpp, source: "{HF}", sha256: "{PIN}", token_env: HF_TOKEN}}
  mirror: {{runtime: llama.cpp, source: "http://10.0.0.5:8080/phi.gguf"}}
  tagged: {{runtime: ollama, source: "phi4-mini:3.8b"}}
"""


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG)
    return Catalog.load(path)


def test_an_entry_keeps_its_pin_and_token_variable(catalog: Catalog) -> None:
    assert catalog.entry("phi") == CatalogEntry(
        runtime="llama.cpp", source=HF, sha256=PIN, token_env="HF_TOKEN"
    )
    mirror = catalog.entry("mirror")
    assert mirror is not None
    assert (mirror.sha256, mirror.token_env) == ("", "")


def test_the_catalog_pins_the_source_it_names(catalog: Catalog) -> None:
    assert catalog.access(ModelWant(alias="phi")) == SourceAccess(PIN, "HF_TOKEN")
    assert catalog.access(ModelWant(alias="phi", runtime="llama.cpp", source=HF)) == SourceAccess(
        PIN, "HF_TOKEN"
    )


def test_the_desired_state_wins_over_the_catalog(catalog: Catalog) -> None:
    want = ModelWant(alias="phi", sha256=OTHER_PIN, token_env="FLEET_TOKEN")
    assert catalog.access(want) == SourceAccess(OTHER_PIN, "FLEET_TOKEN")


@pytest.mark.parametrize(
    "want",
    [
        ModelWant(alias="phi", source="hf://someone/else/x.gguf"),
        ModelWant(alias="phi", runtime="ollama", source="phi4-mini"),
        ModelWant(alias="unknown", source=HF),
    ],
)
def test_a_pin_is_for_the_catalogs_own_source_only(catalog: Catalog, want: ModelWant) -> None:
    assert catalog.access(want) == SourceAccess()


def test_the_built_in_entry_is_unpinned() -> None:
    assert Catalog.load(None).access(ModelWant(alias="smollm2-135m")) == SourceAccess()


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            '{runtime: llama.cpp, source: "ftp://mirror/x.gguf"}',
            "models.a.source: model source `ftp://mirror/x.gguf` uses the unsupported scheme",
        ),
        (
            '{runtime: llama.cpp, source: "hf://org/repo"}',
            "models.a.source: model source `hf://org/repo` needs a file in the repository",
        ),
        (
            '{runtime: llama.cpp, source: "pkg:"}',
            "needs a Python distribution name after pkg:; write a GGUF path",
        ),
        (
            "{runtime: llama.cpp, source: x.gguf, sha256: abc}",
            "models.a.sha256: `abc` is not a SHA-256 digest",
        ),
        (
            f"{{runtime: llama.cpp, source: x.gguf, sha256: {PIN.upper()}}}",
            "models.a.sha256: SHA-256 `" + PIN.upper() + "` has uppercase digits",
        ),
        (
            "{runtime: llama.cpp, source: x.gguf, sha256: 5}",
            "models.a.sha256: must be a string",
        ),
        (
            f"{{runtime: ollama, source: phi4, sha256: {PIN}}}",
            "models.a.sha256: only llama.cpp models are downloaded by the node; ollama",
        ),
        (
            "{runtime: vllm, source: org/model, token_env: HF_TOKEN}",
            "models.a.token_env: only llama.cpp models are downloaded by the node",
        ),
        (
            "{runtime: llama.cpp, source: x.gguf, token_env: [HF_TOKEN]}",
            "models.a.token_env: must be a string",
        ),
    ],
)
def test_a_bad_entry_names_the_file_and_the_key(tmp_path: Path, entry: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"models:\n  a: {entry}\n")
    with pytest.raises(CatalogError) as caught:
        Catalog.load(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert expected in str(caught.value)


def test_a_token_in_place_of_its_variable_is_refused_without_repeating_it(
    tmp_path: Path,
) -> None:
    token = "hf_SECRETsecretSECRET-1234"
    path = tmp_path / "bad.yaml"
    path.write_text(f'models:\n  a: {{runtime: llama.cpp, source: x.gguf, token_env: "{token}"}}\n')
    with pytest.raises(CatalogError) as caught:
        Catalog.load(path)
    message = str(caught.value)
    assert "models.a.token_env: not an environment variable name" in message
    assert "never the token itself" in message
    assert "SECRET" not in message
