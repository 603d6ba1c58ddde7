"""What bench/gateway.py sends requests to: the upstream itself, or a proxy in front of it.

Each target has named routes (a chat-completions URL and the `model` to send)
and the processes whose CPU time counts as the proxy's:

* `direct` — the upstream's own URL; no proxy process;
* `edgefleet` — the controller's OpenAI gateway, which routes over gRPC to
  `edge-node` daemons whose `openai` runtime points at the upstream (the path a
  user's request takes); the controller and each node with a replica count, their model
  servers do not;
* `edgefleet-node` — one node's own gateway on loopback, as an app on the box
  calls it: the replica on the node is called in process (no gRPC hop); the
  node counts;
* `edgefleet-node-peer` — a node's gateway for aliases it has no replica of:
  each request goes to a peer node over mutual TLS gRPC (`gateway_peer`);
* `litellm` — LiteLLM's proxy, one worker, telemetry off, from `.venv-litellm`;
* `nginx` — nginx as a plain reverse proxy, one worker process (plus its master).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
import yaml
from gateway_load import API_KEY
from gateway_nginx import ReverseProxy

from edgefleet_common.ports import free_port
from tests.integration.controller_process import (
    ControllerProcess,
    smollm2_catalog,
    start_controller,
)
from tests.integration.node_process import NodeProcess, start_node

REPO = Path(__file__).resolve().parents[1]
LITELLM = REPO / ".venv-litellm" / "bin" / "litellm"
LLAMA_ALIAS = "smollm2-135m"
UPSTREAM_MODEL = "zero"
"""The model name the zero-latency upstream lists (it answers any)."""


@dataclass(frozen=True, slots=True)
class Route:
    """Where to POST a chat completion, and the `model` to name."""

    url: str
    model: str


@dataclass
class Target:
    """A named set of routes and the processes that do the proxy's work."""

    name: str
    routes: dict[str, Route]
    pids: list[int] = field(default_factory=list)
    with_children: bool = False
    """Count the processes' children too (not for edge-nodes: those are model servers)."""

    def processes(self) -> list[psutil.Process]:
        """The proxy's processes now."""
        found: list[psutil.Process] = []
        for pid in self.pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                process = psutil.Process(pid)
                found.append(process)
                if self.with_children:
                    found += process.children(recursive=True)
        return found

    def close(self) -> None:
        """Stop what the target started (idempotent)."""


def host_port(url: str) -> str:
    """`HOST:PORT` of a URL."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


def direct(upstreams: Mapping[str, str]) -> Target:
    """The upstreams themselves; `upstreams` maps a route to a base URL (…/v1)."""
    routes = {
        name: Route(f"{url}/chat/completions", LLAMA_ALIAS if name == "llama" else UPSTREAM_MODEL)
        for name, url in upstreams.items()
    }
    return Target("direct", routes)


# -- nginx --------------------------------------------------------------------------------


@dataclass
class NginxTarget(Target):
    """nginx as a reverse proxy."""

    proxy: ReverseProxy | None = None

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.close()


def start_nginx(folder: Path, upstreams: Mapping[str, Sequence[str]]) -> NginxTarget:
    """One listen port per route, passing to that route's upstream base URLs."""
    ports = {name: free_port() for name in upstreams}
    proxy = ReverseProxy(
        folder, {ports[name]: [host_port(u) for u in urls] for name, urls in upstreams.items()}
    )
    routes = {
        name: Route(
            f"http://127.0.0.1:{ports[name]}/v1/chat/completions",
            LLAMA_ALIAS if name == "llama" else UPSTREAM_MODEL,
        )
        for name in upstreams
    }
    return NginxTarget("nginx", routes, [proxy.process.pid], with_children=True, proxy=proxy)


# -- EdgeFleet ----------------------------------------------------------------------------


@dataclass
class EdgeFleetTarget(Target):
    """A controller with its gateway and the edge-nodes behind it."""

    controller: ControllerProcess | None = None
    nodes: list[NodeProcess] = field(default_factory=list)
    node_gateways: dict[str, str] = field(default_factory=dict)
    """Node id → the base URL (…/v1) of its own gateway, on loopback."""

    def close(self) -> None:
        if self.controller is not None:
            self.controller.close()
        for node in self.nodes:
            node.close()

    def llama_port(self) -> int:
        """The port of the llama.cpp server a node started for the SmolLM2 alias."""
        for node in self.nodes:
            for server in node.runtime_servers():
                command = server.cmdline()
                return int(command[command.index("--port") + 1])
        raise RuntimeError("no llama.cpp server under any node")


def node_catalog(path: Path, upstreams: Mapping[str, str], llama: bool) -> Path:
    """A catalog binding each alias to an upstream base URL (runtime `openai`), and the
    SmolLM2 alias to llama.cpp when `llama`."""
    catalog: dict[str, Any] = yaml.safe_load(smollm2_catalog(path, [LLAMA_ALIAS]).read_text())
    if not llama:
        catalog["models"] = {}
    for alias, url in upstreams.items():
        catalog["models"][alias] = {"runtime": "openai", "source": UPSTREAM_MODEL, "url": url}
    path.write_text(yaml.safe_dump(catalog))
    return path


def start_edgefleet(
    folder: Path,
    nodes: Mapping[str, Mapping[str, str]],
    routes: Mapping[str, str],
    llama_node: str | None = None,
    timeout: float = 180.0,
) -> EdgeFleetTarget:
    """Edge-nodes (`nodes`: node id → alias → upstream base URL), a controller with its
    gateway, and one distributed-edge deployment loading every alias where it is bound
    (a node bound to none is in it with no model: it serves only through its gateway).
    `routes` maps a route name to the alias it requests. Returns once every alias has
    its replicas ready."""
    target = EdgeFleetTarget("edgefleet", {})
    try:
        placed: dict[str, list[str]] = {}
        for node_id, upstreams in nodes.items():
            work = folder / node_id
            work.mkdir(parents=True)
            llama = node_id == llama_node
            catalog = node_catalog(work / "catalog.yaml", upstreams, llama)
            gateway_port = free_port()
            node = start_node(
                node_id,
                work / "data",
                catalog=catalog,
                extra_args=["--gateway-listen", f"127.0.0.1:{gateway_port}"],
            )
            target.nodes.append(node)
            target.node_gateways[node_id] = f"http://127.0.0.1:{gateway_port}/v1"
            placed[node_id] = [*upstreams, *([LLAMA_ALIAS] if llama else [])]
        addresses = {n.node_id: n.address for n in target.nodes}
        target.controller = start_controller(folder / "controller", nodes=addresses, gateway=True)
        manifest = {
            "deployment": {
                "type": "distributed-edge",
                "name": "gateway-bench",
                "nodes": [
                    {"id": node_id, "address": addresses[node_id], "models": aliases}
                    for node_id, aliases in placed.items()
                ],
            }
        }
        path = folder / "manifest.yaml"
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
        target.controller.edgectl("apply", "-f", str(path))
        wanted: dict[str, int] = {}
        for aliases in placed.values():
            for alias in aliases:
                wanted[alias] = wanted.get(alias, 0) + 1
        wait_ready(target.controller.gateway_url, wanted, timeout)
        # A node with nothing placed only fronts other nodes (the peer target counts it).
        serving = [n.pid for n in target.nodes if placed[n.node_id]]
        target.pids = [target.controller.process.pid, *serving]
        base = target.controller.gateway_url
        target.routes = {
            name: Route(f"{base}/chat/completions", alias) for name, alias in routes.items()
        }
    except BaseException:
        target.close()
        raise
    return target


def node_gateway(
    edgefleet: EdgeFleetTarget, node_id: str, routes: Mapping[str, str], timeout: float = 60.0
) -> Target:
    """`node_id`'s own gateway as a target (`routes`: route name → alias), once it lists
    each alias with a ready replica (it routes from the table the controller pushes)."""
    base = edgefleet.node_gateways[node_id]
    wait_ready(base, dict.fromkeys(routes.values(), 1), timeout)
    node = next(n for n in edgefleet.nodes if n.node_id == node_id)
    return Target(
        "edgefleet-node",
        {name: Route(f"{base}/chat/completions", alias) for name, alias in routes.items()},
        [node.pid],
    )


def wait_ready(gateway_url: str, wanted: Mapping[str, int], timeout: float) -> None:
    """Until the gateway at `gateway_url` (…/v1) lists every alias with its wanted count of
    ready replicas."""
    deadline = time.monotonic() + timeout
    seen: dict[str, int] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            answer = httpx.get(f"{gateway_url}/models", timeout=5).json()
            seen = {m["id"]: m.get("ready_replicas", 0) for m in answer.get("data", [])}
            if all(seen.get(alias, 0) >= count for alias, count in wanted.items()):
                return
        time.sleep(0.25)
    raise RuntimeError(f"not ready within {timeout:.0f}s: {seen}, wanted {dict(wanted)}\n")


# -- LiteLLM ------------------------------------------------------------------------------

LITELLM_ENV = {
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOG": "ERROR",
    "LITELLM_MODE": "PRODUCTION",
}
"""No telemetry, the bundled model cost map (no fetch), errors only in the log, no .env."""

ROUTER_SETTINGS = {"num_retries": 3, "allowed_fails": 3, "cooldown_time": 30}
"""LiteLLM's documented reliability settings: retries, and cooling a failing deployment."""


@dataclass
class LiteLLMTarget(Target):
    """LiteLLM's proxy in its own process (one worker)."""

    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            for child in self.processes()[1:]:
                with contextlib.suppress(psutil.Error):
                    child.kill()
            self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)

    def log(self) -> str:
        """The end of its log."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-4000:]


def litellm_version() -> str:
    """The installed LiteLLM's version, or why there is none."""
    python = LITELLM.parent / "python"
    if not python.exists():
        return "not installed"
    done = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout.strip() or "unknown"


def litellm_config(models: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """LiteLLM proxy settings: each model name served by its upstream base URLs."""
    model_list = [
        {
            "model_name": name,
            "litellm_params": {
                "model": f"openai/{LLAMA_ALIAS if name == LLAMA_ALIAS else UPSTREAM_MODEL}",
                "api_base": url,
                "api_key": "unused",
            },
            # Zero rates mark a self-hosted model free, as LiteLLM's own warning advises;
            # without them every answer also runs its zero-cost diagnosis.
            "model_info": {"input_cost_per_token": 0, "output_cost_per_token": 0},
        }
        for name, urls in models.items()
        for url in urls
    ]
    return {
        "model_list": model_list,
        "litellm_settings": {"telemetry": False},
        "general_settings": {"master_key": API_KEY},
        "router_settings": ROUTER_SETTINGS,
    }


def start_litellm(
    folder: Path,
    models: Mapping[str, Sequence[str]],
    routes: Mapping[str, str],
    timeout: float = 180.0,
) -> LiteLLMTarget:
    """LiteLLM's proxy on a free loopback port; `models` maps a model name to upstream base
    URLs, `routes` a route name to the model name it requests."""
    if not LITELLM.exists():
        raise RuntimeError(f"{LITELLM} is missing: run scripts/bench-setup")
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "litellm.yaml"
    config.write_text(yaml.safe_dump(litellm_config(models), sort_keys=False))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(LITELLM_ENV)
    log_path = folder / "litellm.log"
    argv = [
        str(LITELLM), "--config", str(config), "--host", "127.0.0.1",
        "--port", str(port), "--num_workers", "1",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    target = LiteLLMTarget(
        "litellm",
        {name: Route(f"{base}/v1/chat/completions", model) for name, model in routes.items()},
        [process.pid],
        with_children=True,
        process=process,
        log_path=log_path,
    )
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/health/liveliness", timeout=2).status_code == 200:
                return target
        if process.poll() is not None or time.monotonic() > deadline:
            target.close()
            raise RuntimeError(f"LiteLLM did not start within {timeout:.0f}s\n{target.log()}")
        time.sleep(0.5)
