"""The model store: manifest schema and round trip, the cache folder, import/list/info/verify/remove of real
``torch.save`` files, checksum and ``weights_only`` refusals, shipped models, and downloads with resume from a
loopback HTTP server.
"""

from __future__ import annotations

import json
import pathlib
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from model_files import METRICS, RangeServer, entry_for, flip_byte, state_dict, write_model
from RegSegLib.errors import InputError, RegSegError
from RegSegLib.models import download
from RegSegLib.models.manifest import (
    ManifestError,
    ModelEntry,
    file_sha256,
    metrics_text,
    read_entry,
    read_manifest,
    write_manifest,
)
from RegSegLib.models.store import SHIPPED_FOLDER, ModelStore, regseg_home


@pytest.fixture
def store(tmp_path, monkeypatch) -> ModelStore:
    """The user's store in a temporary ``REGSEG_HOME``, with an empty shipped folder."""
    monkeypatch.setenv("REGSEG_HOME", str(tmp_path / "home"))
    return ModelStore(shipped=tmp_path / "shipped")


# ------------------------------------------------------------------------------------------------ manifest


def test_entry_round_trips_through_json_and_manifest_files(tmp_path):
    weights, entry = write_model(tmp_path, "brain-affine")
    assert entry.size == weights.stat().st_size and len(entry.sha256) == 64
    again = ModelEntry.from_dict(json.loads(json.dumps(entry.to_dict())))
    assert again == entry and again.input.spacing_mm == (2.0, 2.0, 2.0) and again.metrics == METRICS
    other = replace(entry, name="brain-seg", task="segmentation", file="seg.pt", url="https://example.org/seg.pt")
    write_manifest([entry, other], tmp_path / "manifest.json")
    assert read_manifest(tmp_path / "manifest.json") == [entry, other]
    assert read_entry(tmp_path / "brain-affine.json") == entry
    assert entry.input.text() == "1 channel(s), 2x2x2 mm, any shape, z-score intensities"
    assert metrics_text(entry.metrics, most=2) == "dice_mean 0.8125, hd95_mm 3.5, ..."
    assert metrics_text({}) == "no metrics"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"task": "detection"}, "unknown task 'detection'; choose one of affine, elastic, segmentation, supervoxel, synthesis"),
        ({"sha256": "ABC"}, "sha256 must be 64 lower-case hex digits"),
        ({"size": 0}, "size must be a positive whole number of bytes, got 0"),
        ({"size": 12.5}, "size must be a positive whole number of bytes"),
        ({"file": "../evil.pt"}, "file '../evil.pt' must be a plain file name"),
        ({"file": "manifest.json"}, "must be a plain file name"),
        ({"name": "a b"}, "model name 'a b' must be"),
        ({"licence": " "}, "licence must be a non-empty text"),
        ({"url": "ftp://host/x.pt"}, "url must start with http:// or https://"),
        ({"metrics": {"dice": "high"}}, "metrics must map names to finite numbers"),
        ({"metrics": {"dice": float("nan")}}, "metrics must map names to finite numbers"),
        ({"lisence": "MIT"}, "unknown field 'lisence'"),
        ({"input": {"channels": 0, "normalisation": "none"}}, "model 'm': input channels must be a positive whole number, got 0"),
        ({"input": {"channels": 1, "normalisation": "none", "spacing_mm": [1, 1]}}, "input spacing_mm must be three"),
        ({"input": {"channels": 1, "normalisation": "none", "shape": [64, 64, 0.5]}}, "input shape must be three"),
        ({"input": {"channels": 1}}, "input missing field 'normalisation'"),
    ],
)
def test_bad_entries_are_refused_with_one_clear_line(tmp_path, change, message):
    _, entry = write_model(tmp_path, "m")
    data = {**entry.to_dict(), **change}
    with pytest.raises(ManifestError, match=message.replace("(", r"\(").replace(".", r"\.")) as caught:
        ModelEntry.from_dict(data)
    assert "\n" not in str(caught.value)


def test_missing_field_and_bad_manifest_files_name_the_file(tmp_path):
    _, entry = write_model(tmp_path, "m")
    data = entry.to_dict()
    del data["reproduce"]
    with pytest.raises(ManifestError, match="model 'm': missing field 'reproduce'"):
        ModelEntry.from_dict(data)
    manifest = tmp_path / "manifest.json"
    cases = {
        "{not json": "is not valid JSON (Expecting property name enclosed in double quotes at line 1)",
        json.dumps({"models": []}): "must hold a JSON list of model entries",
        json.dumps([entry.to_dict(), entry.to_dict()]): "name 'm' is listed twice",
        json.dumps([{**entry.to_dict(), "task": "x"}]): "model 'm': unknown task 'x'",
    }
    for text, problem in cases.items():
        manifest.write_text(text)
        with pytest.raises(InputError) as caught:
            read_manifest(manifest)
        assert str(caught.value).startswith(f"{manifest}: {problem}")
    with pytest.raises(InputError, match="file not found"):
        read_entry(tmp_path / "absent.json")


def test_cache_folder_follows_regseg_home_then_the_platform(tmp_path, monkeypatch):
    monkeypatch.setenv("REGSEG_HOME", str(tmp_path / "rh"))
    assert regseg_home() == tmp_path / "rh" and ModelStore().folder == tmp_path / "rh" / "models"
    monkeypatch.delenv("REGSEG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(sys, "platform", "linux")
    assert regseg_home() == tmp_path / "xdg" / "regseg"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert regseg_home() == tmp_path / "user" / ".cache" / "regseg"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert regseg_home() == tmp_path / "user" / "Library" / "Caches" / "regseg"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert regseg_home() == tmp_path / "local" / "regseg"


def test_importing_the_package_does_not_import_torch():
    code = (
        "import sys, RegSegLib.models as m; m.ModelStore; m.ModelEntry; m.download; "
        "print(sorted(k for k in sys.modules if k.split('.')[0] == 'torch'))"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------------ store


def test_import_list_info_verify_remove_and_load(store, tmp_path):
    assert store.list_models() == [] and store.verify() == []
    affine, affine_entry = write_model(tmp_path / "offline", "brain-affine")
    seg, seg_entry = write_model(tmp_path / "offline", "prostate-seg", task="segmentation", seed=1)
    installed = store.import_file(affine)  # NAME.pt + NAME.json beside it
    assert installed.path == store.folder / "brain-affine.pt" and not installed.shipped
    store.import_file(tmp_path / "offline" / "prostate-seg.json")  # the sidecar alone
    assert [m.entry.name for m in store.list_models()] == ["brain-affine", "prostate-seg"]
    assert [m.entry for m in store.list_models("segmentation")] == [seg_entry]
    assert store.list_models("synthesis") == []
    assert read_manifest(store.folder / "manifest.json") == [affine_entry, seg_entry]
    assert file_sha256(store.folder / "prostate-seg.pt") == file_sha256(seg)
    info = store.info("prostate-seg")
    assert info.to_dict()["shipped"] is False and info.to_dict()["sha256"] == seg_entry.sha256
    assert "licence: CC-BY-4.0" in info.description()
    assert "metrics: dice_mean 0.8125, hd95_mm 3.5, folding_percent 0.016, seconds 2.7" in info.description()
    assert all(check.ok for check in store.verify())

    loaded = store.load_weights("brain-affine")
    expected = state_dict(0)
    assert set(loaded) == set(expected) and all(torch.equal(loaded[k], expected[k]) for k in expected)

    removed = store.remove("brain-affine")
    assert removed.entry == affine_entry and not removed.path.exists()
    assert [m.entry.name for m in store.list_models()] == ["prostate-seg"]
    with pytest.raises(RegSegError, match="no model named 'brain-affine'"):
        store.info("brain-affine")
    assert sorted(p.name for p in store.folder.iterdir()) == ["manifest.json", "prostate-seg.pt"]


def test_import_with_an_explicit_entry_and_replace(store, tmp_path):
    weights, entry = write_model(tmp_path / "a", "model-a", sidecar=False)
    with pytest.raises(InputError, match="no manifest entry: put it in model-a.json beside the file"):
        store.import_file(weights)
    store.import_file(weights, entry)
    with pytest.raises(RegSegError, match="model 'model-a' is installed already"):
        store.import_file(weights, entry)
    newer, newer_entry = write_model(tmp_path / "b", "model-a-v2", seed=3, sidecar=False)
    newer_entry = replace(newer_entry, name="model-a", version="2.0.0")
    store.import_file(newer, newer_entry, replace=True)
    assert [m.entry.version for m in store.list_models()] == ["2.0.0"]
    assert sorted(p.name for p in store.folder.iterdir()) == ["manifest.json", "model-a-v2.pt"]
    clash = replace(entry, name="model-b", file="model-a-v2.pt")
    with pytest.raises(RegSegError, match="model 'model-a' already uses the file name 'model-a-v2.pt'"):
        store.import_file(newer, clash)
    with pytest.raises(InputError, match="model 'model-b' is for affine, not segmentation; nothing installed"):
        store.import_file(weights, replace(entry, name="model-b"), task="segmentation")


def test_a_file_that_differs_from_its_entry_is_not_installed(store, tmp_path):
    weights, entry = write_model(tmp_path, "m")
    flip_byte(weights, -10)
    with pytest.raises(InputError) as caught:
        store.import_file(weights)
    expected = f"sha256 is {file_sha256(weights)} but the manifest entry of model 'm' says {entry.sha256}; nothing installed"
    assert str(caught.value) == f"{weights}: {expected}"
    weights.write_bytes(weights.read_bytes()[:-1])
    with pytest.raises(InputError, match=f"is {entry.size - 1} bytes but the manifest entry of model 'm' says {entry.size}"):
        store.import_file(weights)
    assert store.list_models() == [] and list(store.folder.iterdir()) == []


def test_a_changed_installed_file_fails_verify_and_is_not_loaded(store, tmp_path):
    weights, entry = write_model(tmp_path, "m")
    installed = store.import_file(weights).path
    flip_byte(installed, 100)
    (check,) = store.verify()
    expected = f"sha256 is {file_sha256(installed)} but the manifest entry of model 'm' says {entry.sha256}"
    assert not check.ok and check.problem == expected
    with pytest.raises(InputError) as caught:
        store.load_weights("m")
    assert str(caught.value) == f"{installed}: {check.problem}; not loaded"
    installed.unlink()
    assert store.verify()[0].problem == "file not found"


class Payload:
    """An object whose unpickling runs code (touches ``marker``): what ``weights_only`` must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def test_weights_only_refuses_a_pickle_with_objects_even_when_its_checksum_matches(store, tmp_path):
    marker = tmp_path / "code-ran"
    weights = tmp_path / "trojan.pt"
    torch.save({"weights": torch.ones(2), "payload": Payload(marker)}, weights)
    entry = entry_for(weights, "trojan")
    store.import_file(weights, entry)
    assert store.verify()[0].ok
    with pytest.raises(InputError, match="holds objects other than tensors and plain containers; refused, not loaded"):
        store.load_weights("trojan")
    assert not marker.exists()


def test_the_shipped_models_are_the_gland_models_whose_files_match_their_entries():
    entries = read_manifest(SHIPPED_FOLDER / "manifest.json")
    assert sorted(entry.name for entry in entries) == ["regseg-prostate-gland-mr", "regseg-prostate-gland-us"]
    for entry in entries:
        path = SHIPPED_FOLDER / entry.file
        assert entry.task == "segmentation" and entry.size == path.stat().st_size <= 20_000_000
        assert file_sha256(path) == entry.sha256 and "case000022-case000026 never used" in entry.training_data
        assert entry.reproduce.startswith("python Scripts/prepare_segmentation_data.py") and entry.metrics


def test_shipped_models_are_listed_read_only(store, tmp_path):
    _, shipped_entry = write_model(store.shipped_folder, "default-affine", sidecar=False)
    write_manifest([shipped_entry], store.shipped_folder / "manifest.json")
    weights, entry = write_model(tmp_path / "offline", "user-elastic", task="elastic")
    store.import_file(weights)
    models = store.list_models()
    assert [(m.entry.name, m.shipped, m.source) for m in models] == [
        ("default-affine", True, "shipped"),
        ("user-elastic", False, "installed"),
    ]
    assert models[0].path == store.shipped_folder / "default-affine.pt"
    assert [check.ok for check in store.verify()] == [True, True]
    with pytest.raises(RegSegError, match="model 'default-affine' ships with RegSeg and cannot be removed"):
        store.remove("default-affine")
    with pytest.raises(RegSegError, match="model 'default-affine' ships with RegSeg; give the new one another name"):
        store.import_file(weights, replace(entry, name="default-affine"))
    assert torch.equal(store.load_weights("default-affine")["linear.bias"], torch.tensor([0.5, -1.0, 2.0]))
    assert (store.shipped_folder / "default-affine.pt").is_file()


# ------------------------------------------------------------------------------------------------ download


@pytest.fixture
def served(tmp_path):
    """A 300 KB model file served from 127.0.0.1, and its entry with the loopback URL."""
    weights = tmp_path / "served" / "big.pt"
    weights.parent.mkdir()
    torch.save({"weight": torch.linspace(-1, 1, 75_000)}, weights)
    with RangeServer({"/models/big.pt": weights.read_bytes()}) as server:
        yield server, entry_for(weights, "big-model", "synthesis", url=server.url("/models/big.pt"))


def test_download_reports_progress_and_installs(store, served):
    from RegSegLib.runtime import Progress

    server, entry = served
    fractions = []
    model = download(entry, store, Progress(lambda fraction, message: fractions.append(fraction)))
    assert server.ranges == [None]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) > 3
    assert model.path == store.folder / "big.pt" and store.verify()[0].ok
    assert torch.equal(store.load_weights("big-model")["weight"], torch.linspace(-1, 1, 75_000))


def test_a_cut_download_resumes_where_it_stopped(store, served):
    server, entry = served
    server.cut_after = 100_000
    with pytest.raises(RegSegError, match=f"download interrupted after 100000 of {entry.size} bytes .*run it again to resume"):
        download(entry, store, block_bytes=4096)
    partial = store.partial_path(entry)
    assert partial.stat().st_size == 100_000 and store.list_models() == []
    model = download(entry, store)
    assert server.ranges == [None, "bytes=100000-"]
    assert not partial.exists() and file_sha256(model.path) == entry.sha256
    assert [m.entry.name for m in store.list_models()] == ["big-model"]


def test_a_cancelled_download_keeps_its_bytes_for_the_resume(store, served):
    import threading

    from RegSegLib.runtime import Cancelled, Progress

    server, entry = served
    cancel = threading.Event()
    with pytest.raises(Cancelled):
        download(entry, store, Progress(lambda fraction, message: cancel.set(), cancel), block_bytes=8192)
    assert store.partial_path(entry).stat().st_size == 2 * 8192  # the cancel is seen at the next block
    download(entry, store)
    assert server.ranges == [None, "bytes=16384-"] and store.verify()[0].ok


def test_a_server_that_ignores_the_range_sends_the_whole_file_again(store, served):
    server, entry = served
    server.cut_after = 50_000
    with pytest.raises(RegSegError, match="interrupted after 50000"):
        download(entry, store)
    server.honour_range = False
    download(entry, store)
    assert server.ranges == [None, "bytes=50000-"] and store.verify()[0].ok


def test_a_checksum_mismatch_installs_nothing(store, served):
    server, entry = served
    wrong = replace(entry, sha256="0" * 64)
    with pytest.raises(InputError) as caught:
        download(wrong, store)
    expected = f"sha256 is {entry.sha256} but the manifest entry of model 'big-model' says {'0' * 64}; nothing installed"
    assert str(caught.value) == f"{entry.url}: {expected}"
    assert store.list_models() == [] and list(store.folder.iterdir()) == []
    with pytest.raises(InputError, match="the server answered HTTP 404"):
        download(replace(entry, url=server.url("/absent.pt")), store)
    with pytest.raises(InputError, match="model 'big-model' has no url in its manifest entry"):
        download(replace(entry, url=None), store)
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    with pytest.raises(RegSegError, match=f"interrupted after 0 of {entry.size} bytes .*refused.*; run it again to resume"):
        download(replace(entry, url=f"http://127.0.0.1:{closed}/big.pt"), store)
