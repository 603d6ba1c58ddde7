"""A small HTTP origin for model download tests, on loopback or inside a network namespace.

Serves the files under ROOT at `/PATH` and, Hugging Face style, at
`/ORG/REPO/resolve/REVISION/PATH` (the file ROOT/ORG/REPO/PATH, with the headers
huggingface_hub's get_hf_file_metadata reads: X-Repo-Commit, X-Linked-Etag = the
file's sha256, X-Linked-Size). Range requests answer 206. Every request is logged
with the offset it started at and the bytes the body carried.

Misbehaviour on demand (flags, or POST /_control with the same names in JSON):
`corrupt` flips one byte in the middle of every file served; `rate_bps` throttles;
`drop_after` closes the connection after that many body bytes, for the next
`drops` responses (default 1); `ignore_range` answers every GET with the whole file;
`token` makes the Hugging Face routes require `Authorization: Bearer TOKEN`.
GET /_log returns the access log as JSON.

    python -m tests.blob_origin --root DIR --port P [--host 0.0.0.0] [--access-log FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

from aiohttp import web

COMMIT = "0123456789abcdef0123456789abcdef01234567"
"""The commit every Hugging Face style repository is at (`main` resolves to it)."""
WRITE_CHUNK = 64 * 1024
DROP_GRACE_S = 0.5  # lets the client take in the bytes sent before the connection drops
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@dataclasses.dataclass
class Behaviour:
    """How the origin misbehaves now."""

    corrupt: bool = False
    rate_bps: int = 0
    drop_after: int | None = None
    drops: int = 1
    ignore_range: bool = False
    token: str | None = None


@dataclasses.dataclass
class Served:
    """One request in the access log."""

    method: str
    path: str
    status: int
    start: int
    bytes_sent: int = 0
    dropped: bool = False
    authorized: bool = False


class BlobOrigin:
    """The origin's app, its behaviour and its access log."""

    def __init__(
        self, root: Path, behaviour: Behaviour | None = None, log_file: Path | None = None
    ):
        self.root = root.resolve()
        self.behaviour = behaviour or Behaviour()
        self.log: list[Served] = []
        self.log_file = log_file
        self._hashes: dict[tuple[Path, int, int], str] = {}
        self._runner: web.AppRunner | None = None
        self.app = web.Application()
        self.app.router.add_get("/_log", self._get_log)
        self.app.router.add_post("/_control", self._control)
        self.app.router.add_route("*", "/{org}/{repo}/resolve/{revision}/{path:.+}", self._hf)
        self.app.router.add_route("*", "/{path:.+}", self._plain)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen; returns the base URL (`http://HOST:PORT`)."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://{host}:{bound}"

    async def stop(self) -> None:
        """Stop listening and close connections."""
        if self._runner is not None:
            await self._runner.cleanup()

    def bytes_served(self, path: str | None = None) -> int:
        """Body bytes sent for GET requests (of `path`, when given)."""
        return sum(
            entry.bytes_sent
            for entry in self.log
            if entry.method == "GET" and (path is None or entry.path == path)
        )

    def sha256(self, file: Path) -> str:
        """The sha256 of a file's true content (cached while it is unchanged)."""
        stat = file.stat()
        key = (file, stat.st_size, stat.st_mtime_ns)
        if key not in self._hashes:
            digest = hashlib.sha256()
            with file.open("rb") as handle:
                while block := handle.read(1024 * 1024):
                    digest.update(block)
            self._hashes[key] = digest.hexdigest()
        return self._hashes[key]

    async def _get_log(self, request: web.Request) -> web.Response:
        return web.json_response([dataclasses.asdict(entry) for entry in self.log])

    async def _control(self, request: web.Request) -> web.Response:
        changes = await request.json()
        fields = {field.name for field in dataclasses.fields(Behaviour)}
        unknown = set(changes) - fields
        if unknown:
            raise web.HTTPBadRequest(text=f"unknown settings: {sorted(unknown)}")
        self.behaviour = dataclasses.replace(self.behaviour, **changes)
        return web.json_response(dataclasses.asdict(self.behaviour))

    async def _plain(self, request: web.Request) -> web.StreamResponse:
        file = self._file(request.match_info["path"])
        if file is None:
            return self._record(request, web.Response(status=404, text="no such file"))
        return await self._serve(request, file, {"ETag": f'"{self.sha256(file)}"'})

    async def _hf(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        authorized = request.headers.get("Authorization") == f"Bearer {self.behaviour.token}"
        if self.behaviour.token is not None and not authorized:
            return self._hf_error(request, 401, "RepoNotFound", "Invalid username or password.")
        repo = self.root / info["org"] / info["repo"]
        if not repo.is_dir():
            return self._hf_error(request, 404, "RepoNotFound", "Repository not found")
        if info["revision"] not in ("main", COMMIT):
            return self._hf_error(request, 404, "RevisionNotFound", "Invalid rev id")
        file = self._file(f"{info['org']}/{info['repo']}/{info['path']}")
        if file is None:
            return self._hf_error(request, 404, "EntryNotFound", "Entry not found")
        sha256 = self.sha256(file)
        headers = {
            "X-Repo-Commit": COMMIT,
            "ETag": f'"{sha256}"',
            "X-Linked-Etag": f'"{sha256}"',
            "X-Linked-Size": str(file.stat().st_size),
        }
        return await self._serve(request, file, headers, authorized=authorized)

    def _hf_error(self, request: web.Request, status: int, code: str, text: str) -> web.Response:
        headers = {"X-Error-Code": code, "X-Error-Message": text}
        return self._record(request, web.Response(status=status, text=text, headers=headers))

    def _file(self, relative: str) -> Path | None:
        """The file at a URL path under the root (symbolic links in the root are followed:
        a test may link a large file rather than copy it)."""
        parts = PurePosixPath(relative).parts
        if ".." in parts or not parts or parts[0] == "/":
            return None
        file = self.root.joinpath(*parts)
        return file if file.is_file() else None

    async def _serve(
        self, request: web.Request, file: Path, headers: dict[str, str], authorized: bool = False
    ) -> web.StreamResponse:
        size = (await asyncio.to_thread(file.stat)).st_size
        start, end = 0, size - 1
        match = _RANGE.fullmatch(request.headers.get("Range", ""))
        ranged = match is not None and not self.behaviour.ignore_range
        if ranged and match is not None:
            start = int(match.group(1))
            end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            if start >= size:
                headers["Content-Range"] = f"bytes */{size}"
                return self._record(request, web.Response(status=416, headers=headers), start)
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        response = web.StreamResponse(status=206 if ranged else 200, headers=headers)
        response.headers["Accept-Ranges"] = "bytes"
        response.content_length = end - start + 1
        entry = Served(request.method, request.path, response.status, start, authorized=authorized)
        self._append(entry)
        await response.prepare(request)
        try:
            if request.method == "GET":
                await self._send_body(request, response, file, start, end + 1, entry)
        finally:
            self._write_log(entry)
        return response

    async def _send_body(
        self,
        request: web.Request,
        response: web.StreamResponse,
        file: Path,
        start: int,
        stop: int,
        entry: Served,
    ) -> None:
        behaviour = self.behaviour
        limit = None
        if behaviour.drop_after is not None and behaviour.drops > 0:
            limit = behaviour.drop_after
            behaviour.drops -= 1
        flip = (await asyncio.to_thread(file.stat)).st_size // 2 if behaviour.corrupt else -1
        chunk_size = WRITE_CHUNK
        if behaviour.rate_bps:
            chunk_size = max(1, min(WRITE_CHUNK, behaviour.rate_bps // 10))
        with file.open("rb") as handle:
            handle.seek(start)
            position = start
            while position < stop:
                size = min(chunk_size, stop - position)
                if limit is not None:
                    size = min(size, limit - entry.bytes_sent)
                data = bytearray(handle.read(size))
                if position <= flip < position + len(data):
                    data[flip - position] ^= 0xFF
                await response.write(bytes(data))
                entry.bytes_sent += len(data)
                position += len(data)
                if limit is not None and entry.bytes_sent >= limit:
                    await asyncio.sleep(DROP_GRACE_S)
                    entry.dropped = True
                    if request.transport is not None:
                        request.transport.close()
                    return
                if behaviour.rate_bps:
                    await asyncio.sleep(len(data) / behaviour.rate_bps)

    def _record(self, request: web.Request, response: web.Response, start: int = 0) -> web.Response:
        entry = Served(request.method, request.path, response.status, start)
        self._append(entry)
        self._write_log(entry)
        return response

    def _append(self, entry: Served) -> None:
        self.log.append(entry)

    def _write_log(self, entry: Served) -> None:
        if self.log_file is not None:
            with self.log_file.open("a") as handle:
                handle.write(json.dumps(dataclasses.asdict(entry)) + "\n")


def _behaviour(args: argparse.Namespace) -> Behaviour:
    settings: dict[str, Any] = {
        "corrupt": args.corrupt,
        "rate_bps": args.rate,
        "drop_after": args.drop_after,
        "drops": args.drops,
        "ignore_range": args.ignore_range,
        "token": args.token,
    }
    return Behaviour(**settings)


async def _serve_forever(args: argparse.Namespace) -> None:
    origin = BlobOrigin(args.root, _behaviour(args), args.access_log)
    url = await origin.start(args.host, args.port)
    print(f"serving {args.root} at {url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await origin.stop()


def main(argv: list[str] | None = None) -> None:
    """Run the origin until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m tests.blob_origin", description=__doc__)
    parser.add_argument("--root", type=Path, required=True, help="folder of files to serve")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--access-log", type=Path, help="also append the log here (JSON lines)")
    parser.add_argument("--corrupt", action="store_true", help="flip a byte mid-file")
    parser.add_argument("--rate", type=int, default=0, help="bytes per second (0: no limit)")
    parser.add_argument("--drop-after", type=int, help="close the connection after N bytes")
    parser.add_argument("--drops", type=int, default=1, help="responses --drop-after applies to")
    parser.add_argument("--ignore-range", action="store_true", help="answer 200, never 206")
    parser.add_argument("--token", help="bearer token the Hugging Face routes require")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(args))


if __name__ == "__main__":
    main()
