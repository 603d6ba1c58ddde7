"""The published JSON Schema of the manifest, generated from the document models."""

from __future__ import annotations

import json
from typing import Any

from orchestrator.manifest.document import ManifestDocument

SCHEMA_ID = "https://edgefleet.dev/schemas/manifest.schema.json"
SCHEMA_FILE = "schemas/manifest.schema.json"


def manifest_schema() -> dict[str, Any]:
    """JSON Schema 2020-12 of a manifest; the same rules the loader's models apply."""
    body = ManifestDocument.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "EdgeFleet manifest",
        "description": "One `deployment:` of AI agents and small language models on edge nodes.",
        **{k: v for k, v in body.items() if k not in ("title", "description")},
    }


def render_schema() -> str:
    """The schema as the text checked in at `schemas/manifest.schema.json`."""
    return json.dumps(manifest_schema(), indent=2, sort_keys=True) + "\n"
