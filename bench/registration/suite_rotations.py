"""Suite 7, large rotations (HyReg): rigid misalignments of 90-180 degrees about random axes plus shifts up
to 20 mm, on volumes the shipped affine model never saw.

As in suite 4, a real volume is the moving image and the fixed image is that volume resampled on its own
grid through a known fixed-to-moving rigid mapping ``T_true`` (about the image centre). Rows: the engine
alone (``regseg register --transform rigid``, defaults), HyReg (the same plus ``--model``), and the
network's prediction alone (``--method network --model``). Error ``|T_est(x) - T_true(x)|`` (mm) over the
fixed image's foreground voxels.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from bench.common import SHARED_DATA
from bench.registration.harness import (
    Context,
    Run,
    commands_section,
    error_table,
    failures_section,
    initial_base,
    log,
    point_rows,
    summarize,
    write_nifti,
)
from bench.registration.suite_known import transform_error
from RegSegLib import geometry
from RegSegLib.io import read_volume
from RegSegLib.testing.known_transforms import foreground_points
from RegSegLib.transforms import AffineTransform, resample
from RegSegLib.volume import Volume

MODEL = "regseg-affine-rigid"
"""The shipped affine model (``regseg models list``)."""
ANGLES_DEG = (90.0, 180.0)
MAX_SHIFT_MM = 20.0
TRIALS = 3
MAX_POINTS = 20_000


def volumes(ctx: Context) -> dict[str, Volume]:
    """Held-out volumes of three kinds of anatomy: a second brain (MR, skull-stripped), a prostate T2 of a
    patient and a prostate MR case of the test set, an abdominal MR."""
    chosen = {"brain-mr subject_b": read_volume(SHARED_DATA / "brain-mr" / "subject_b_t1.nii.gz")}
    if not ctx.quick:
        chosen["prostate T2 (ProstateX-0000)"] = read_volume(SHARED_DATA / "prostate-t2-dwi" / "test_0000_t2_tse_tra_4.nii.gz")
        chosen["prostate MR case 22"] = read_volume(SHARED_DATA / "prostate-mr-us" / "mr" / "case000022.nii.gz")
        chosen["abdomen MR"] = read_volume(SHARED_DATA / "abdomen-ct" / "example_mr_sm.nii.gz")
    return {name: volume.to(dtype=torch.float32) for name, volume in chosen.items()}


def large_rotation(rng: np.random.Generator, centre: np.ndarray) -> np.ndarray:
    """A rigid RAS matrix about ``centre``: a uniform random axis, an angle uniform in :data:`ANGLES_DEG`, a
    shift uniform in ``[-20, 20]`` mm per axis."""
    rotation = geometry.axis_angle_rotation(rng.normal(size=3), math.radians(rng.uniform(*ANGLES_DEG)))
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = centre + rng.uniform(-MAX_SHIFT_MM, MAX_SHIFT_MM, 3) - rotation @ centre
    return matrix


def runs(ctx: Context) -> list[Run]:
    """The engine alone, HyReg and the network alone (RegSeg only: the peers have no learned start)."""
    return [
        Run("regseg", "affine", "rigid"),
        Run("regseg", "affine", "rigid", ("--model", MODEL)),
        Run("regseg", "network", "rigid", ("--model", MODEL)),
    ]


def run(ctx: Context) -> tuple[str, dict]:
    rows = []
    variants = runs(ctx)
    for volume_index, (name, moving) in enumerate(volumes(ctx).items()):
        for trial in range(1 if ctx.quick else TRIALS):
            rng = np.random.default_rng(7000 + 100 * volume_index + trial)
            centre = geometry.grid_centre_ras(moving.ijk_to_ras, moving.shape)
            truth = AffineTransform(large_rotation(rng, centre))
            fixed = resample(moving, moving, truth, padding_value=float(moving.data.min()))
            key = f"{name.split(' ')[0]}_{volume_index}_{trial}"
            log(f"suite 7 large rotations {key}")
            folder = ctx.work / "inputs" / "rotations" / key
            fixed_path = write_nifti(fixed, folder / "fixed.nii.gz")
            moving_path = write_nifti(moving, folder / "moving.nii.gz")
            points = foreground_points(fixed, max_points=MAX_POINTS)
            target = truth.transform_points(torch.from_numpy(points)).double().numpy()
            angle = math.degrees(math.acos(max(-1.0, min(1.0, (np.trace(truth.matrix[:3, :3]) - 1) / 2))))
            base = {"volume": name, "trial": trial, "angle_deg": angle, "points": len(points), "family": "rigid"}
            rows.append({**base, **initial_base(), **transform_error(points, target)})
            rows += point_rows(
                ctx, variants, ["rotations", key], fixed_path, moving_path, base, points, lambda mapped: transform_error(mapped, target)
            )
    summary = summarize(rows, ["mean_mm", "p95_mm", "max_mm"], by=["volume"])
    table = error_table(summary, "volume", "volume", "pairs")
    body = "\n".join([
        "## Suite 7: large rotations (HyReg)",
        "",
        f"Rigid misalignments of {ANGLES_DEG[0]:g}-{ANGLES_DEG[1]:g} degrees about uniform random axes plus shifts up "
        f"to {MAX_SHIFT_MM:g} mm per axis, about the image centre, {TRIALS} per volume (fixed seeds), on volumes the "
        f"shipped model `{MODEL}` never saw. Rows: the engine alone with its defaults, HyReg (`--model`: the "
        "network's prediction starts the engine) and the network alone (`--method network`). Error over up to "
        f"{MAX_POINTS} foreground voxels of the fixed image, as in suite 4.",
        "",
        table,
        "",
        commands_section(ctx, variants),
        *failures_section(rows, "volume"),
        "",
    ])
    return body, {"rows": rows, "summary": summary}
