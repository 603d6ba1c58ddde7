"""nginx for bench/gateway.py: a zero-latency OpenAI-compatible upstream and a plain proxy.

Both run in the foreground (`daemon off`) with their own prefix, configuration,
pid and logs in a temporary folder, listening on 127.0.0.1 only.

* `Upstream` answers at once with canned bytes: on one port a `chat.completion`
  JSON, on another a `text/event-stream` of chunks ending in `[DONE]`, and
  `GET /v1/models` on both. One process (`master_process off`), so SIGKILL takes
  all of it down, as a crashed model server would go.
* `ReverseProxy` passes each of its listen ports to a group of upstream servers
  (keep-alive connections, response buffering off so events stream through); with
  two servers in a group, nginx's own failover (`proxy_next_upstream error
  timeout`, its default) applies.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

MODEL = "zero"
CREATED = 1_700_000_000
REPLY = "Hello."


def completion() -> dict[str, Any]:
    """The canned non-streamed answer."""
    return {
        "id": "chatcmpl-zero",
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": REPLY},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
    }


def event_stream() -> str:
    """The canned streamed answer: role, content, finish with usage, `[DONE]`."""

    def chunk(delta: dict[str, str], finish: str | None, **extra: Any) -> str:
        body = {
            "id": "chatcmpl-zero",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"

    usage = completion()["usage"]
    return (
        chunk({"role": "assistant", "content": ""}, None)
        + chunk({"content": REPLY}, None)
        + chunk({}, "stop", usage=usage)
        + "data: [DONE]\n\n"
    )


def _quoted(text: str) -> str:
    """`text` as a single-quoted nginx string."""
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return f"'{escaped}'"


def _main_block(folder: Path, single_process: bool) -> str:
    lines = [
        "daemon off;",
        f"pid {folder}/nginx.pid;",
        "worker_processes 1;",
        "events { worker_connections 8192; }",
    ]
    if single_process:
        lines.insert(1, "master_process off;")
    return "\n".join(lines) + "\n"


def _http_common(folder: Path) -> str:
    temp = " ".join(
        f"{kind}_temp_path {folder}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"access_log off; error_log {folder}/error.log warn; {temp}\n"
        "keepalive_requests 10000000; keepalive_timeout 75s;\n"
    )


def upstream_conf(folder: Path, json_port: int, sse_port: int) -> str:
    """An nginx configuration that answers chat completions at once, from memory."""
    models = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]})
    answer = json.dumps(completion(), separators=(",", ":"))

    def server(port: int, content_type: str, body: str) -> str:
        return (
            f"  server {{ listen 127.0.0.1:{port};\n"
            f"    location = /v1/models {{ default_type application/json; "
            f"return 200 {_quoted(models)}; }}\n"
            f"    location / {{ default_type {content_type}; return 200 {_quoted(body)}; }}\n"
            "  }\n"
        )

    return (
        _main_block(folder, single_process=True)
        + "http {\n"
        + _http_common(folder)
        + server(json_port, "application/json", answer)
        + server(sse_port, "text/event-stream", event_stream())
        + "}\n"
    )


def proxy_conf(folder: Path, routes: Mapping[int, Sequence[str]]) -> str:
    """A reverse proxy: each listen port passes to its group of `HOST:PORT` servers."""
    blocks = []
    for port, servers in sorted(routes.items()):
        members = " ".join(f"server {address};" for address in servers)
        blocks.append(
            f"  upstream group_{port} {{ {members} keepalive 128; }}\n"
            f"  server {{ listen 127.0.0.1:{port};\n"
            f"    location / {{ proxy_pass http://group_{port}; proxy_http_version 1.1;\n"
            '      proxy_set_header Connection ""; proxy_buffering off; }\n'
            "  }\n"
        )
    return (
        _main_block(folder, single_process=False)
        + "http {\n"
        + _http_common(folder)
        + "".join(blocks)
        + "}\n"
    )


def nginx_binary() -> str:
    """The nginx executable (Debian installs it in /usr/sbin)."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise RuntimeError("nginx is not installed: run scripts/bench-setup as root")
    return found


def version() -> str:
    """`nginx -v`, e.g. `1.22.1`."""
    done = subprocess.run(
        [nginx_binary(), "-v"], capture_output=True, text=True, timeout=10, check=False
    )
    return done.stderr.strip().rsplit("/", 1)[-1]


def wait_listening(ports: Sequence[int], process: subprocess.Popen[bytes], timeout: float) -> None:
    """Until every port accepts a connection (RuntimeError if the process ends first)."""
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"process {process.args!r} is not listening on {port}")
            time.sleep(0.02)


class Nginx:
    """One nginx started on a configuration of its own; `close` ends it."""

    def __init__(self, folder: Path, conf: str, ports: Sequence[int]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "nginx.conf").write_text(conf)
        self.folder = folder
        self.ports = list(ports)
        argv = [
            nginx_binary(),
            "-p", str(folder),
            "-c", str(folder / "nginx.conf"),
            "-e", str(folder / "error.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_listening(self.ports, self.process, 10.0)
        except RuntimeError as exc:
            self.close()
            log = folder / "error.log"
            raise RuntimeError(f"{exc}\n{log.read_text() if log.exists() else ''}") from None

    def processes(self) -> list[psutil.Process]:
        """The master and its workers (or the single process)."""
        main = psutil.Process(self.process.pid)
        return [main, *main.children(recursive=True)]

    def kill(self) -> None:
        """SIGKILL every process of it at once, as a crash would."""
        for process in self.processes():
            with contextlib.suppress(psutil.Error):
                process.kill()
        self.process.wait(10)

    def close(self) -> None:
        """Stop it (idempotent): a fast shutdown, in which the master reaps its workers."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class Upstream(Nginx):
    """The zero-latency OpenAI-compatible upstream: a JSON port and a streaming port."""

    def __init__(self, folder: Path, json_port: int, sse_port: int) -> None:
        super().__init__(folder, upstream_conf(folder, json_port, sse_port), [json_port, sse_port])
        self.json_url = f"http://127.0.0.1:{json_port}/v1"
        self.sse_url = f"http://127.0.0.1:{sse_port}/v1"


class ReverseProxy(Nginx):
    """nginx as a plain reverse proxy; `routes` maps a listen port to its servers."""

    def __init__(self, folder: Path, routes: Mapping[int, Sequence[str]]) -> None:
        super().__init__(folder, proxy_conf(folder, routes), list(routes))
