"""Suite 5, multi-modal: prostate T2 axial (fixed) <- DWI / ADC (moving) after a known rigid perturbation.

The DWI or ADC series is moved by changing its geometry only: with ``ijk_to_ras' = A @ ijk_to_ras`` the
perturbed image satisfies ``moving'(A x) = moving(x)``, so the fixed-to-moving mapping that undoes it
is ``T_true = A`` (no interpolation of the data). T2 and DWI/ADC come from one session and are taken
as aligned before the perturbation; their real residual misalignment (patient motion, EPI distortion)
is part of the error floor. MR -> US (the other multi-modal pair) is suite 2.
"""

from __future__ import annotations

import numpy as np
import torch

from bench.common import SHARED_DATA
from bench.registration.harness import (
    Context,
    commands_section,
    error_table,
    failures_section,
    initial_base,
    log,
    point_rows,
    point_errors,
    runs_for,
    summarize,
    write_nifti,
)
from RegSegLib import geometry
from RegSegLib.io import read_volume
from RegSegLib.testing.known_transforms import foreground_points, random_affine
from RegSegLib.volume import Volume

PROSTATEX = SHARED_DATA / "prostatex"
PAIRS = (
    ("ProstateX-0000 T2 <- DWI", SHARED_DATA / "prostate-t2-dwi" / "test_0000_t2_tse_tra_4.nii.gz",
     SHARED_DATA / "prostate-t2-dwi" / "test_0000_ep2d_diff_tra_7.nii.gz"),
    ("ProstateX-0000 T2 <- ADC", PROSTATEX / "ProstateX-0000" / "07-07-2011" / "4.000000-t2tsetra-00702",
     PROSTATEX / "ProstateX-0000" / "07-07-2011" / "7.000000-ep2ddifftraDYNDISTADC-48780"),
    ("ProstateX-0001 T2 <- ADC", PROSTATEX / "ProstateX-0001" / "07-08-2011" / "6.000000-t2tsetra-76610",
     PROSTATEX / "ProstateX-0001" / "07-08-2011" / "8.000000-ep2ddifftraDYNDISTMIXADC-33954"),
)
RANGES = {"max_rot_deg": 15.0, "max_shift_mm": 15.0}
TUNED = {"affine": [("--metric", "mi"), ("--metric", "mind")]}
"""RegSeg's tuned runs: each multi-modal similarity (mutual information, MIND-SSC)."""
MAX_POINTS = 20_000


def inside(points: np.ndarray, volume: Volume) -> np.ndarray:
    """Mask of ``[N, 3]`` RAS points lying within ``volume``'s grid."""
    ijk = geometry.transform_points(np.linalg.inv(volume.ijk_to_ras), points)
    size = np.array(volume.shape[::-1]) - 1
    return np.all((ijk >= 0) & (ijk <= size), axis=1)


def run(ctx: Context) -> tuple[str, dict]:
    trials = 1 if ctx.quick else 3
    pairs = PAIRS[:1] if ctx.quick else PAIRS
    chosen = runs_for(ctx.peers, ["affine"], family="rigid", tuned=TUNED)
    rows = []
    for pair_index, (name, fixed_source, moving_source) in enumerate(pairs):
        folder = ctx.work / "inputs" / "multimodal" / f"pair{pair_index}"
        fixed = read_volume(fixed_source).to(dtype=torch.float32)
        moving = read_volume(moving_source).to(dtype=torch.float32)
        fixed_path = write_nifti(fixed, folder / "fixed_t2.nii.gz")
        candidates = foreground_points(fixed, max_points=None)
        candidates = candidates[inside(candidates, moving)]
        points = candidates[:: max(1, int(np.ceil(len(candidates) / MAX_POINTS)))]
        centre = geometry.grid_centre_ras(moving.ijk_to_ras, moving.shape)
        for trial in range(trials):
            log(f"suite 5 multimodal {name} trial {trial + 1}/{trials}")
            truth = random_affine("rigid", np.random.default_rng(7000 + 10 * pair_index + trial), centre, **RANGES)
            moving_path = write_nifti(Volume(moving.data, truth @ moving.ijk_to_ras), folder / f"moving_{trial}.nii.gz")
            target = geometry.transform_points(truth, points)
            base = {"pair": name, "trial": trial, "points": len(points), "true_matrix": truth.tolist()}
            rows.append({**base, **initial_base(), **errors(points, target)})
            rows += point_rows(
                ctx, chosen, ["multimodal", f"pair{pair_index}_{trial}"], fixed_path, moving_path, base, points,
                lambda mapped: errors(mapped, target),
            )
    summary = summarize(rows, ["mean_mm", "p95_mm", "max_mm"], by=["pair"])
    table = error_table(summary, "pair", "pair", "trials")
    body = "\n".join([
        "## Suite 5: multi-modal prostate MR (T2 fixed <- DWI / ADC moving)",
        "",
        "Known rigid perturbations (rotations up to 15 degrees, translations up to 15 mm, about the DWI/ADC "
        "centre) applied to the DWI/ADC geometry; every method registers rigidly: RegSeg with its defaults and, "
        "tuned, with mutual information and with MIND-SSC; ANTsPy `Rigid` and the elastix default `rigid` map, both "
        f"Mattes mutual information. Error = |T_est(x) - T_true(x)| over up to {MAX_POINTS} T2 foreground voxels "
        "inside the DWI/ADC field of view, mapped after the timed job with each method's own tool. T2 and DWI/ADC "
        "are assumed aligned before the perturbation, so their true residual misalignment is part of every "
        "method's error. MR -> US, the other multi-modal pair, is suite 2.",
        "",
        table,
        "",
        commands_section(ctx, chosen),
        *failures_section(rows, "pair"),
        "",
    ])
    return body, {"rows": rows, "summary": summary, "ranges": RANGES}


def errors(mapped: np.ndarray, target: np.ndarray) -> dict[str, float]:
    stats = point_errors(mapped, target)
    return {"mean_mm": stats["mean"], "p95_mm": stats["p95"], "max_mm": stats["max"]}
