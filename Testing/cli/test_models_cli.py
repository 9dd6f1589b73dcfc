"""``regseg models`` end to end on a temporary ``REGSEG_HOME``: list, info, import, verify, remove and download, their
output and exit codes (0 success, 2 one line ``regseg: error: ...``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model_files import RangeServer, entry_for, flip_byte, write_model
from RegSegLib import cli
from RegSegLib.models.manifest import file_sha256


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """An empty user store, and a shipped folder that ships nothing (the shipped models have their own test)."""
    from RegSegLib.models import store

    monkeypatch.setenv("REGSEG_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(store, "SHIPPED_FOLDER", tmp_path / "nothing-shipped")
    return tmp_path / "home"


def test_the_shipped_gland_models_are_listed_and_verify(capsys, monkeypatch):
    from RegSegLib.models import store

    monkeypatch.setattr(store, "SHIPPED_FOLDER", Path(store.__file__).parent / "shipped")
    code, out, _ = run(capsys, "list", "--task", "segmentation", "--json")
    listed = json.loads(out)
    assert code == 0 and [(m["name"], m["shipped"]) for m in listed] == [("regseg-prostate-gland-mr", True), ("regseg-prostate-gland-us", True)]
    assert all(Path(m["path"]).parent == store.SHIPPED_FOLDER for m in listed)
    assert run(capsys, "verify") == (0, "ok regseg-prostate-gland-mr (shipped)\nok regseg-prostate-gland-us (shipped)\n", "")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["models", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_json_is_an_empty_list_on_an_empty_store(capsys, home):
    assert run(capsys, "list", "--json") == (0, "[]\n", "")
    assert run(capsys, "list") == (0, f"no models (installed ones go to {home / 'models'})\n", "")
    assert run(capsys, "verify") == (0, "no models to verify\n", "")


def test_import_list_info_verify_remove(capsys, tmp_path, home):
    weights, entry = write_model(tmp_path / "offline", "brain-affine")
    _, seg = write_model(tmp_path / "offline", "prostate-seg", task="segmentation", seed=1)
    installed = home / "models" / "brain-affine.pt"
    assert run(capsys, "import", str(weights)) == (0, f"regseg: installed brain-affine 1.2.0 (affine) as {installed}\n", "")
    code, out, _ = run(capsys, "import", str(tmp_path / "offline" / "prostate-seg.json"))
    assert code == 0 and out.startswith("regseg: installed prostate-seg 1.2.0 (segmentation)")

    code, out, _ = run(capsys, "list", "--json")
    listed = json.loads(out)
    assert code == 0 and [(m["name"], m["task"], m["version"], m["sha256"]) for m in listed] == [
        ("brain-affine", "affine", "1.2.0", entry.sha256),
        ("prostate-seg", "segmentation", "1.2.0", seg.sha256),
    ]
    assert listed[0]["shipped"] is False and listed[0]["path"] == str(installed)
    assert [m["name"] for m in json.loads(run(capsys, "list", "--task", "segmentation", "--json")[1])] == ["prostate-seg"]
    code, out, _ = run(capsys, "list")
    assert out.splitlines() == [
        "NAME          TASK          VERSION  LICENCE    SOURCE",
        "brain-affine  affine        1.2.0    CC-BY-4.0  installed",
        "prostate-seg  segmentation  1.2.0    CC-BY-4.0  installed",
    ]

    code, out, _ = run(capsys, "info", "brain-affine")
    assert code == 0 and out.splitlines()[:2] == ["brain-affine 1.2.0 (affine, installed)", "licence: CC-BY-4.0"]
    assert "metrics: dice_mean 0.8125, hd95_mm 3.5, folding_percent 0.016, seconds 2.7" in out
    assert json.loads(run(capsys, "info", "brain-affine", "--json")[1])["input"]["spacing_mm"] == [2.0, 2.0, 2.0]

    assert run(capsys, "verify") == (0, "ok brain-affine (installed)\nok prostate-seg (installed)\n", "")
    flip_byte(installed, 200)
    code, out, err = run(capsys, "verify")
    assert (code, out) == (2, "ok prostate-seg (installed)\n")
    assert err == (
        f"regseg: error: {installed}: sha256 is {file_sha256(installed)} but the manifest entry of model "
        f"'brain-affine' says {entry.sha256}\n"
    )

    assert run(capsys, "remove", "brain-affine") == (0, f"regseg: removed brain-affine 1.2.0 ({installed})\n", "")
    assert not installed.exists()
    code, out, err = run(capsys, "remove", "brain-affine")
    assert (code, out) == (2, "")
    assert err.startswith("regseg: error: no model named 'brain-affine'") and err.count("\n") == 1


def test_import_errors_are_one_line_with_exit_code_2(capsys, tmp_path):
    weights, entry = write_model(tmp_path, "m", sidecar=False)
    code, out, err = run(capsys, "import", str(weights))
    assert (code, out) == (2, "")
    assert err == f"regseg: error: {weights}: no manifest entry: put it in m.json beside the file (one JSON object)\n"
    sidecar = tmp_path / "entry.json"
    sidecar.write_text(json.dumps({**entry.to_dict(), "task": "registration"}))
    code, _, err = run(capsys, "import", str(weights), "--entry", str(sidecar))
    assert code == 2 and err.startswith(f"regseg: error: {sidecar}: model 'm': unknown task 'registration'")
    sidecar.write_text(json.dumps(entry.to_dict()))
    assert run(capsys, "import", str(weights), "--entry", str(sidecar))[0] == 0
    code, _, err = run(capsys, "import", str(weights), "--entry", str(sidecar))
    assert (code, err) == (2, "regseg: error: model 'm' is installed already; remove it first or replace it\n")
    assert run(capsys, "import", str(weights), "--entry", str(sidecar), "--replace")[0] == 0
    absent = tmp_path / "absent.pt"
    assert run(capsys, "import", str(absent)) == (2, "", f"regseg: error: {absent}: file not found\n")


def test_usage_errors_exit_with_2(capsys):
    assert cli.main(["models"]) == 2
    assert cli.main(["models", "list", "--task", "detection"]) == 2
    assert "invalid choice: 'detection'" in capsys.readouterr().err


def test_download_with_progress_lines(capsys, tmp_path, home):
    weights, _ = write_model(tmp_path / "served", "remote-elastic", task="elastic")
    with RangeServer({"/remote-elastic.pt": weights.read_bytes()}) as server:
        entry = entry_for(weights, "remote-elastic", "elastic", url=server.url("/remote-elastic.pt"))
        sidecar = tmp_path / "remote-elastic.json"
        sidecar.write_text(json.dumps(entry.to_dict()))
        code = cli.main(["models", "--progress", "lines", "download", str(sidecar)])
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and server.ranges == [None]
    assert out[0].startswith("PROGRESS ") and "PROGRESS 1.0000 done" in out
    assert out[-1] == f"regseg: installed remote-elastic 1.2.0 (elastic) as {home / 'models' / 'remote-elastic.pt'}"
