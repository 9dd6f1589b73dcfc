"""``regseg register --model`` (HyReg) and ``--method network`` with a real TorchScript model file.

An untrained affine network predicts the identity in its frame, which is the translation between the two
images' field-of-view centres in RAS. The moving phantom is the fixed one moved by ``SHIFT`` mm on a grid
moved by the same ``SHIFT``: that prediction is then exactly the true mapping, so the network alone must
recover it to float precision and HyReg must keep it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from RegSegLib import cli
from RegSegLib.errors import InputError
from RegSegLib.io.transforms import read_transform
from RegSegLib.networks.affine import AffineParamsNet
from RegSegLib.registration.learned import inference_record, load_affine_model, network_to_ras
from cli_phantom import SHIFT, affine_matrix, phantom, save

CONFIG = {
    "model_config": {"name": "affine_params", "model_args": {"family": "rigid", "fusion": "late", "widen_factor": 0.125, "cascade": 1}},
    "data": {"shape": [16, 16, 16], "spacing_mm": None},
}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "identity.pt"
    torch.save(inference_record(AffineParamsNet("rigid", "late", 0.125), CONFIG), path)
    return path


@pytest.fixture(scope="module")
def moved_pair(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("moved")
    image, _ = phantom(np.zeros(3))
    moved_grid = affine_matrix()
    moved_grid[:3, 3] += SHIFT
    return {"fixed": save(image, folder / "fixed.nii.gz"), "moving": save(image, folder / "moving.nii.gz", moved_grid)}


def test_network_to_ras_maps_centres_and_scales_the_translation():
    total = np.eye(4)
    angle = np.radians(120.0)
    total[:3, :3] = [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    total[:3, 3] = [2.0, -1.0, 0.5]
    fixed_centre, moving_centre = np.array([10.0, 20.0, 30.0]), np.array([-5.0, 0.0, 7.0])
    matrix = network_to_ras(total, 3.0, fixed_centre, moving_centre)
    assert np.allclose(matrix @ np.append(fixed_centre, 1), np.append(moving_centre + [6.0, -3.0, 1.5], 1))
    offset = np.array([1.0, 0.0, 0.0])
    moved = matrix @ np.append(fixed_centre + offset, 1) - matrix @ np.append(fixed_centre, 1)
    assert np.allclose(moved[:3], total[:3, :3] @ offset)


def test_the_network_alone_recovers_the_shift_of_the_field_of_view(moved_pair, model_file, tmp_path):
    out = tmp_path / "network"
    code = cli.main(["register", moved_pair["fixed"], moved_pair["moving"], "-o", str(out), "--method", "network",
                     "--model", str(model_file), "--progress", "none", "--device", "cpu"])
    assert code == 0
    transform = read_transform(out / "affine.tfm")
    assert np.allclose(transform.matrix, np.block([[np.eye(3), SHIFT[:, None]], [np.zeros((1, 3)), np.ones((1, 1))]]), atol=1e-4)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == str(model_file) and metrics["method"] == "network"
    assert metrics["guard"]["network"]["rolled_back"] is False and metrics["seconds"]["network"] > 0


def test_hyreg_starts_the_engine_from_the_prediction(moved_pair, model_file, tmp_path):
    out = tmp_path / "hyreg"
    code = cli.main(["register", moved_pair["fixed"], moved_pair["moving"], "-o", str(out), "--transform", "rigid",
                     "--metric", "mse", "--model", str(model_file), "--progress", "none", "--device", "cpu"])
    assert code == 0
    matrix = read_transform(out / "affine.tfm").matrix
    assert np.abs(matrix[:3, 3] - SHIFT).max() < 0.1 and np.abs(matrix[:3, :3] - np.eye(3)).max() < 1e-2


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--method", "network"], "--method network keeps a network's prediction"),
        (["--model", "x.pt", "--init", "y.tfm"], "--model and --init both give the initial transform"),
    ],
)
def test_network_options_that_do_not_fit_exit_2(moved_pair, tmp_path, capsys, extra, words):
    code = cli.main(["register", moved_pair["fixed"], moved_pair["moving"], "-o", str(tmp_path / "out"), *extra])
    assert code == 2 and words in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_not_an_affine_model_is_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(InputError, match="not an affine registration model"):
        load_affine_model(str(path))
    with pytest.raises(InputError, match="no such model file"):
        load_affine_model(str(tmp_path / "absent.pt"))
