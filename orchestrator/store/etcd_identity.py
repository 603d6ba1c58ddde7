"""Who a controller on etcd is, and which cluster the keys it opens belong to.

The controller id is per controller, not per cluster: it lives in the
controller's own data folder (`controller-id`, 0600), made on first start. The
cluster's meta key records its name and the layout of its keys, written once by
the first controller and checked by every later one.
"""

from __future__ import annotations

import os
import uuid
from contextlib import suppress
from pathlib import Path

from orchestrator.etcd.client import EtcdClient
from orchestrator.etcd.txn import Compare, Op
from orchestrator.store import etcd_records as records
from orchestrator.store.errors import StoreError
from orchestrator.store.etcd_keys import ClusterKeys

CONTROLLER_ID_FILE = "controller-id"


def controller_id(data_dir: Path) -> str:
    """The id kept in `data_dir/controller-id`, made (0600) when missing or unreadable."""
    path = Path(data_dir) / CONTROLLER_ID_FILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise StoreError(
            f"cannot read {path}: {exc.strerror or exc}; check its permissions"
        ) from exc
    with suppress(ValueError):
        return str(uuid.UUID(text))
    made = str(uuid.uuid4())
    _write_private(path, made + "\n")
    return made


def check_meta(client: EtcdClient, keys: ClusterKeys, cluster_name: str) -> None:
    """Record the cluster in its meta key on first use; StoreError when it does not match."""
    meta = records.dump(records.meta(cluster_name))
    result = client.txn(
        [Compare.create_revision(keys.meta, "=", 0)],
        [Op.put(keys.meta, meta)],
        [Op.get(keys.meta)],
    )
    if result.succeeded:
        return
    (stored,) = result.gets[0]
    name, layout = records.load(stored.key, stored.value, records.meta_of)
    if layout > records.FORMAT:
        raise StoreError(
            f"the state of cluster {name!r} in etcd was written by a newer EdgeFleet (layout "
            f"{layout}, this one knows {records.FORMAT}); upgrade edgectl"
        )
    if name != cluster_name:
        raise StoreError(
            f"the etcd keys under {keys.prefix.decode()} belong to cluster {name!r}, not "
            f"{cluster_name!r}; start the controller with --cluster {name}"
        )


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path` (0600, its folder 0700) through a rename: whole or not at all."""
    partial = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except OSError as exc:
        raise StoreError(
            f"cannot write {path}: {exc.strerror or exc}; check that the data folder is "
            "writable by the user running the controller"
        ) from exc
