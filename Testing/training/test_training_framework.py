"""The training framework (RegSegLib.training): configs, ClinicaDL behaviours on Lightning, continuation,
and the learned affine registration's data and network, on real NIfTI files written here."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from lightning.pytorch import Callback, LightningModule, Trainer

from RegSegLib.networks.affine import AffineParamsNet, fit_affine, half_span, network_theta, rotation_from_6d, weighted_barycentres
from RegSegLib.training.callbacks import BestModelSelection, RelativeEarlyStopping, improves
from RegSegLib.training.config import AffineParamsConfig, BaseConfig, DataConfig, register_configs
from RegSegLib.training.data import (
    PairSampler,
    find_samples,
    largest_angle,
    random_rotation,
    random_transform,
    split_patients,
)
from RegSegLib.networks.inputs import network_grid, network_input
from RegSegLib.training.launch import CONFIG_FOLDER
from RegSegLib.training.runner import TrainingError, continue_config, epoch_batches, run_training, to_config
from RegSegLib.transforms import AffineTransform, fields
from RegSegLib.io.checks import read_image

REPOSITORY = Path(__file__).resolve().parents[2]
register_configs()


def compose_config(*overrides: str) -> BaseConfig:
    with initialize_config_dir(str(CONFIG_FOLDER), version_base="1.3"):
        return to_config(compose("affine_config", list(overrides)))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Six volumes of four patients in the registration layout: textured blobs with label maps, NIfTI."""
    root = tmp_path_factory.mktemp("dataset")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    k, j, i = np.meshgrid(np.arange(20), np.arange(22), np.arange(24), indexing="ij")
    for name in ("p1_a", "p1_b", "p2_a", "p3_a", "p4_a", "p4_b"):
        centre = np.array([10, 11, 12]) + rng.uniform(-2, 2, 3)
        distance = np.sqrt((k - centre[0]) ** 2 + (j - centre[1]) ** 2 + ((i - centre[2]) * 1.3) ** 2)
        labels = (distance < 5).astype(np.int16) + (distance < 8).astype(np.int16) + (k > centre[0] + 4) * (distance < 8)
        image = 40.0 * labels + 10.0 * np.sin(i / 3.0) * np.cos(j / 4.0) + rng.normal(0, 1, labels.shape)
        affine = np.diag([2.0, 2.0, 2.5, 1.0])
        affine[:3, 3] = rng.uniform(-10, 10, 3)
        nib.save(nib.Nifti1Image(np.transpose(image, (2, 1, 0)).astype(np.float32), affine), root / "images" / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(np.transpose(labels, (2, 1, 0)).astype(np.int16), affine), root / "masks" / f"seg_{name}.nii.gz")
    return root


def tiny(dataset: Path, *extra: str) -> list[str]:
    return [
        f"data.roots=[{dataset}]", "data.shape=[16,16,16]", "data.spacing_mm=4", "data.pairs_per_epoch=8",
        "data.validation_pairs=2", "data.n_folds=1", "data.test_fraction=0", "batch_size=2", "lr_scheduler=none",
        *extra,
    ]


QUIET = {"enable_progress_bar": False}


def logged_losses(folder: Path) -> list[tuple[int, float]]:
    """(step, training loss) of every part of a run's CSV logs."""
    out = []
    for path in sorted(folder.glob("logs/part*/metrics.csv")):
        with path.open() as handle:
            out += [(int(row["step"]), float(row["train/loss"])) for row in csv.DictReader(handle) if row["train/loss"]]
    return out


# ---------------------------------------------------------------- configs


def test_every_config_composes_to_typed_validated_dataclasses(dataset):
    config = compose_config(f"data.roots=[{dataset}]")
    assert isinstance(config, BaseConfig) and isinstance(config.data, DataConfig)
    assert isinstance(config.model_config, AffineParamsConfig) and config.model_config.model_args.family == "rigid"
    assert config.lr_scheduler.type == "CosineAnnealingLR" and config.lr_scheduler.kwargs["T_max"] == config.epochs
    late = compose_config(f"data.roots=[{dataset}]", "model_config.model_args.fusion=late", "lr_scheduler=step_lr", "epochs=7")
    assert late.model_config.model_args.fusion == "late"
    assert (late.lr_scheduler.type, late.lr_scheduler.kwargs["step_size"]) == ("StepLR", 20)
    for scheduler in ("none", "plateau"):
        assert compose_config(f"data.roots=[{dataset}]", f"lr_scheduler={scheduler}").lr_scheduler.type in ("none", "ReduceLROnPlateau")
    folds = [compose_config(f"data.roots=[{dataset}]", f"data.fold={fold}", "devices=[1]") for fold in (0, 1)]
    assert [config.data.fold for config in folds] == [0, 1] and folds[0].devices == [1]
    assert compose_config(f"data.roots=[{dataset}]", "batch_size=3", "accumulation_steps=4").virtual_batch_size == 12


@pytest.mark.parametrize(
    "override, words",
    [
        ("tolerance=1.5", "tolerance"),
        ("model_config.model_args.family=curved", "transform family"),
        ("data.fold=7", "data.fold"),
        ("accumulation_steps=0", "accumulation_steps"),
        ("precision=fp8", "precision"),
    ],
)
def test_post_init_refuses_bad_values(dataset, override, words):
    with pytest.raises(ValueError, match=words):
        compose_config(f"data.roots=[{dataset}]", override)


def test_the_script_refuses_a_config_without_data_in_one_line_with_status_2(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPOSITORY / "Scripts/run_affine_training.py"), f"output_dir={tmp_path}"],
        capture_output=True, text=True, encoding="utf-8", errors="replace", cwd=tmp_path, timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["run_affine_training: data: give dataset folders (data.roots=[...]) or a cohort list (data.cohorts_tsv=FILE)"]
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- ClinicaDL behaviours


def test_relative_tolerance_decides_what_improves():
    assert improves(0.5, None, "min")
    assert not improves(0.95, 1.0, "min", tolerance=0.1)
    assert not improves(0.9, 1.0, "min", tolerance=0.1)
    assert improves(0.899, 1.0, "min", tolerance=0.1)
    assert improves(-1.11, -1.0, "min", tolerance=0.1) and not improves(-1.09, -1.0, "min", tolerance=0.1)
    assert improves(0.81, 0.8, "max") and not improves(0.8, 0.8, "max")
    assert not improves(math.nan, 1.0, "min") and not improves(math.nan, None, "min")


class Scripted(LightningModule):
    """A one-weight module whose epoch-end validation loss follows a script; counts optimiser steps."""

    def __init__(self, losses: list[float], batches: int = 5) -> None:
        super().__init__()
        self.network = torch.nn.Linear(1, 1)
        self.losses, self.batches, self.steps = losses, batches, 0

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.ones(self.batches, 1), batch_size=1)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(torch.ones(1, 1), batch_size=1)

    def training_step(self, batch, index):
        return self.network(batch).pow(2).mean()

    def optimizer_step(self, *args, **kwargs):
        self.steps += 1
        super().optimizer_step(*args, **kwargs)

    def validation_step(self, batch, index):
        self.log("val/loss", self.losses[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def scripted_trainer(tmp_path: Path, epochs: int, callbacks: list, **options) -> Trainer:
    return Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, callbacks=callbacks, default_root_dir=tmp_path, **options,
    )


def test_early_stopping_counts_epochs_without_relative_improvement(tmp_path):
    losses = [1.0, 0.95, 0.91, 0.85, 0.84, 0.83, 0.5, 0.4]
    stopping = RelativeEarlyStopping(patience=3, tolerance=0.1)
    trainer = scripted_trainer(tmp_path, len(losses), [stopping])
    trainer.fit(Scripted(losses))
    # Best 1.0 at epoch 0. 0.95 and 0.91 are not below 0.9 (waits 1, 2); 0.85 is (best 0.85, bound 0.765);
    # 0.84 and 0.83 are not (waits 1, 2); 0.5 is (bound 0.45), and 0.4 is: with patience 3, no stop.
    assert stopping.stopped_epoch is None and trainer.current_epoch == len(losses)
    stopping = RelativeEarlyStopping(patience=2, tolerance=0.1)
    trainer = scripted_trainer(tmp_path, len(losses), [stopping])
    trainer.fit(Scripted(losses))
    assert stopping.stopped_epoch == 2 and stopping.best == 1.0 and trainer.current_epoch == 3
    disabled = RelativeEarlyStopping(patience=0, tolerance=0.1)
    trainer = scripted_trainer(tmp_path, 4, [disabled])
    trainer.fit(Scripted([1.0, 1.0, 1.0, 1.0]))
    assert disabled.stopped_epoch is None and trainer.current_epoch == 4


def test_early_stopping_state_survives_a_restart(tmp_path):
    first = RelativeEarlyStopping(patience=3, tolerance=0.0)
    scripted_trainer(tmp_path, 3, [first]).fit(Scripted([1.0, 1.5, 1.2]))
    assert (first.best, first.wait, first.stopped_epoch) == (1.0, 2, None)
    for state, stop in ((first.state_dict(), 0), (None, None)):
        second = RelativeEarlyStopping(patience=3, tolerance=0.0)
        if state is not None:
            second.load_state_dict(state)
        scripted_trainer(tmp_path, 1, [second]).fit(Scripted([1.1]))
        assert second.stopped_epoch == stop


def test_accumulation_steps_the_leftover_batches_at_epoch_end(tmp_path):
    module = Scripted([1.0] * 3, batches=5)
    trainer = scripted_trainer(tmp_path, 3, [], accumulate_grad_batches=2)
    trainer.fit(module)
    assert module.steps == 9 and trainer.global_step == 9  # 2 + 2 + 1 per epoch
    assert epoch_batches(pairs=8, batch_size=3, rank=0, world_size=2) == 2
    with pytest.raises(TrainingError, match="an epoch would make no update"):
        epoch_batches(pairs=1, batch_size=2, rank=1, world_size=2)


def test_model_selection_keeps_strictly_better_epoch_end_models(tmp_path):
    selection = BestModelSelection(tmp_path, ["loss"], {"architecture": "scripted"})
    scripted_trainer(tmp_path, 5, [selection]).fit(Scripted([3.0, 2.0, 2.0, 2.5, 1.5]))
    assert selection.best == {"loss": 1.5} and selection.best_epoch == {"loss": 4}
    saved = torch.load(tmp_path / "best-loss" / "model.pt", weights_only=True)
    assert (saved["epoch"], saved["value"], saved["architecture"]) == (4, 1.5, "scripted")
    tie = BestModelSelection(tmp_path / "tie", ["loss"], {})
    scripted_trainer(tmp_path, 3, [tie]).fit(Scripted([2.0, 2.0, 2.0]))
    assert tie.best_epoch == {"loss": 0}
    with pytest.raises(ValueError, match="unknown selection metric"):
        BestModelSelection(tmp_path, ["accuracy"], {})


# ---------------------------------------------------------------- data


def test_the_split_is_by_patient_and_folds_are_disjoint(dataset):
    samples = find_samples(DataConfig(roots=[str(dataset)]))
    assert len(samples) == 6 and all(sample.labels is not None for sample in samples)
    patients = [sample.patient for sample in samples]
    data = DataConfig(roots=[str(dataset)], test_fraction=0.25, n_folds=3)
    splits = [split_patients(patients, DataConfig(roots=[str(dataset)], test_fraction=0.25, n_folds=3, fold=f), 0) for f in range(3)]
    assert all(split["test"] == splits[0]["test"] and len(split["test"]) == 1 for split in splits)
    assert sorted(p for split in splits for p in split["validation"]) == sorted(set(patients) - set(splits[0]["test"]))
    for split in splits:
        assert not set(split["train"]) & set(split["validation"]) and not set(split["train"]) & set(split["test"])
    with pytest.raises(ValueError, match="4 folds need at least 4 patients"):
        split_patients(patients, DataConfig(roots=[str(dataset)], test_fraction=0.25, n_folds=4), 0)
    assert split_patients(patients, data, 0) == splits[0]


def test_rotations_cover_the_sphere_and_6d_recovers_them():
    rng = np.random.default_rng(1)
    rotations = np.stack([random_rotation(rng, 180.0) for _ in range(2000)])
    assert np.allclose(rotations @ rotations.transpose(0, 2, 1), np.eye(3), atol=1e-9)
    assert np.allclose(np.linalg.det(rotations), 1.0)
    angles = np.degrees(np.arccos(np.clip((np.trace(rotations, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert (angles > 150).mean() > 0.15  # uniform on SO(3): P(angle > 150) = 0.196
    assert abs(np.mean(rotations[:, :, 0], axis=0)).max() < 0.05
    six = torch.from_numpy(rotations[:, :, :2].transpose(0, 2, 1).reshape(-1, 6))
    assert torch.allclose(rotation_from_6d(six), torch.from_numpy(rotations), atol=1e-9)
    assert max(np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1))) for r in (random_rotation(rng, 30.0) for _ in range(200))) <= 30.0 + 1e-6


def test_a_synthetic_moving_image_is_the_fixed_image_moved_by_the_target(dataset):
    """The target T maps fixed network points to moving ones: warping the moving image by T gives back
    the fixed image, through the same sampling the cascade and the inference use (network_theta)."""
    volume = read_image(str(dataset / "images" / "p1_a.nii.gz"))
    data = DataConfig(roots=[str(dataset)], shape=[24, 24, 24], spacing_mm=2.0, max_translation=0.25)
    target = random_transform(np.random.default_rng(3), "similarity", data, 2.0 * half_span(data.shape).numpy())
    assert 0 < np.abs(target.translation_mm).max() <= 0.25 * 23
    centre = volume.grid.centre_ras
    grid = network_grid(centre, data.shape, data.spacing_mm)
    to_volume = np.eye(4)
    to_volume[:3, 3] = centre
    inverse = AffineTransform(to_volume @ np.linalg.inv(target.matrix) @ np.linalg.inv(to_volume))
    fixed = network_input(volume, grid)
    moving = network_input(volume, grid, inverse)
    theta = network_theta(torch.from_numpy(target.in_voxels(2.0))[None], half_span(data.shape))
    warped = F.grid_sample(moving[None], fields.affine_sampling_grid(theta[0], (24, 24, 24)), align_corners=True)[0]
    inside = (fixed > 0.05) & (warped > 0.05)
    assert inside.float().mean() > 0.2
    assert torch.corrcoef(torch.stack([fixed[inside], warped[inside]]))[0, 1] > 0.97
    assert torch.corrcoef(torch.stack([fixed[inside], moving[inside]]))[0, 1] < 0.9


def test_pair_sampler_resumes_inside_an_epoch_and_shares_under_ddp():
    sampler = PairSampler(8)
    sampler.set_epoch(2)
    assert list(sampler) == list(range(16, 24))
    sampler.resume(2, 6)
    assert list(sampler) == [22, 23] and list(sampler) == list(range(16, 24))
    assert [list(PairSampler(5, rank, 2)) for rank in (0, 1)] == [[0, 2, 4], [1, 3]]


# ---------------------------------------------------------------- networks and runs


@pytest.mark.parametrize("fusion, cascade, family", [("early", 1, "rigid"), ("late", 2, "affine")])
def test_an_untrained_network_predicts_the_identity(fusion, cascade, family):
    network = AffineParamsNet(family, fusion, widen_factor=0.125, cascade=cascade)
    images = torch.rand(2, 1, 16, 16, 16)
    total, passes = network(images, images.flip(2))
    assert total.shape == (2, 4, 4) and len(passes) == cascade
    assert torch.allclose(total, torch.eye(4).expand(2, 4, 4), atol=1e-6)


@pytest.mark.parametrize("extra", [[], ["model_config.model_args.fusion=late", "model_config.model_args.cascade=2", "model_config.model_args.family=similarity"]])
def test_a_two_step_run_of_each_network_writes_a_run_folder(dataset, tmp_path, extra):
    config = compose_config(*tiny(dataset, f"output_dir={tmp_path}", "run_name=run", "epochs=1", "data.pairs_per_epoch=4", "model_config.model_args.widen_factor=0.125", *extra))
    folder = run_training(config, QUIET)
    losses = logged_losses(folder)
    assert [step for step, _ in losses] == [0, 1] and all(math.isfinite(loss) for _, loss in losses)
    assert (folder / "checkpoints" / "last.ckpt").is_file() and (folder / "best-loss" / "model.pt").is_file()
    stored = continue_config(folder, [])[0]
    assert stored.data.train_patients == config.data.train_patients and len(stored.data.train_patients) == 4
    assert stored.model_config == config.model_config


class Kill(Callback):
    """Ends the run with an error before the given step, as a killed process would (no epoch-end hooks)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise RuntimeError("killed")


def test_a_run_killed_mid_epoch_continues_with_the_same_losses(dataset, tmp_path):
    overrides = tiny(dataset, f"output_dir={tmp_path}", "epochs=3", "checkpoint_steps=1", "deterministic=true", "model_config.model_args.widen_factor=0.125")
    whole = run_training(compose_config(*overrides, "run_name=whole"), QUIET)
    with pytest.raises(RuntimeError, match="killed"):
        run_training(compose_config(*overrides, "run_name=killed"), QUIET, [Kill(6)])
    config, notes = continue_config(tmp_path / "killed", ["epochs=3"])
    assert notes == []
    run_training(config, QUIET)
    expected, continued = logged_losses(whole), logged_losses(tmp_path / "killed")
    assert [step for step, _ in continued] == list(range(12)) == [step for step, _ in expected]
    assert np.allclose([loss for _, loss in continued], [loss for _, loss in expected], rtol=1e-6, atol=0)


def test_continuing_an_epoch_dependent_schedule_past_its_plan_warns(dataset, tmp_path):
    config = compose_config(*tiny(dataset, f"output_dir={tmp_path}", "run_name=cosine", "epochs=1", "lr_scheduler=cosine", "model_config.model_args.widen_factor=0.125"))
    folder = run_training(config, {**QUIET, "max_steps": 1})
    _, notes = continue_config(folder, ["epochs=4"])
    assert len(notes) == 1 and "CosineAnnealingLR" in notes[0] and "planned for 1 epochs" in notes[0]
    with pytest.raises(TrainingError, match="not a run folder"):
        continue_config(tmp_path, [])


def test_transfer_between_identical_networks_freezes_all_but_the_last_layers(dataset, tmp_path):
    source = run_training(compose_config(*tiny(dataset, f"output_dir={tmp_path}", "run_name=source", "epochs=1", "data.pairs_per_epoch=4", "model_config.model_args.widen_factor=0.125")), QUIET)
    saved = torch.load(source / "best-loss" / "model.pt", weights_only=True)["state_dict"]
    config = compose_config(*tiny(
        dataset, f"output_dir={tmp_path}", "run_name=target", "epochs=1", "model_config.model_args.widen_factor=0.125",
        f"transfer.source={source / 'best-loss' / 'model.pt'}", "transfer.trainable_last=2",
    ))
    target = run_training(config, {**QUIET, "max_steps": 1})
    after = torch.load(target / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    parameters = {name for name, _ in AffineParamsNet(widen_factor=0.125).named_parameters()}
    changed = [key for key in parameters if not torch.equal(after[f"network.{key}"], saved[key])]
    assert sorted(changed) == ["head.bias", "head.weight"]
    wrong = compose_config(*tiny(dataset, f"output_dir={tmp_path}", "run_name=wrong", "model_config.model_args.widen_factor=0.25", f"transfer.source={source / 'best-loss' / 'model.pt'}"))
    with pytest.raises(TrainingError, match="not an identical network"):
        run_training(wrong, {**QUIET, "max_steps": 1})


def test_ddp_with_two_cpu_processes_trains_on_both_shares(dataset, tmp_path):
    config = compose_config(*tiny(
        dataset, f"output_dir={tmp_path}", "run_name=ddp", "epochs=1", "accelerator=cpu", "devices=2", "strategy=ddp_spawn",
        "model_config.model_args.widen_factor=0.125",
    ))
    folder = run_training(config, QUIET)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_step"] == 2  # 8 pairs, 4 per process, batches of 2
    assert summary["best"]["loss"] is not None and math.isfinite(summary["best"]["loss"])


@pytest.mark.parametrize("family", ["rigid", "similarity", "affine"])
def test_the_weighted_least_squares_fit_recovers_a_known_transform(family):
    rng = np.random.default_rng(5)
    rotation = random_rotation(rng, 180.0)
    linear = rotation * (1.07 if family == "similarity" else 1.0)
    if family == "affine":
        linear = rotation @ np.diag([1.1, 0.9, 1.05]) @ np.array([[1, 0.04, -0.03], [0, 1, 0.05], [0, 0, 1]])
    truth = np.eye(4)
    truth[:3, :3], truth[:3, 3] = linear, rng.uniform(-5, 5, 3)
    source = rng.uniform(-20, 20, (2, 40, 3))
    target = source @ linear.T + truth[:3, 3]
    weights = rng.uniform(0.1, 1.0, (2, 40))
    fitted = fit_affine(torch.from_numpy(source), torch.from_numpy(target), torch.from_numpy(weights), family)
    assert torch.allclose(fitted, torch.from_numpy(truth).expand(2, 4, 4), atol=1e-5)
    noisy = target + rng.normal(0, 1, target.shape) * (weights[..., None] < 0.2)
    confident = fit_affine(torch.from_numpy(source), torch.from_numpy(noisy), torch.from_numpy(weights**4), family)
    uniform = fit_affine(torch.from_numpy(source), torch.from_numpy(noisy), torch.ones(2, 40, dtype=torch.float64), family)
    assert (confident - torch.from_numpy(truth)).abs().max() < (uniform - torch.from_numpy(truth)).abs().max()


def test_barycentres_are_where_the_heat_maps_peak():
    maps = torch.full((1, 2, 9, 11, 13), -30.0)
    maps[0, 0, 2, 5, 9] = 30.0
    maps[0, 1, :, :, :] = 0.0
    points, confidence = weighted_barycentres(maps)
    assert torch.allclose(points[0, 0], torch.tensor([9 - 6.0, 5 - 5.0, 2 - 4.0]), atol=1e-4)
    assert torch.allclose(points[0, 1], torch.zeros(3), atol=1e-5)
    assert confidence[0, 0] > 0.99 and confidence[0, 1] < 0.1



def test_the_script_runs_a_multirun_with_overrides(dataset, tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPOSITORY / "Scripts/run_affine_training.py"), "-m", "data.n_folds=2", "data.fold=0,1",
         *[item for item in tiny(dataset, f"output_dir={tmp_path}", "epochs=1", "data.pairs_per_epoch=4",
                                  "model_config.model_args.widen_factor=0.125") if not item.startswith("data.n_folds")],
         "hydra.job.chdir=false"],
        capture_output=True, text=True, encoding="utf-8", errors="replace", cwd=tmp_path, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    folders = sorted(path for path in tmp_path.glob("affine-fold*") if path.is_dir())
    assert [folder.name.split("-")[1] for folder in folders] == ["fold0", "fold1"]
    splits = [continue_config(folder, [])[0].data for folder in folders]
    assert [split.fold for split in splits] == [0, 1]
    assert splits[0].validation_patients != splits[1].validation_patients
    assert all((folder / "best-loss" / "model.pt").is_file() for folder in folders)


def test_list_models_describes_each_architecture_for_an_input_size(capsys):
    from RegSegLib import cli

    assert cli.main(["train", "list-models", "--input-size", "1@32x32x32"]) == 0
    out = capsys.readouterr().out
    assert "affine_params:" in out and "affine_matrix:" in out and "output: transform [1, 4, 4]" in out
    parameters = int(out.split("affine_params: ")[1].split(" parameters")[0].replace(",", ""))
    assert parameters == sum(p.numel() for p in AffineParamsNet(widen_factor=0.25).parameters())
    assert cli.main(["train", "list-models", "--input-size", "1@32x32"]) == 2
    assert "is not C@DxHxW" in capsys.readouterr().err
    assert cli.main(["train", "list-models", "--architecture", "plain_conv_unet", "--input-size", "2@40x44x37"]) == 0
    out = capsys.readouterr().out
    assert "n_stages=4" in out and "input 1 x 2@40x48x40 (the closest valid patch size)" in out
    assert "output: logits [1, 2, 40, 48, 40]" in out
    assert cli.main(["train", "list-models", "--architecture", "affine_params", "--input-size", "2@32x32x32"]) == 2
    assert "one channel per image, not 2" in capsys.readouterr().err


def test_the_rotation_curriculum_widens_the_angles_epoch_by_epoch(dataset):
    data = DataConfig(roots=[str(dataset)], rotation_curriculum_epochs=10, curriculum_start_deg=30.0, max_rotation_deg=180.0)
    assert [largest_angle(data, epoch) for epoch in (0, 5, 10, 50)] == [30.0, 105.0, 180.0, 180.0]
    assert largest_angle(DataConfig(roots=[str(dataset)], max_rotation_deg=90.0), 0) == 90.0
    rng = np.random.default_rng(0)
    angles = [
        np.degrees(np.arccos(np.clip((np.trace(random_transform(rng, "rigid", data, np.ones(3), 0).rotation) - 1) / 2, -1, 1)))
        for _ in range(300)
    ]
    assert max(angles) <= 30.0 + 1e-6 and max(angles) > 25.0
