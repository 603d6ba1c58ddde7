"""The dashboard's files: served with their content types, and nothing outside the folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.dashboard.static import STATIC_DIR, StaticFiles


@pytest.fixture
def files(tmp_path: Path) -> StaticFiles:
    root = tmp_path / "static"
    (root / "views").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>EdgeFleet</title>")
    (root / "app.js").write_text("export const x = 1;")
    (root / "views" / "fleet.js").write_text("export {};")
    (root / "style.css").write_text("body {}")
    (tmp_path / "secret.txt").write_text("not for the web")
    (root / "link.txt").symlink_to(tmp_path / "secret.txt")
    return StaticFiles(root)


def header(response: object, name: str) -> str:
    return dict(response.headers)[name]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("app.js", "text/javascript; charset=utf-8"),
        ("views/fleet.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("index.html", "text/html; charset=utf-8"),
    ],
)
def test_files_are_served_with_their_content_type_and_no_cache(
    files: StaticFiles, name: str, kind: str
) -> None:
    response = files.response(name)
    assert response.status == 200
    assert header(response, "content-type") == kind
    assert header(response, "cache-control") == "no-cache"
    assert "default-src 'self'" in header(response, "content-security-policy")


def test_the_index_is_the_page(files: StaticFiles) -> None:
    assert files.index().body.startswith(b"<!doctype html>")


@pytest.mark.parametrize(
    "name",
    [
        "../secret.txt",
        "%2e%2e/secret.txt",
        "views/../../secret.txt",
        "/etc/passwd",
        "link.txt",  # a link out of the folder
        "views",  # a folder
        "missing.js",
        "",
        "..\\secret.txt",
    ],
)
def test_nothing_outside_the_folder_is_served(files: StaticFiles, name: str) -> None:
    response = files.response(name)
    assert response.status == 404
    assert b"not for the web" not in response.body


def test_the_package_ships_its_static_folder() -> None:
    assert STATIC_DIR.is_dir()
    assert StaticFiles().file("api.js") is not None
