"""`edgectl apply --watch`: the watcher's logic driven directly, the debouncer, and the glue."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from rich.console import Console

from orchestrator.cli import apply_command, delete_command
from orchestrator.cli.client import Controller, resolve_address
from orchestrator.cli.console import Consoles
from orchestrator.cli.main import main
from orchestrator.cli.watch import Debouncer, ManifestWatcher, interruptible, watch
from orchestrator.manifest import LoadedManifest
from tests.conftest import MANIFESTS
from tests.fakes.controller_api import FakeControllerApi


@pytest.fixture
def api() -> Iterator[FakeControllerApi]:
    with FakeControllerApi.serving() as fake:
        yield fake


@pytest.fixture
def consoles() -> Consoles:
    return Consoles(
        out=Console(file=_Text(), width=200, highlight=False),
        err=Console(file=_Text(), width=200, highlight=False),
    )


class _Text:
    """A file a Console writes to, read back with str()."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return len(text)

    def flush(self) -> None:
        return None

    def __str__(self) -> str:
        return "".join(self.parts)


def err(consoles: Consoles) -> str:
    return str(consoles.err.file)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    shutil.copy(MANIFESTS / "distributed-edge.yaml", tmp_path / "fleet.yaml")
    shutil.copy(MANIFESTS / "quickstart.yaml", tmp_path / "quickstart.yml")
    (tmp_path / "README.txt").write_text("not a manifest", encoding="utf-8")
    return tmp_path


@pytest.fixture
def watcher(api: FakeControllerApi, folder: Path, consoles: Consoles) -> Iterator[ManifestWatcher]:
    with Controller.connect(resolve_address(api.address, {})) as controller:

        def apply(loaded: LoadedManifest) -> str:
            response = apply_command.apply_manifest(controller, loaded, consoles)
            return response.revision.deployment

        def delete(name: str) -> None:
            delete_command.delete_deployment(controller, name, consoles)

        yield ManifestWatcher(folder, apply, delete, consoles)


def test_everything_is_applied_once_at_start(
    api: FakeControllerApi, watcher: ManifestWatcher, folder: Path
) -> None:
    watcher.apply_all()
    assert [r.source for r in api.requests("Apply")] == [
        str(folder / "fleet.yaml"),
        str(folder / "quickstart.yml"),
    ]
    assert sorted(watcher.applied.values()) == ["fleet", "quickstart"]


def test_a_valid_edit_is_applied(
    api: FakeControllerApi, watcher: ManifestWatcher, folder: Path
) -> None:
    watcher.apply_all()
    fleet = folder / "fleet.yaml"
    fleet.write_text(
        fleet.read_text(encoding="utf-8").replace("failover: automatic", "failover: manual"),
        encoding="utf-8",
    )
    watcher.changed(fleet)
    assert len(api.requests("Apply")) == 3
    assert api.requests("Apply")[-1].manifest == fleet.read_text(encoding="utf-8")
    assert [r.number for r in api.revisions["fleet"]] == [1, 2]


def test_saving_without_a_change_sends_nothing(
    api: FakeControllerApi, watcher: ManifestWatcher, folder: Path
) -> None:
    watcher.apply_all()
    watcher.changed(folder / "fleet.yaml")
    assert len(api.requests("Apply")) == 2


def test_an_invalid_edit_is_reported_and_never_applied(
    api: FakeControllerApi, watcher: ManifestWatcher, folder: Path, consoles: Consoles
) -> None:
    watcher.apply_all()
    fleet = folder / "fleet.yaml"
    fleet.write_text(
        fleet.read_text(encoding="utf-8").replace("failover: automatic", "failover: sometimes"),
        encoding="utf-8",
    )
    watcher.changed(fleet)
    assert len(api.requests("Apply")) == 2
    assert f"{fleet}:12:15: error: `sometimes` is not allowed here" in err(consoles)
    assert f"{fleet}: invalid (1 error(s))\n{fleet}: not applied\n" in err(consoles)
    assert watcher.applied[fleet] == "fleet"  # what runs is still the last valid revision


def test_a_removed_file_deletes_the_deployment_it_applied(
    api: FakeControllerApi, watcher: ManifestWatcher, folder: Path
) -> None:
    watcher.apply_all()
    (folder / "quickstart.yml").unlink()
    watcher.changed(folder / "quickstart.yml")
    assert [r.deployment for r in api.requests("Delete")] == ["quickstart"]
    assert sorted(api.revisions) == ["fleet"]
    assert sorted(watcher.applied.values()) == ["fleet"]


def test_renaming_the_deployment_in_a_file_deletes_the_old_one(
    api: FakeControllerApi, watcher: ManifestWatcher, folder: Path
) -> None:
    watcher.apply_all()
    quickstart = folder / "quickstart.yml"
    quickstart.write_text(
        quickstart.read_text(encoding="utf-8").replace("name: quickstart", "name: kiosk"),
        encoding="utf-8",
    )
    watcher.changed(quickstart)
    assert [r.deployment for r in api.requests("Delete")] == ["quickstart"]
    assert sorted(api.revisions) == ["fleet", "kiosk"]


def test_a_deployment_two_files_declare_survives_removing_one(
    api: FakeControllerApi, watcher: ManifestWatcher, folder: Path, consoles: Consoles
) -> None:
    shutil.copy(folder / "quickstart.yml", folder / "quickstart-copy.yaml")
    watcher.apply_all()
    (folder / "quickstart.yml").unlink()
    watcher.changed(folder / "quickstart.yml")
    assert api.requests("Delete") == []
    assert "deployment quickstart: kept, still declared by" in err(consoles)


def test_a_refused_apply_is_reported_and_watching_goes_on(
    api: FakeControllerApi, watcher: ManifestWatcher, folder: Path, consoles: Consoles
) -> None:
    api.refuse["Apply"] = (grpc.StatusCode.FAILED_PRECONDITION, "store is read-only")
    watcher.apply_all()
    assert err(consoles).count("error: store is read-only") == 2
    assert watcher.applied == {}
    del api.refuse["Apply"]
    watcher.changed(folder / "fleet.yaml")
    assert watcher.applied == {(folder / "fleet.yaml").absolute(): "fleet"}


def test_only_manifests_in_the_folder_are_watched(watcher: ManifestWatcher, folder: Path) -> None:
    assert watcher.wants(folder / "new.yaml")
    assert watcher.wants(folder / "new.yml")
    assert not watcher.wants(folder / "fleet.yaml.swp")
    assert not watcher.wants(folder / "4913")
    assert not watcher.wants(folder / "sub" / "x.yaml")


def test_the_debouncer_releases_a_path_once_it_is_quiet() -> None:
    now = [0.0]
    debouncer = Debouncer(0.3, clock=lambda: now[0])
    debouncer.add(Path("a.yaml"))
    now[0] = 0.2
    debouncer.add(Path("a.yaml"))  # an editor's second write restarts the quiet period
    debouncer.add(Path("b.yaml"))
    now[0] = 0.4
    assert debouncer.take_due() == []
    now[0] = 0.5
    assert debouncer.take_due() == [Path("a.yaml"), Path("b.yaml")]
    assert debouncer.take_due() == []


def test_the_watchdog_glue_applies_edits_and_deletes_on_removal(
    api: FakeControllerApi, watcher: ManifestWatcher, folder: Path, consoles: Consoles
) -> None:
    stop = threading.Event()
    runner = threading.Thread(target=watch, args=(watcher, consoles, 0.05, stop))
    runner.start()
    try:
        _until(lambda: len(api.requests("Apply")) == 2)
        fleet = folder / "fleet.yaml"
        fleet.write_text(
            fleet.read_text(encoding="utf-8").replace("failover: automatic", "failover: none"),
            encoding="utf-8",
        )
        _until(lambda: len(api.requests("Apply")) == 3)
        (folder / "quickstart.yml").unlink()
        _until(lambda: len(api.requests("Delete")) == 1)
    finally:
        stop.set()
        runner.join(5)
    assert "watching" in err(consoles)


def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_apply_watch_rejects_a_missing_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["apply", "--watch", "/nonexistent/manifests"]) == 2
    assert "no such file or folder to watch" in capsys.readouterr().err


def test_a_single_watched_file_stays_watched_while_an_editor_replaces_it(
    folder: Path, consoles: Consoles
) -> None:
    fleet = folder / "fleet.yaml"
    watcher = ManifestWatcher(
        fleet, lambda loaded: loaded.desired.name, lambda name: None, consoles
    )
    fleet.unlink()
    assert watcher.wants(fleet)
    assert not watcher.wants(folder / "quickstart.yml")


def test_ctrl_c_interrupts_the_watch_even_when_the_process_started_ignoring_it() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a background job starts
    try:
        with pytest.raises(KeyboardInterrupt), interruptible():
            signal.raise_signal(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN, "restored afterwards"
    finally:
        signal.signal(signal.SIGINT, previous)
