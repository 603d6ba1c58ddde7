"""The dashboard's page and assets: files of the package's `static` folder, nothing else."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from urllib.parse import unquote

from edgefleet_dataplane.http_server import Response

STATIC_DIR = Path(__file__).resolve().parent / "static"
INDEX = "index.html"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
    ".map": "application/json",
}
"""Content types by file suffix; other files are `application/octet-stream`."""
SECURITY_HEADERS = (
    ("cache-control", "no-cache"),
    ("x-content-type-options", "nosniff"),
    (
        "content-security-policy",
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
    ),
    ("referrer-policy", "no-referrer"),
)
"""No caching without a check, and no content from anywhere but this controller."""


class StaticFiles:
    """Serves the files under one folder (and none outside it)."""

    def __init__(self, root: Path = STATIC_DIR) -> None:
        self._root = root.resolve()

    def file(self, name: str) -> Path | None:
        """The file `name` (a path relative to the folder, URL-encoded) names, or None when
        it is missing, a folder, or outside the folder."""
        relative = PurePosixPath(unquote(name))
        if relative.is_absolute() or any(part in ("..", "") for part in relative.parts):
            return None
        if not relative.parts or "\\" in name or "\0" in name:
            return None
        path = (self._root / relative).resolve()
        if not path.is_relative_to(self._root) or not path.is_file():
            return None
        return path

    def response(self, name: str) -> Response:
        """The file as an HTTP answer: 200 with its content type, or 404."""
        path = self.file(name)
        if path is None:
            text = f"no such dashboard file: {name}\n".encode()
            return Response(404, text, [("content-type", "text/plain; charset=utf-8")])
        body = path.read_bytes()
        kind = CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
        return Response(200, body, [("content-type", kind), *SECURITY_HEADERS])

    def index(self) -> Response:
        """The page itself."""
        return self.response(INDEX)
