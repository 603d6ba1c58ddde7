"""The node's model blobs: a content-addressed store, downloads into it, hf:// sources."""

from node_agent.blobs.download import fetch
from node_agent.blobs.errors import (
    BlobError,
    BlobMismatch,
    DownloadError,
    NoRoom,
    RangeIgnored,
    SourceError,
)
from node_agent.blobs.hf_source import HfFile, resolve_hf
from node_agent.blobs.origin import OriginSource, display_url
from node_agent.blobs.partial import PartialBlob, PartialState
from node_agent.blobs.progress import ProgressFn
from node_agent.blobs.rate_limit import TokenBucket
from node_agent.blobs.source import ChunkSource, KnowsTotal
from node_agent.blobs.store import BlobInfo, BlobStore, source_key

__all__ = [
    "BlobError",
    "BlobInfo",
    "BlobMismatch",
    "BlobStore",
    "ChunkSource",
    "DownloadError",
    "HfFile",
    "KnowsTotal",
    "NoRoom",
    "OriginSource",
    "PartialBlob",
    "PartialState",
    "ProgressFn",
    "RangeIgnored",
    "SourceError",
    "TokenBucket",
    "display_url",
    "fetch",
    "resolve_hf",
    "source_key",
]
