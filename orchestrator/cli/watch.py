"""`apply --watch PATH`: re-apply manifests as they are edited, delete what a removed file applied.

`ManifestWatcher` holds the logic and knows nothing of file-system events or
gRPC: it is given `apply` and `delete` functions. `Debouncer` turns the burst
of events an editor's save makes into one change per file. `watch` is the thin
watchdog glue around both; `interruptible` makes sure Ctrl-C can end it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from orchestrator.cli.client import error_text
from orchestrator.cli.console import Consoles
from orchestrator.cli.manifests import SUFFIXES, load_reporting, manifest_files
from orchestrator.errors import EdgeFleetError
from orchestrator.manifest import LoadedManifest

DEBOUNCE_S = 0.3
_TICK_S = 0.05
OBSERVER_STOP_S = 2.0
"""How long stopping waits for the file-system observer's threads."""

ApplyFn = Callable[[LoadedManifest], str]
"""Applies a valid manifest; returns the name of the deployment it applied."""
DeleteFn = Callable[[str], None]


class ManifestWatcher:
    """Keeps the controller in step with the manifests under one file or folder."""

    def __init__(self, root: Path, apply: ApplyFn, delete: DeleteFn, consoles: Consoles) -> None:
        self.root = root
        self.applied: dict[Path, str] = {}
        """The deployment each file (by absolute path) last applied, for deleting it later."""
        self._texts: dict[Path, str] = {}
        # Decided once: a watched file is briefly missing while an editor replaces it.
        self._single_file = root.is_file()
        self._apply = apply
        self._delete = delete
        self._consoles = consoles

    def wants(self, path: Path) -> bool:
        """Whether a path is one of the watched manifests (editors' temp files are not)."""
        root = self.root.absolute()
        if self._single_file:
            return path.absolute() == root
        return path.absolute().parent == root and path.suffix in SUFFIXES

    def apply_all(self) -> None:
        """Apply every manifest once, as the watch starts."""
        for path in manifest_files(self.root):
            self.on_change(path)

    def changed(self, path: Path) -> None:
        """A debounced event: the file is there (changed) or gone (removed)."""
        if path.is_file():
            self.on_change(path)
        else:
            self.on_remove(path)

    def on_change(self, path: Path) -> None:
        """Validate and apply; an invalid file is reported and changes nothing."""
        loaded = load_reporting(str(path), self._consoles)
        if loaded is None:
            self._consoles.err.print(f"{path}: not applied", markup=False)
            return
        key = path.absolute()
        if self._texts.get(key) == loaded.text:
            return  # saved again without a change
        try:
            name = self._apply(loaded)
        except EdgeFleetError as exc:
            self._consoles.err.print(error_text(exc), markup=False)
            return
        previous = self.applied.get(key)
        self.applied[key] = name
        self._texts[key] = loaded.text
        if previous is not None and previous != name:
            # The file now declares another deployment: the old one went with the edit.
            self._delete_unless_declared(previous)

    def on_remove(self, path: Path) -> None:
        """Delete the deployment the file had applied, unless another file still declares it."""
        self._texts.pop(path.absolute(), None)
        name = self.applied.pop(path.absolute(), None)
        if name is not None:
            self._delete_unless_declared(name)

    def _delete_unless_declared(self, name: str) -> None:
        others = sorted(str(p) for p, other in self.applied.items() if other == name)
        if others:
            self._consoles.err.print(
                f"deployment {name}: kept, still declared by {', '.join(others)}", markup=False
            )
            return
        try:
            self._delete(name)
        except EdgeFleetError as exc:
            self._consoles.err.print(error_text(exc), markup=False)


class Debouncer:
    """Paths that changed, released once they have been quiet for `delay` seconds."""

    def __init__(
        self, delay: float = DEBOUNCE_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._delay = delay
        self._clock = clock
        self._pending: dict[Path, float] = {}
        self._lock = threading.Lock()  # events arrive on watchdog's thread

    def add(self, path: Path) -> None:
        """Note a change; a path changing again restarts its quiet period."""
        with self._lock:
            self._pending[path] = self._clock()

    def take_due(self) -> list[Path]:
        """The paths quiet for long enough, in the order they last changed."""
        now = self._clock()
        with self._lock:
            due = sorted((t, p) for p, t in self._pending.items() if now - t >= self._delay)
            for _, path in due:
                del self._pending[path]
        return [path for _, path in due]


class _Events(FileSystemEventHandler):
    """Forwards events about watched manifests to the debouncer."""

    def __init__(self, watcher: ManifestWatcher, debouncer: Debouncer) -> None:
        self._watcher = watcher
        self._debouncer = debouncer

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type in ("opened", "closed_no_write"):
            return
        paths = [event.src_path, *([event.dest_path] if event.event_type == "moved" else [])]
        for raw in paths:
            path = Path(raw if isinstance(raw, str) else raw.decode())
            if self._watcher.wants(path):
                self._debouncer.add(path)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Ctrl-C (SIGINT) raises KeyboardInterrupt while the block runs, wherever the main
    thread is: in a wait, or in a gRPC call (which checks for signals while it waits).

    Needed because a process started with SIGINT ignored keeps ignoring it: a shell
    without job control starts background jobs so, and Python then installs no
    handler. Elsewhere than on the main thread this changes nothing (signals are
    handled there only).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def watch(
    watcher: ManifestWatcher,
    consoles: Consoles,
    delay: float = DEBOUNCE_S,
    stop: threading.Event | None = None,
) -> int:
    """Apply everything, then follow changes until `stop` is set (returns 0).

    Ctrl-C raises KeyboardInterrupt out of it, for the caller to report; the
    file-system observer is stopped either way.
    """
    root = watcher.root
    debouncer = Debouncer(delay)
    observer = Observer()
    # A single file is watched through its folder: editors replace files on save.
    folder = root if root.is_dir() else root.parent
    observer.schedule(_Events(watcher, debouncer), str(folder), recursive=False)
    stop = stop or threading.Event()
    try:
        # Watch first, then apply: an edit saved while the first apply runs is not lost.
        observer.start()
        watcher.apply_all()
        consoles.err.print(f"watching {root} for changes (Ctrl-C to stop)", markup=False)
        while not stop.wait(_TICK_S):
            for path in debouncer.take_due():
                watcher.changed(path)
    finally:
        observer.stop()
        # Bounded: watchdog's threads are daemons, so one slow to stop cannot keep the
        # process alive, and Ctrl-C must end it promptly.
        if observer.is_alive():
            observer.join(OBSERVER_STOP_S)
    return 0
