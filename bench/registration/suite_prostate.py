"""Suite 2, prostate-mr-us: MR (moving) to transrectal US (fixed), gland Dice and landmark-centroid error."""

from __future__ import annotations

import math

import numpy as np
import torch

from bench.common import SHARED_DATA, markdown_table
from bench.registration.harness import (
    COST_DIGITS,
    COST_HEADERS,
    Context,
    centroid_ras,
    commands_section,
    cost_cells,
    evaluating,
    failures_section,
    initial_base,
    log,
    read_mask,
    row_base,
    runs_for,
    summarize,
    variant_cells,
    write_nifti,
)
from RegSegLib.evaluation import dice_per_label
from RegSegLib.io import read_volume
from RegSegLib.transforms import resample
from RegSegLib.volume import Volume

DATA = SHARED_DATA / "prostate-mr-us"
CHANNELS = ("gland", "landmark1", "landmark2")
TUNED = {"affine": [("--metric", "mind")], "deformable": [("--metric", "mind")]}
"""RegSeg's tuned runs: the multi-modal similarity MIND-SSC for both stages."""


def case_names(ctx: Context) -> list[str]:
    names = sorted(p.name[: -len(".nii.gz")] for p in (DATA / "us").glob("case*.nii.gz"))
    if ctx.quick:
        return names[:2]
    return names[: ctx.cases] if ctx.cases else names


def prepare(ctx: Context, case: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """Splits the label files into one 3D float file per channel (gland, up to two landmark blobs).

    Returns:
        The file paths and the channels this case has (some cases have the gland only, or one blob).
    """
    folder = ctx.work / "inputs" / "prostate" / case
    files = {"fixed": str(DATA / "us" / f"{case}.nii.gz"), "moving": str(DATA / "mr" / f"{case}.nii.gz")}
    counts = []
    for side, source in (("fixed", "us_labels"), ("moving", "mr_labels")):
        labels = read_volume(DATA / source / f"{case}.nii.gz")
        counts.append(labels.num_channels)
        for index, channel in enumerate(CHANNELS[: labels.num_channels]):
            path = folder / f"{side}_{channel}.nii.gz"
            if not path.exists():
                write_nifti(Volume(labels.data[index : index + 1].float(), labels.ijk_to_ras), path)
            files[f"{side}_{channel}"] = str(path)
    return files, CHANNELS[: min(counts)]


def evaluate(fixed_masks: dict, warped_masks: dict, ijk_to_ras: np.ndarray) -> dict:
    """Gland Dice and the distance between fixed and warped landmark-blob centroids (mm), for the blobs the case has."""
    gland = dice_per_label(fixed_masks["gland"].long(), warped_masks["gland"].long(), [1])[1]
    distances = []
    for channel in [c for c in CHANNELS[1:] if c in fixed_masks]:
        a = centroid_ras(fixed_masks[channel], ijk_to_ras)
        b = centroid_ras(warped_masks[channel], ijk_to_ras)
        distances.append(float(np.linalg.norm(a - b)) if a is not None and b is not None else math.nan)
    finite = [d for d in distances if math.isfinite(d)]
    return {
        "gland_dice": gland,
        "landmark_errors": distances,
        "landmark_error_mean": float(np.mean(finite)) if finite else math.nan,
        "landmarks_lost": len(distances) - len(finite),
    }


def run(ctx: Context) -> tuple[str, dict]:
    rows = []
    cases = case_names(ctx)
    chosen = runs_for(ctx.peers, ["affine", "deformable"], tuned=TUNED)
    for number, case in enumerate(cases):
        log(f"suite 2 prostate-mr-us {case} ({number + 1}/{len(cases)})")
        files, channels = prepare(ctx, case)
        fixed = read_volume(files["fixed"])
        fixed_masks = {c: read_mask(files[f"fixed_{c}"]) for c in channels}
        initial = {
            c: resample(read_volume(files[f"moving_{c}"]).to(dtype=torch.float32), fixed, mode="linear").data[0] > 0.5
            for c in channels
        }
        rows.append({"case": case, **initial_base(), **evaluate(fixed_masks, initial, fixed.ijk_to_ras)})
        for variant in chosen:
            job = ctx.register(variant, ["prostate", case], files["fixed"], files["moving"])
            row = {"case": case, **row_base(variant), **job.measured}
            if not job.failed:
                with evaluating(row):
                    warped = ctx.export(job, masks=[files[f"moving_{c}"] for c in channels]).masks
                    row.update(evaluate(fixed_masks, {c: m > 0.5 for c, m in zip(channels, warped)}, fixed.ijk_to_ras))
            rows.append(row)
            ctx.finish(job)
    summary = summarize(rows, ["gland_dice", "landmark_error_mean"], totals=["landmarks_lost"])
    table = markdown_table(
        ["method", "transform", "run", "pairs", "failed", "mean gland Dice", "mean landmark-centroid error mm",
         "blobs lost", *COST_HEADERS],
        [[*variant_cells(s), s["cases"], s["failed"], s["gland_dice"], s["landmark_error_mean"], s["landmarks_lost"],
          *cost_cells(s)] for s in summary],
        digits=[0, 0, 0, 0, 0, 3, 2, 0, *COST_DIGITS],
    )
    body = "\n".join([
        "## Suite 2: prostate-mr-us (MR moving -> US fixed)",
        "",
        f"{len(cases)} pairs ({', '.join(cases) if len(cases) <= 4 else cases[0] + ' ... ' + cases[-1]}). Every job "
        "registers the MR to the US and writes its result folder; the masks are warped afterwards (not timed), each "
        "method with its own tool from the transforms it wrote (RegSeg: `transform.h5` read back and applied by "
        "RegSegLib; ANTs `apply_transforms`; transformix), as floats with linear interpolation, thresholded at 0.5. "
        "Gland = channel 0 of the label files, landmark blobs = channels 1-2 where the case has them. Landmark error "
        "= distance between the centroids of the fixed blob and of the warped moving blob (a blob that vanishes "
        "counts as lost and is left out of the mean). ANTsPy and elastix use their defaults (Mattes mutual "
        "information).",
        "",
        table,
        "",
        commands_section(ctx, chosen),
        *failures_section(rows, "case"),
        "",
    ])
    return body, {"rows": rows, "summary": summary}
