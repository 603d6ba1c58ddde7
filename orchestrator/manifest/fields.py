"""Field types of the manifest, each with its validation and its JSON Schema side by side.

Every type here validates with the same rule it publishes in the schema, so the
pydantic models and `schemas/manifest.schema.json` accept the same documents.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from edgefleet_contract.desired import UINT32_MAX
from edgefleet_contract.model_source import SHA256_PATTERN
from edgefleet_contract.units import DURATION_PATTERN, PERCENT_PATTERN, SIZE_PATTERN

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
LABEL_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,127})$"
ADDRESS_PATTERN = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]{0,252}):[0-9]{1,5}$"
URL_PATTERN = r"^https?://[^\s/$.?#][^\s]*$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"

_TYPE_WORDS = {
    bool: "true/false",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a mapping",
    type(None): "nothing (null)",
}


def describe(value: Any) -> str:
    """What kind of YAML value `value` is, in words."""
    return _TYPE_WORDS.get(type(value), type(value).__name__)


def _wrong_type(expected: str, value: Any) -> PydanticCustomError:
    return PydanticCustomError(
        "wrong_type",
        "expected {expected}, got {got}",
        {"expected": expected, "got": describe(value)},
    )


def _integer(value: Any) -> int:
    # JSON Schema counts 2.0 as an integer; so do we.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type("an integer", value)
    return value


def _matching(pattern: str, rule: str) -> Callable[[Any], str]:
    # re.fullmatch with a final "$" would also accept a trailing newline; strip the anchors.
    compiled = re.compile(pattern.removeprefix("^").removesuffix("$"))

    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise _wrong_type("a string", value)
        if compiled.fullmatch(value) is None:
            raise PydanticCustomError(
                "bad_format", "`{value}` is not {rule}", {"value": value, "rule": rule}
            )
        return value

    return check


def _positive_integer(value: Any) -> int:
    number = _integer(value)
    if number < 1:
        raise PydanticCustomError("too_small", "must be at least 1, got {n}", {"n": number})
    return number


def _count(value: Any) -> int:
    number = _positive_integer(value)
    if number > UINT32_MAX:
        raise PydanticCustomError(
            "too_large", "must be at most {most}, got {n}", {"most": UINT32_MAX, "n": number}
        )
    return number


def _size(value: Any) -> str | int:
    if isinstance(value, str):
        return _matching(SIZE_PATTERN, "a size such as 512MiB, 4GB or 1.5GiB")(value)
    number = _integer(value)
    if number < 0:
        raise PydanticCustomError("too_small", "a size cannot be negative", {})
    return number


def _size_or_percent(value: Any) -> str | int:
    if isinstance(value, str) and value.endswith("%"):
        return _matching(PERCENT_PATTERN, "a percentage such as 75%")(value)
    return _size(value)


def _duration(value: Any) -> str | float | int:
    if isinstance(value, str):
        return _matching(DURATION_PATTERN, "a duration such as 500ms, 3s, 10m or 1h")(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _wrong_type("a duration (a number of seconds or a string like 3s)", value)
    if not math.isfinite(value) or value <= 0:
        raise PydanticCustomError("too_small", "a duration must be more than 0 seconds", {})
    return value


_SIZE_SCHEMA: dict[str, Any] = {
    "description": "Bytes, or a string with a unit: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB.",
    "anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": SIZE_PATTERN}],
}
_DURATION_SCHEMA: dict[str, Any] = {
    "description": "Seconds, or a string with a unit: ms, s, m, h.",
    "anyOf": [
        {"type": "number", "exclusiveMinimum": 0},
        {"type": "string", "pattern": DURATION_PATTERN},
    ],
}


def _string_schema(pattern: str, description: str) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "pattern": pattern, "description": description})


Name = Annotated[
    str,
    PlainValidator(
        _matching(
            NAME_PATTERN,
            "a valid name (letters, digits, `.`, `_`, `-`; starts with a letter or digit; "
            "at most 63)",
        )
    ),
    _string_schema(
        NAME_PATTERN, "A name: letters, digits, '.', '_' and '-', starting with a letter or digit."
    ),
]
LabelKey = Annotated[
    str,
    PlainValidator(_matching(LABEL_PATTERN, "a valid label key")),
    _string_schema(LABEL_PATTERN, "A label key: letters, digits, '.', '_', '/', '-'."),
]
Address = Annotated[
    str,
    PlainValidator(_matching(ADDRESS_PATTERN, "an address of the form HOST:PORT")),
    _string_schema(ADDRESS_PATTERN, "A static node address, HOST:PORT, for networks without mDNS."),
]
Url = Annotated[
    str,
    PlainValidator(_matching(URL_PATTERN, "an http(s) URL")),
    _string_schema(URL_PATTERN, "An http:// or https:// URL."),
]
EnvName = Annotated[
    str,
    PlainValidator(_matching(ENV_NAME_PATTERN, "an environment variable name")),
    _string_schema(
        ENV_NAME_PATTERN,
        "The name of an environment variable (the secret itself never goes in a manifest).",
    ),
]
Sha256 = Annotated[
    str,
    PlainValidator(
        _matching(SHA256_PATTERN, "a SHA-256 digest (64 lowercase hex digits, as sha256sum prints)")
    ),
    _string_schema(SHA256_PATTERN, "A SHA-256 digest: 64 lowercase hex digits."),
]
PositiveInt = Annotated[
    int, PlainValidator(_positive_integer), WithJsonSchema({"type": "integer", "minimum": 1})
]
Count = Annotated[
    int,
    PlainValidator(_count),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": UINT32_MAX}),
]
"""A whole number that travels to nodes as a uint32, so 1 up to 2**32 - 1."""
Size = Annotated[str | int, PlainValidator(_size), WithJsonSchema(_SIZE_SCHEMA)]
SizeOrPercent = Annotated[
    str | int,
    PlainValidator(_size_or_percent),
    WithJsonSchema(
        {
            "description": "A size (see Size) or a share of the device's memory such as 75%.",
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": SIZE_PATTERN},
                {"type": "string", "pattern": PERCENT_PATTERN},
            ],
        }
    ),
]
Duration = Annotated[str | float, PlainValidator(_duration), WithJsonSchema(_DURATION_SCHEMA)]


STRATEGIES = ("round-robin", "least-outstanding", "peak-ewma")


def _load_balancing(value: Any) -> bool | str:
    if isinstance(value, bool) or (isinstance(value, str) and value in STRATEGIES):
        return value
    raise PydanticCustomError(
        "literal_error",
        "`{value}` is not a load-balancing setting",
        {"value": value, "expected": ", ".join(("true", "false", *STRATEGIES))},
    )


LoadBalancing = Annotated[
    bool | str,
    PlainValidator(_load_balancing),
    WithJsonSchema(
        {
            "description": "true (the default strategy, peak-ewma), false, or a strategy name.",
            "anyOf": [{"type": "boolean"}, {"enum": list(STRATEGIES)}],
        }
    ),
]
