"""Segmentation training, inference and the ``regseg segment`` command, on real NIfTI files written here:
the plan stored in the run folder, short real training runs reaching a Dice bar, continuation, the lesion
configuration on a small synthetic lesion set, and the output geometry of oblique and flipped inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from RegSegLib.geometry import Grid
from RegSegLib.io.checks import read_image, read_labels
from RegSegLib.io.segmentation_files import read_segmentation_nrrd
from RegSegLib.segmentation.inference import keep_largest_component, mirror_axes, segment
from RegSegLib.segmentation.models import load_segmentation_model, segments_of, shipped_record
from RegSegLib.training.config import BaseConfig, register_configs
from RegSegLib.training.launch import CONFIG_FOLDER
from RegSegLib.training.runner import continue_config, run_training, to_config
from RegSegLib.validation import SettingsError
from RegSegLib.volume import Volume

REPOSITORY = Path(__file__).resolve().parents[2]
QUIET = {"enable_progress_bar": False}
register_configs()


def compose_config(name: str, *overrides: str) -> BaseConfig:
    with initialize_config_dir(str(CONFIG_FOLDER), version_base="1.3"):
        return to_config(compose(name, list(overrides)))


def blob_case(rng: np.random.Generator, shape=(20, 24, 22), channels: int = 1, lesion: bool = False) -> tuple[list[np.ndarray], np.ndarray]:
    """Images (K, J, I) of an ellipsoid brighter than a textured background, and its label map; with
    ``lesion``, label 1 is a small dark spot inside the ellipsoid instead."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    centre = np.array(shape) / 2.0 + rng.uniform(-2, 2, 3)
    radii = np.array([5.0, 6.0, 7.0]) * rng.uniform(0.8, 1.2)
    inside = ((k - centre[0]) / radii[0]) ** 2 + ((j - centre[1]) / radii[1]) ** 2 + ((i - centre[2]) / radii[2]) ** 2 < 1
    labels = inside.astype(np.uint8)
    if lesion:
        spot = (k - centre[0]) ** 2 + (j - centre[1]) ** 2 + (i - centre[2] - 2) ** 2 < 6
        labels = (spot & inside).astype(np.uint8)
    images = []
    for channel in range(channels):
        image = 100.0 + 60.0 * inside - 50.0 * (labels if lesion else 0) + 8.0 * np.sin(i / 2.5 + channel) + rng.normal(0, 6, shape)
        images.append(image.astype(np.float32))
    return images, labels


def save(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    nib.save(nib.Nifti1Image(np.transpose(array, (2, 1, 0)), affine), path)


def write_dataset(root: Path, cases: int, channels: int = 1, lesion: bool = False, seed: int = 0) -> Path:
    """An nnU-Net-layout dataset (``images_tr/NAME_XXXX.nii.gz``, ``labelsTr/NAME.nii.gz``) at 1.5 x 1 x 1 mm."""
    rng = np.random.default_rng(seed)
    (root / "images_tr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    affine = np.diag([1.0, 1.0, 1.5, 1.0])
    for index in range(cases):
        images, labels = blob_case(rng, channels=channels, lesion=lesion)
        for channel, image in enumerate(images):
            save(image, affine, root / "images_tr" / f"case{index:02d}_{channel:04d}.nii.gz")
        save(labels, affine, root / "labelsTr" / f"case{index:02d}.nii.gz")
    return root


def tiny(dataset: Path, output: Path, *extra: str) -> list[str]:
    return [
        f"data.basepath={dataset}", f"output_dir={output}", "data.n_folds=3", "data.patches_per_epoch=24",
        "model_config.model_args.base_features=4", "model_config.model_args.max_features=16", "batch_size=4",
        "learning_rate=0.01", *extra,
    ]


@pytest.fixture(scope="module")
def gland_dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("gland"), cases=9)


@pytest.fixture(scope="module")
def trained_run(gland_dataset, tmp_path_factory) -> Path:
    """A short real training run on the blob dataset (the same run serves several tests)."""
    config = compose_config("anatomy_config", *tiny(gland_dataset, tmp_path_factory.mktemp("runs"), "epochs=6", "run_name=blobs"))
    return run_training(config, QUIET)


def test_the_plan_is_stored_with_the_topology_and_the_run_reaches_a_dice_bar(trained_run):
    stored = OmegaConf.to_container(OmegaConf.load(trained_run / "config.yaml"))
    plan, args = stored["data"]["plan"], stored["model_config"]["model_args"]
    assert plan["spacing"] == pytest.approx([1.5, 1.0, 1.0])
    assert plan["num_classes"] == 2 and plan["foreground_labels"] == [1] and plan["num_channels"] == 1
    for name in ("n_stages", "strides", "kernel_sizes", "features_per_stage"):
        assert args[name] == plan[name]
    assert plan["features_per_stage"][0] == 4 and max(plan["features_per_stage"]) <= 16
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["best"]["dice"] > 0.85, summary
    assert sorted(stored["data"]["validation_patients"]) and not set(stored["data"]["validation_patients"]) & set(stored["data"]["train_patients"])


def test_a_topology_value_set_by_hand_is_refused(gland_dataset, tmp_path):
    config = compose_config("anatomy_config", *tiny(gland_dataset, tmp_path, "epochs=1", "model_config.model_args.n_stages=2"))
    with pytest.raises(SettingsError, match="n_stages is derived from the patch size and spacing"):
        run_training(config, QUIET)


def test_a_continued_run_keeps_its_plan_and_split_and_trains_on(trained_run):
    stored = (trained_run / "config.yaml").read_text()
    config, notes = continue_config(trained_run, ["epochs=7", "data.patch_size=[8,8,8]"])
    assert notes and "PolynomialLR" in notes[0]
    folder = run_training(config, QUIET)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["epochs_run"] == 7
    again = (folder / "config.yaml").read_text()
    assert again.split("plan:")[1].split("train_patients")[0] == stored.split("plan:")[1].split("train_patients")[0]


def test_the_lesion_configuration_composes_and_trains_on_three_channels(tmp_path):
    dataset = write_dataset(tmp_path / "lesions", cases=6, channels=3, lesion=True, seed=3)
    config = compose_config("lesion_config", *tiny(dataset, tmp_path / "runs", "epochs=2"))
    assert config.data.modalities == ["MR", "MR", "MR"] and config.data.foreground_oversampling == pytest.approx(0.66)
    folder = run_training(config, QUIET)
    record = torch.load(folder / "best-dice" / "model.pt", weights_only=True)
    assert record["config"]["data"]["plan"]["num_channels"] == 3
    model = load_segmentation_model(str(folder / "best-dice" / "model.pt"))
    assert model.channels == 3 and [s.name for s in model.segments] == ["label 1"]


def oblique_flipped_volume(data: np.ndarray) -> np.ndarray:
    """An ijk_to_ras with a 20-degree rotation and a flipped axis (left-handed), 1 x 1.2 x 1.5 mm."""
    angle = np.radians(20.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation @ np.diag([1.0, -1.2, 1.5])
    matrix[:3, 3] = [12.0, -30.0, 7.0]
    return matrix


def threshold_network(image: torch.Tensor) -> torch.Tensor:
    """A stand-in network for geometry checks: background/foreground logits of a z-scored image's sign."""
    return torch.cat([-image, image], dim=1) * 10.0


def test_segment_keeps_the_geometry_of_oblique_and_flipped_inputs():
    rng = np.random.default_rng(5)
    images, labels = blob_case(rng, shape=(18, 26, 30))
    ijk_to_ras = oblique_flipped_volume(labels)
    volume = Volume(torch.from_numpy(images[0])[None], ijk_to_ras)
    truth = images[0] > images[0].mean()
    plan = {
        "spacing": [1.5, 1.2, 1.0], "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "normalisation": [{"scheme": "zscore"}], "patch_size": [16, 16, 16], "foreground_labels": [3],
    }
    result = segment(threshold_network, plan, [volume], mirror=True)
    assert result.kind == "labels" and result.shape == volume.shape
    np.testing.assert_allclose(result.ijk_to_ras, ijk_to_ras, atol=1e-9)
    predicted = result.data[0].numpy() == 3
    assert set(np.unique(result.data.numpy())) <= {0, 3}
    assert 2 * (predicted & truth).sum() / (predicted.sum() + truth.sum()) > 0.95
    transposed = {**plan, "transpose_forward": [2, 0, 1], "transpose_backward": [1, 2, 0]}
    again = segment(threshold_network, transposed, [volume], mirror=False)
    assert torch.equal(again.data, segment(threshold_network, plan, [volume], mirror=False).data)


def test_mirroring_covers_every_flip_and_the_largest_component_stays():
    assert len(mirror_axes(3)) == 8 and mirror_axes(3)[0] == () and (2, 3, 4) in mirror_axes(3)
    data = torch.zeros(1, 10, 10, 10, dtype=torch.uint8)
    data[0, 1:5, 1:5, 1:5] = 1
    data[0, 7:9, 7:9, 7:9] = 1
    data[0, 0, 9, 0] = 2
    kept = keep_largest_component(Volume(data, np.eye(4), kind="labels"), [1, 2])
    assert int((kept.data == 1).sum()) == 64 and int((kept.data == 2).sum()) == 1


def test_a_shipped_torchscript_record_predicts_what_the_weights_do(trained_run, tmp_path):
    from RegSegLib.segmentation.models import build_network

    record = torch.load(trained_run / "best-dice" / "model.pt", weights_only=True)
    plan = record["config"]["data"]["plan"]
    network = build_network(record).eval()
    shipped = shipped_record(network, plan, segments_of(plan, [{"label": 1, "name": "gland", "colour": [0.9, 0.6, 0.5]}]))
    path = tmp_path / "gland.pt"
    torch.save(shipped, path)
    model = load_segmentation_model(str(path))
    example = torch.randn(1, 1, *plan["patch_size"])
    with torch.no_grad():
        torch.testing.assert_close(model.network(example), network(example), rtol=1e-4, atol=1e-4)
    assert model.segments[0].name == "gland"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "RegSegLib", *args], cwd=REPOSITORY, capture_output=True, text=True, encoding="utf-8")


def test_regseg_segment_writes_a_label_map_and_a_slicer_segmentation(trained_run, gland_dataset, tmp_path):
    model = trained_run / "best-dice" / "model.pt"
    image = gland_dataset / "images_tr" / "case00_0000.nii.gz"
    result = run_cli("segment", str(image), "--model", str(model), "-o", str(tmp_path / "out"), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    labels = read_labels(str(tmp_path / "out" / "labels.nii.gz"))
    reference = read_image(str(image))
    assert Grid.of(labels.ijk_to_ras, labels.shape).same_as(reference.grid)
    truth = read_labels(str(gland_dataset / "labelsTr" / "case00.nii.gz")).data[0] > 0
    predicted = labels.data[0] > 0
    assert 2 * float((truth & predicted).sum()) / float(truth.sum() + predicted.sum()) > 0.85
    segmentation, segments = read_segmentation_nrrd(tmp_path / "out" / "segmentation.seg.nrrd")
    assert [s.label for s in segments] == [1] and torch.equal(segmentation.data, labels.data.to(segmentation.data.dtype))
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["segments"][0]["volume_ml"] == pytest.approx(float(predicted.sum()) * 1.5 / 1000.0)


def test_regseg_segment_refuses_a_bad_model_and_a_wrong_channel_count(trained_run, gland_dataset, tmp_path):
    image = str(gland_dataset / "images_tr" / "case00_0000.nii.gz")
    not_a_model = tmp_path / "weights.pt"
    torch.save({"something": 1}, not_a_model)
    result = run_cli("segment", image, "--model", str(not_a_model), "-o", str(tmp_path / "a"))
    assert result.returncode == 2 and "is not a segmentation model" in result.stderr and str(not_a_model) in result.stderr
    result = run_cli("segment", image, image, "--model", str(trained_run / "best-dice" / "model.pt"), "-o", str(tmp_path / "b"))
    assert result.returncode == 2 and "takes 1 image(s), 2 given" in result.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_segmentation_guided_registration_aligns_the_structures_across_modalities():
    """Two blobs of unlike intensities (one image inverted, as MR against ultrasound) and their label maps:
    guided by the label maps, the registration aligns the blobs; the report says the label term drove it."""
    from RegSegLib.registration.pipeline import register
    from RegSegLib.transforms import resample

    rng = np.random.default_rng(11)
    (fixed_image,), fixed_labels = blob_case(rng, shape=(24, 28, 26))
    (moving_image,), moving_labels = blob_case(rng, shape=(24, 28, 26))
    affine = np.diag([1.0, 1.0, 1.5, 1.0])
    fixed = Volume(torch.from_numpy(fixed_image)[None], affine)
    moving = Volume(torch.from_numpy(-moving_image)[None], affine)
    guides = [Volume(torch.from_numpy(labels)[None], affine, kind="labels") for labels in (fixed_labels, moving_labels)]

    def dice(transform) -> float:
        warped = resample(guides[1], fixed, transform, mode="nearest").data[0] > 0
        truth = guides[0].data[0] > 0
        return 2 * float((warped & truth).sum()) / float(warped.sum() + truth.sum())

    result = register(fixed, moving, method="deformable", guidance=(guides[0], guides[1]), device="cpu")
    assert result.metric_reason.startswith("segmentation-guided") and result.settings.metric == "mse"
    assert dice(None) < 0.8 and dice(result.transform) > 0.9
    assert all(verdict.after.mask_dice is not None for verdict in result.verdicts)


def test_regseg_register_segment_with_writes_both_segmentations(trained_run, gland_dataset, tmp_path):
    model = str(trained_run / "best-dice" / "model.pt")
    fixed, moving = (str(gland_dataset / "images_tr" / f"case0{n}_0000.nii.gz") for n in (1, 2))
    out = tmp_path / "out"
    result = run_cli("register", fixed, moving, "-o", str(out), "--segment-with", model, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["segment_with"] == [model, model] and metrics["metric_chosen"].startswith("segmentation-guided")
    truth = read_labels(str(gland_dataset / "labelsTr" / "case01.nii.gz")).data[0] > 0
    found = read_labels(str(out / "fixed_segmentation.nii.gz")).data[0] > 0
    assert 2 * float((truth & found).sum()) / float(truth.sum() + found.sum()) > 0.85
    result = run_cli("register", fixed, moving, "-o", str(tmp_path / "bad"), "--segment-with", f"{model},{tmp_path / 'none.pt'}")
    assert result.returncode == 2 and "none.pt" in result.stderr and not (tmp_path / "bad").exists()
