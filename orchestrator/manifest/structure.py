"""Structural validation: the document models, with errors said for people."""

from __future__ import annotations

import copy
import re
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from orchestrator.manifest.diagnostics import Diagnostic, DocPath
from orchestrator.manifest.document import DEPLOYMENT_TYPES, ManifestDocument, model_for
from orchestrator.manifest.fields import describe
from orchestrator.manifest.hints import did_you_mean
from orchestrator.manifest.yaml_source import LocatedDocument

# Keys people reach for that the manifest deliberately does not have.
_KEY_ADVICE = {
    "api_key": "secrets never go in a manifest: put the key in an environment variable "
    "on the controller and name it in `api_key_env`",
    "password": "secrets never go in a manifest: name an environment variable instead",
    "model_alias": "the key is `alias`",
    "replica": "the key is `replicas`",
}
_TYPE_EXPECTED = {
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "string_type": "a string",
    "bool_type": "true or false",
    "int_type": "an integer",
    "float_type": "a number",
}
_QUOTED = re.compile(r"'([^']*)'")


def validate_structure(source: LocatedDocument) -> tuple[ManifestDocument | None, list[Diagnostic]]:
    """The typed document and every structural problem, located.

    When the only problems are unknown keys, the document is validated again
    without them, so the caller can still run the semantic checks and report
    everything in one pass (an unknown key never changes what the rest means).
    """
    try:
        return ManifestDocument.model_validate(source.data), []
    except ValidationError as exc:
        errors = exc.errors()
    problems = [_diagnostic(source, error) for error in errors]
    if any(error["type"] != "extra_forbidden" for error in errors):
        return None, problems
    pruned = copy.deepcopy(source.data)
    for error in errors:
        _delete(pruned, tuple(error["loc"]))
    try:
        return ManifestDocument.model_validate(pruned), problems
    except ValidationError:
        return None, problems


def _delete(data: Any, loc: tuple[int | str, ...]) -> None:
    target = data
    for part in _doc_path(loc)[:-1]:
        target = target[part]
    del target[loc[-1]]


def _doc_path(loc: tuple[int | str, ...]) -> DocPath:
    """Drop the shape tag pydantic inserts after `deployment`."""
    if len(loc) >= 2 and loc[0] == "deployment" and loc[1] in DEPLOYMENT_TYPES:
        return (loc[0], *loc[2:])
    return tuple(loc)


def _diagnostic(source: LocatedDocument, error: ErrorDetails) -> Diagnostic:
    loc = tuple(error["loc"])
    path = _doc_path(loc)
    kind = error["type"]
    value: Any = error.get("input")
    ctx = error.get("ctx") or {}

    if kind == "extra_forbidden":
        key = str(path[-1])
        owner = model_for(loc[:-1])
        allowed = sorted(owner.model_fields) if owner else []
        hint = _KEY_ADVICE.get(key) or did_you_mean(key, allowed, allowed_label="keys here")
        return source.diagnostic(path, f"unknown key `{key}`", hint=hint or None, key=True)
    if kind == "missing":
        key = str(path[-1])
        return source.diagnostic(path[:-1], f"missing required key `{key}`", key=False)
    if kind == "union_tag_not_found":
        return source.diagnostic(
            path,
            "missing `type`",
            hint=f"add `type:`; allowed: {', '.join(DEPLOYMENT_TYPES)}",
        )
    if kind == "union_tag_invalid":
        tag = str(ctx.get("tag", ""))
        return source.diagnostic(
            (*path, "type"),
            f"unknown deployment type `{tag}`",
            hint=did_you_mean(tag, DEPLOYMENT_TYPES),
        )
    if kind == "literal_error":
        expected = ctx.get("expected", "")
        choices = _QUOTED.findall(expected) or [c.strip() for c in expected.split(",")]
        shown = value if isinstance(value, str) else describe(value)
        return source.diagnostic(
            path, f"`{shown}` is not allowed here", hint=did_you_mean(str(value), choices)
        )
    if kind in _TYPE_EXPECTED:
        return source.diagnostic(path, f"expected {_TYPE_EXPECTED[kind]}, got {describe(value)}")
    if kind == "too_short":
        return source.diagnostic(path, "must not be empty", hint="list at least one entry")
    return source.diagnostic(path, error["msg"])
