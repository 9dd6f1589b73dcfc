"""Suite 4, known-transform recovery: random affines of each family and random smooth deformations.

A real volume is the moving image; the fixed image is that volume resampled on its own grid through a
known fixed-to-moving mapping ``T_true`` (``fixed(x) = moving(T_true(x))``). Each method registers the
pair; the error is ``|T_est(x) - T_true(x)|`` (mm) over the fixed image's foreground voxels, ``T_est``
applied to those points with the method's own point-mapping tool.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from bench.common import SHARED_DATA, markdown_table
from bench.registration.harness import (
    COST_DIGITS,
    COST_HEADERS,
    Context,
    Run,
    commands_section,
    cost_cells,
    failures_section,
    initial_base,
    log,
    point_rows,
    point_errors,
    resample_to_spacing,
    summarize,
    variant_cells,
    write_nifti,
)
from RegSegLib.io import read_volume
from RegSegLib.testing.known_transforms import foreground_points, synthetic_affine_pair
from RegSegLib.transforms import DisplacementField, integrate_velocity, resample
from RegSegLib.volume import Volume

FAMILIES = ("rigid", "similarity", "anisotropic", "affine")
RANGES = {"max_rot_deg": 15.0, "max_shift_mm": 15.0, "max_scale": 0.10}
MAX_POINTS = 20_000
"""Foreground points per pair (a regular subset): enough for stable mean / p95 / max."""
SMOOTH_CONTROL_MM = 16.0
"""Spacing of the random velocity's control grid."""
SMOOTH_STD_MM = 3.0
"""Standard deviation of each velocity component at the control points (max displacement about 8-10 mm)."""


def volumes(ctx: Context) -> dict[str, Volume]:
    """The moving images: brain (2 mm), prostate T2 (native), abdominal CT (3 mm native)."""
    brain = resample_to_spacing(read_volume(SHARED_DATA / "brain-mr" / "subject_a_t1.nii.gz"), 2.0, "linear")
    chosen = {"brain-mr 2 mm": brain}
    if not ctx.quick:
        chosen["prostate T2"] = read_volume(SHARED_DATA / "prostate-t2-dwi" / "test_0000_t2_tse_tra_4.nii.gz")
        chosen["abdomen CT"] = read_volume(SHARED_DATA / "abdomen-ct" / "example_ct.nii.gz")
    return {name: volume.to(dtype=torch.float32) for name, volume in chosen.items()}


def random_smooth_field(volume: Volume, rng: np.random.Generator) -> DisplacementField:
    """A random diffeomorphic displacement on ``volume``'s grid: a smooth stationary velocity, exponentiated.

    The velocity is Gaussian noise (``SMOOTH_STD_MM``) on a control grid of ``SMOOTH_CONTROL_MM`` spacing,
    upsampled trilinearly to the full grid, expressed in RAS and integrated by scaling and squaring.
    """
    extent = volume.spacing * np.array(volume.shape[::-1])
    coarse = [max(int(round(e / SMOOTH_CONTROL_MM)) + 1, 3) for e in extent[::-1]]
    noise = torch.from_numpy(rng.normal(0.0, SMOOTH_STD_MM, size=(1, 3, *coarse))).float()
    velocity = F.interpolate(noise, size=volume.shape, mode="trilinear", align_corners=True)[0]
    directions = volume.ijk_to_ras[:3, :3] / volume.spacing
    velocity = torch.einsum("ab,bkji->akji", torch.as_tensor(directions, dtype=torch.float32), velocity)
    return integrate_velocity(DisplacementField(velocity, volume.ijk_to_ras.copy()))


def pairs(ctx: Context) -> list[dict]:
    """Every synthetic pair: name, kind, family, moving, fixed and the true mapping of the fixed points."""
    trials = 1 if ctx.quick else 2
    families = ("rigid", "affine") if ctx.quick else FAMILIES
    chosen = []
    for volume_index, (name, moving) in enumerate(volumes(ctx).items()):
        for family_index, family in enumerate(families):
            for trial in range(trials):
                rng = np.random.default_rng(1000 * volume_index + 10 * family_index + trial)
                fixed, truth = synthetic_affine_pair(moving, family, rng, **RANGES)
                chosen.append({"volume": name, "kind": "affine", "family": family, "trial": trial,
                               "moving": moving, "fixed": fixed, "truth": truth})
        if name.startswith("brain"):
            for trial in range(trials):
                truth = random_smooth_field(moving, np.random.default_rng(5000 + trial))
                fixed = resample(moving, moving, truth)
                chosen.append({"volume": name, "kind": "deformable", "family": "smooth", "trial": trial,
                               "moving": moving, "fixed": fixed, "truth": truth})
    return chosen


def runs(ctx: Context, pair: dict) -> list[Run]:
    """Every method with its defaults: the pair's affine family, or affine + deformable for a smooth deformation."""
    if pair["kind"] == "affine":
        return [Run(method, "affine", pair["family"]) for method in ctx.peers]
    return [Run(method, "deformable") for method in ctx.peers]


def run(ctx: Context) -> tuple[str, dict]:
    rows = []
    chosen = pairs(ctx)
    commands: list[Run] = []
    for number, pair in enumerate(chosen):
        key = f"{pair['volume'].replace(' ', '_')}_{pair['family']}_{pair['trial']}"
        log(f"suite 4 known transforms {key} ({number + 1}/{len(chosen)})")
        folder = ctx.work / "inputs" / "known" / key
        fixed_path = write_nifti(pair["fixed"], folder / "fixed.nii.gz")
        moving_path = write_nifti(pair["moving"], folder / "moving.nii.gz")
        points = foreground_points(pair["fixed"], max_points=MAX_POINTS)
        target = pair["truth"].transform_points(torch.from_numpy(points)).double().numpy()
        base = {"volume": pair["volume"], "kind": pair["kind"], "family": pair["family"], "trial": pair["trial"],
                "points": len(points)}
        if pair["kind"] == "affine":
            base["true_matrix"] = pair["truth"].matrix.tolist()
        rows.append({**base, **initial_base(), **transform_error(points, target)})
        variants = runs(ctx, pair)
        commands += [variant for variant in variants if variant not in commands]
        rows += point_rows(
            ctx, variants, ["known", key], fixed_path, moving_path, base, points, lambda mapped: transform_error(mapped, target)
        )
    summary = summarize(rows, ["mean_mm", "p95_mm", "max_mm"], by=["volume", "family"])
    table = markdown_table(
        ["volume", "mapping", "method", "transform", "run", "pairs", "failed", "mean error mm", "p95 mm", "max mm",
         *COST_HEADERS],
        [[s["volume"], s["family"], *variant_cells(s), s["cases"], s["failed"], s["mean_mm"], s["p95_mm"], s["max_mm"],
          *cost_cells(s)] for s in summary],
        digits=[0, 0, 0, 0, 0, 0, 0, 2, 2, 2, *COST_DIGITS],
    )
    body = "\n".join([
        "## Suite 4: known-transform recovery",
        "",
        "Random affines per family (rotations up to 15 degrees about each axis, translations up to 15 mm, scale "
        "deviations up to 10 %, shears up to 0.05 for `affine`; RegSegLib `testing.known_transforms.random_affine`, about "
        "the image centre) and random smooth diffeomorphic deformations (stationary velocity with components of "
        f"{SMOOTH_STD_MM:g} mm std on a {SMOOTH_CONTROL_MM:g} mm control grid, scaling and squaring). Error over up "
        f"to {MAX_POINTS} foreground voxels of the fixed image (values above 10 % of the 1-99 % intensity range), "
        "mapped after the timed job with each method's own tool (RegSeg: `transform.h5` read back by RegSegLib). "
        "Each method registers with its own family: RegSeg `--transform`, ANTsPy Rigid / Similarity / Affine, elastix "
        "default rigid / affine maps (no similarity or anisotropic map, so those use affine); smooth deformations use "
        "the deformable runs (RegSeg affine + deformable, ANTsPy SyN, elastix affine + B-spline). Seeds are fixed, "
        "so every method sees the same pairs.",
        "",
        table,
        "",
        commands_section(ctx, commands),
        *failures_section(rows, "volume", "family"),
        "",
    ])
    return body, {"rows": rows, "summary": summary, "ranges": RANGES}


def transform_error(mapped: np.ndarray, target: np.ndarray) -> dict[str, float]:
    stats = point_errors(mapped, target)
    return {"mean_mm": stats["mean"], "p95_mm": stats["p95"], "max_mm": stats["max"]}
