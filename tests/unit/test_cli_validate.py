"""`edgectl validate` and `edgectl schema`: output and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli.main import main
from orchestrator.manifest.schema import render_schema
from tests.conftest import MANIFESTS

BAD = """\
deployment:
  type: distributed-edge
  nodes:
    - id: "edge-1"
      models: ["m"]
      agents: ["a"]
    - id: "edge-1"
      models: ["m"]
  coordination:
    failover: sometimes
"""


@pytest.fixture
def bad_manifest(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD, encoding="utf-8")
    return path


def test_valid_manifests_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    files = ["single-device.yaml", "distributed-edge.yaml"]
    args = [arg for f in files for arg in ("-f", str(MANIFESTS / f))]
    assert main(["validate", *args]) == 0
    out = capsys.readouterr().out
    assert "single-device.yaml: valid — single-device `single-device`" in out
    assert "4 agent(s) on 2 node(s)" in out


def test_an_invalid_manifest_exits_1_with_located_errors(
    bad_manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["validate", "-f", str(MANIFESTS / "quickstart.yaml"), "-f", str(bad_manifest)])
    assert code == 1
    captured = capsys.readouterr()
    assert "quickstart.yaml: valid" in captured.out
    assert f"{bad_manifest}:10:15: error: `sometimes` is not allowed here" in captured.err
    assert "hint: allowed: automatic, manual, none" in captured.err
    assert "invalid (1 error(s))" in captured.err


def test_json_output_is_machine_readable(
    bad_manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", "-f", str(bad_manifest), "-o", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is False
    (result,) = report["files"]
    (error,) = result["errors"]
    assert error == {
        "file": str(bad_manifest),
        "line": 10,
        "column": 15,
        "path": "deployment.coordination.failover",
        "message": "`sometimes` is not allowed here",
        "hint": "allowed: automatic, manual, none",
        "severity": "error",
    }


def test_a_missing_file_is_an_invalid_manifest_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", "-f", str(tmp_path / "nope.yaml")]) == 1
    assert "cannot read the file" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["validate"])
    assert caught.value.code == 2
    with pytest.raises(SystemExit) as caught:
        main(["validate", "-f", "x.yaml", "-o", "xml"])
    assert caught.value.code == 2


def test_schema_prints_the_published_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert capsys.readouterr().out == render_schema()


def test_the_installed_entry_point_runs(bad_manifest: Path) -> None:
    edgectl = Path(sys.executable).parent / "edgectl"
    result = subprocess.run(
        [str(edgectl), "validate", "-f", str(bad_manifest)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "error: `sometimes` is not allowed here" in result.stderr
    assert "Traceback" not in result.stderr
