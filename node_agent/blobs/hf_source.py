"""`hf://ORG/REPO/FILE[@REVISION]` to a download: URL, headers, sha256 and size.

Resolved with huggingface_hub (`hf_hub_url`, `get_hf_file_metadata`), so `HF_ENDPOINT`
points it at a mirror. The LFS etag of a model file is its sha256: it becomes the
download's pin. A token, read from the environment variable the catalog names, is sent
to the Hub only (never to the CDN it redirects to) and never shown.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from node_agent.blobs.errors import SourceError
from node_agent.blobs.index import is_sha256
from node_agent.blobs.origin import OriginSource, display_url

DEFAULT_ENDPOINT = "https://huggingface.co"
METADATA_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class HfFile:
    """Where a Hugging Face file downloads from, and what it must hash to."""

    url: str
    headers: dict[str, str] = field(repr=False)
    sha256: str | None
    size: int | None
    commit: str | None

    def origin(self) -> OriginSource:
        """The file as a download source."""
        return OriginSource(self.url, self.headers, total=self.size)


def hf_uri(org: str, repo: str, file: str, revision: str | None) -> str:
    """The `hf://` spelling of a file, for messages."""
    return f"hf://{org}/{repo}/{file}" + (f"@{revision}" if revision else "")


async def resolve_hf(
    org: str, repo: str, file: str, revision: str | None = None, *, token_env: str = ""
) -> HfFile:
    """Ask the Hub (or the mirror HF_ENDPOINT names) about a file; SourceError when it
    cannot say (no such repository, file or revision, no access, unreachable)."""
    return await asyncio.to_thread(resolve_hf_blocking, org, repo, file, revision, token_env)


def resolve_hf_blocking(
    org: str, repo: str, file: str, revision: str | None, token_env: str = ""
) -> HfFile:
    """resolve_hf, blocking the calling thread."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url

    # A node asks the Hub about the file only: no telemetry (it would also fetch a
    # registry from the endpoint to fill in the user agent).
    constants.HF_HUB_DISABLE_TELEMETRY = True
    uri = hf_uri(org, repo, file, revision)
    token = _token(token_env, uri)
    endpoint = (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    url = hf_hub_url(f"{org}/{repo}", file, revision=revision, endpoint=endpoint)
    try:
        meta = get_hf_file_metadata(url, token=token or False, timeout=METADATA_TIMEOUT_S)
    except Exception as exc:  # huggingface_hub raises its own errors and httpx's
        raise SourceError(_explain(exc, uri, endpoint)) from None
    location = meta.location or url
    etag = (meta.etag or "").lower()
    headers = {}
    if token and _same_host(location, endpoint):
        headers["Authorization"] = f"Bearer {token}"
    return HfFile(
        url=location,
        headers=headers,
        sha256=etag if is_sha256(etag) else None,  # a git (non-LFS) file has a sha1 etag
        size=meta.size,
        commit=meta.commit_hash,
    )


def _token(token_env: str, uri: str) -> str:
    if not token_env:
        return ""
    token = os.environ.get(token_env, "")
    if not token:
        raise SourceError(
            f"{uri} needs the Hugging Face token in the environment variable {token_env}, "
            "which is not set for the node; set it in the node's service environment"
        )
    return token


def _same_host(url: str, endpoint: str) -> bool:
    return urlsplit(url).netloc == urlsplit(endpoint).netloc


def _explain(exc: Exception, uri: str, endpoint: str) -> str:
    kind = type(exc).__name__
    status = getattr(getattr(exc, "response", None), "status_code", None)
    advice = {
        "RepositoryNotFoundError": "no such repository (or it is private: set token_env)",
        "GatedRepoError": "the repository is gated: accept its terms and set token_env",
        "RevisionNotFoundError": "no such revision: check the @REVISION",
        "EntryNotFoundError": "no such file in the repository: check the file name",
        "RemoteEntryNotFoundError": "no such file in the repository: check the file name",
    }.get(kind)
    if advice is None:
        first_line = (str(exc).splitlines() or [""])[0]
        advice = f"HTTP {status}" if status else f"{kind}: {first_line}"
        advice += "; check the network and HF_ENDPOINT"
    return f"cannot resolve {uri} at {display_url(endpoint)}: {advice}"
