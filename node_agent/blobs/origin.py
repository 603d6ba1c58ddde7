"""The origin as a ChunkSource: an HTTP(S) URL read with Range requests."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from node_agent.blobs.errors import RangeIgnored, SourceError

if TYPE_CHECKING:
    import aiohttp

CHUNK = 256 * 1024
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 30.0  # no byte for this long: the source is gone
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def display_url(url: str) -> str:
    """A URL fit for messages and logs: no user info, query or fragment (signed URLs
    carry credentials there)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class OriginSource:
    """Streams `url` from an offset (HTTP Range); `headers` go with every request (they
    may hold a token: never shown)."""

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str] | None = None,
        *,
        name: str = "origin",
        total: int | None = None,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        read_timeout: float = READ_TIMEOUT_S,
    ) -> None:
        self.url = url
        self.headers = dict(headers or {})
        self.name = name
        self.total = total
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout

    def __repr__(self) -> str:
        return f"OriginSource({display_url(self.url)!r})"

    async def chunks(self, offset: int) -> AsyncIterator[bytes]:
        """The bytes from `offset` on; SourceError (naming the URL) when it fails."""
        import aiohttp

        headers = {**self.headers, "Accept-Encoding": "identity"}
        if offset > 0:
            headers["Range"] = f"bytes={offset}-"
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.connect_timeout, sock_read=self.read_timeout
        )
        where = display_url(self.url)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session,
                session.get(self.url, headers=headers) as response,
            ):
                if not self._accept(response, offset, where):
                    return
                async for chunk in response.content.iter_chunked(CHUNK):
                    yield chunk
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            detail = str(exc) or type(exc).__name__
            if isinstance(exc, TimeoutError):
                detail = f"no data for {self.read_timeout:.0f}s"
            raise SourceError(f"downloading {where} failed: {detail}") from None

    def _accept(self, response: aiohttp.ClientResponse, offset: int, where: str) -> bool:
        """Check the answer and learn the size; False when there is nothing left to read."""
        status = response.status
        encoding = response.headers.get("Content-Encoding", "identity")
        if encoding not in ("identity", ""):
            raise SourceError(f"{where} sent the file {encoding}-encoded; serve it as is")
        if status == 416 and offset > 0:
            # Asked from the end: the partial is complete if the size says so.
            match = re.fullmatch(r"bytes \*/(\d+)", response.headers.get("Content-Range", ""))
            if match and int(match.group(1)) == offset:
                self.total = offset
                return False
            raise SourceError(f"{where} has fewer than the {offset} bytes already downloaded")
        if status == 206:
            self._check_range(response.headers.get("Content-Range", ""), offset, where)
            return True
        if status == 200:
            if offset > 0:
                raise RangeIgnored(f"{where} does not resume downloads (it sent the whole file)")
            if response.content_length is not None:
                self.total = response.content_length
            return True
        hint = {
            401: "it needs a token: set the catalog's token_env",
            403: "access was refused: check the token and that it may read this file",
            404: "no such file: check the model source",
        }.get(status, "try again later or use another source")
        raise SourceError(f"{where} answered HTTP {status}; {hint}")

    def _check_range(self, content_range: str, offset: int, where: str) -> None:
        match = _CONTENT_RANGE.fullmatch(content_range)
        if match is None or int(match.group(1)) != offset:
            raise SourceError(
                f"{where} sent bytes {content_range or '(no Content-Range)'} when asked for "
                f"bytes from {offset}"
            )
        if match.group(3) != "*":
            self.total = int(match.group(3))
