"""The published JSON Schema and the pydantic models accept and reject the same documents."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import jsonschema
import yaml
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import validators
from pydantic import ValidationError

from orchestrator.manifest.document import ManifestDocument
from orchestrator.manifest.schema import SCHEMA_FILE, render_schema
from tests.conftest import MANIFESTS, REPO

SCHEMA = json.loads((REPO / SCHEMA_FILE).read_text(encoding="utf-8"))


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    # JSON Schema patterns are ECMA 262 regexes, where `$` ends the input; Python's
    # `$` also matches before a final newline, so python-jsonschema would accept
    # "name\n". Check with ECMA's meaning.
    if isinstance(instance, str) and not re.search(re.sub(r"\$$", r"\\Z", pattern), instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


EcmaValidator = validators.extend(jsonschema.Draft202012Validator, {"pattern": _ecma_pattern})
SCHEMA_VALIDATOR = EcmaValidator(SCHEMA)

SEEDS: list[dict[str, Any]] = [
    yaml.safe_load(p.read_text(encoding="utf-8")) for p in sorted(MANIFESTS.glob("*.yaml"))
]
KEYS = sorted({key for defn in SCHEMA["$defs"].values() for key in defn.get("properties", {})})
INTERESTING = st.sampled_from(
    [
        "",
        "a",
        "a b",
        "abc\n",
        "-x",
        "x" * 64,
        "x" * 63,
        "5s",
        "5 s",
        "0s",
        "250ms",
        "1.5GiB",
        "3 GB",
        "3gb",
        "75%",
        "0%",
        "150%",
        "100.5%",
        "single-device",
        "distributed-edge",
        "automatic",
        "manual",
        "none",
        "round-robin",
        "peak-ewma",
        "least-outstanding",
        "llama.cpp",
        "ollama",
        "vllm",
        "http://x",
        "https://h.example/v1",
        "ftp://x",
        "HOST:80",
        "[::1]:7443",
        "10.0.0.1:99999",
        "EDGE_KEY",
        "1BAD",
        0,
        1,
        -1,
        2.0,
        2.5,
        True,
        False,
        None,
        [],
        {},
        ["a"],
        {"a": "b"},
        1e300,
    ]
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
    | INTERESTING,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        node = node[part]
    return node


@st.composite
def near_valid_documents(draw: st.DrawFn) -> Any:
    document = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(document)
        path = draw(st.sampled_from(paths))
        if not path:
            continue
        parent, last = _get(document, path[:-1]), path[-1]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        # Copies: a list or dict drawn from INTERESTING is one shared object, and a later
        # step mutating it would change what the strategy draws next.
        if action == "replace":
            parent[last] = copy.deepcopy(draw(JSON_VALUES))
        elif action == "delete":
            if isinstance(parent, dict):
                del parent[last]
            else:
                parent.pop(last)
        elif isinstance(parent, dict):
            key = draw(st.sampled_from(KEYS) | st.text(max_size=6))
            parent[key] = copy.deepcopy(draw(JSON_VALUES))
        else:
            parent.append(copy.deepcopy(draw(JSON_VALUES)))
    return document


def _schema_accepts(document: Any) -> bool:
    return SCHEMA_VALIDATOR.is_valid(document)


def _models_accept(document: Any) -> bool:
    try:
        ManifestDocument.model_validate(document)
    except ValidationError:
        return False
    return True


def test_the_checked_in_schema_is_current() -> None:
    assert (REPO / SCHEMA_FILE).read_text(encoding="utf-8") == render_schema(), (
        "schemas/manifest.schema.json is stale: run python scripts/gen_schema.py"
    )


def test_the_schema_is_valid_json_schema_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_every_example_is_accepted_by_both() -> None:
    for document in SEEDS:
        assert _schema_accepts(document)
        assert _models_accept(document)


@given(near_valid_documents())
def test_schema_and_models_agree_near_valid_documents(document: Any) -> None:
    assert _schema_accepts(document) == _models_accept(document), json.dumps(document)[:2000]


@given(JSON_VALUES.map(lambda v: {"deployment": v}))
def test_schema_and_models_agree_on_random_documents(document: Any) -> None:
    assert _schema_accepts(document) == _models_accept(document), json.dumps(document)[:2000]
