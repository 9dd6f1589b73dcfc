"""Suite 1, brain-mr: subject B (moving) to subject A (fixed), 30 FreeSurfer structures, at 2 mm and 1 mm."""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.common import SHARED_DATA, markdown_table
from bench.registration.harness import (
    COST_DIGITS,
    COST_HEADERS,
    METHOD_TITLES,
    WARPED_LABELS,
    Context,
    Run,
    commands_section,
    cost_cells,
    evaluating,
    failures_section,
    initial_base,
    log,
    read_labels,
    resample_to_spacing,
    row_base,
    runs_for,
    summarize,
    variant_cells,
    write_nifti,
)
from RegSegLib.evaluation import dice_per_label, hd95_per_label, jacobian_statistics, mean_ignoring_nan
from RegSegLib.io import read_volume
from RegSegLib.transforms import resample

DATA = SHARED_DATA / "brain-mr"
TUNED_1MM = {"deformable": [("--spacing", "2")]}
"""RegSeg's tuned run at 1 mm: the deformable stage at 2 mm (the affine stage is unchanged)."""


def labels() -> list[int]:
    return [int(v) for v in (DATA / "labels.txt").read_text().split()]


def prepare(ctx: Context, spacing: float | None) -> dict[str, str]:
    """Input files at ``spacing`` mm (images linear, label maps nearest) or the native 1 mm files."""
    names = {"fixed": "subject_a_t1", "moving": "subject_b_t1", "fixed_seg": "subject_a_aseg", "moving_seg": "subject_b_aseg"}
    if spacing is None:
        return {key: str(DATA / f"{name}.nii.gz") for key, name in names.items()}
    folder = ctx.work / "inputs" / f"brain_{spacing:g}mm"
    files = {}
    for key, name in names.items():
        path = folder / f"{name}.nii.gz"
        if not path.exists():
            volume = read_volume(DATA / f"{name}.nii.gz")
            write_nifti(resample_to_spacing(volume, spacing, "nearest" if key.endswith("seg") else "linear"), path)
        files[key] = str(path)
    return files


def evaluate(fixed_seg, warped_seg, structures, spacing, with_hd95: bool) -> dict[str, Any]:
    dice = dice_per_label(fixed_seg, warped_seg, structures)
    answer: dict[str, Any] = {"dice_mean": mean_ignoring_nan(dice), "dice": dice}
    if with_hd95:
        hd95 = hd95_per_label(fixed_seg, warped_seg, spacing, structures)
        answer["hd95_mean"] = mean_ignoring_nan(hd95)
    return answer


def run(ctx: Context) -> tuple[str, dict]:
    structures = labels()
    resolutions = [2.0] if ctx.quick else [2.0, None]
    rows = []
    commands = []
    repeated = None
    for spacing in resolutions:
        name = "2 mm" if spacing else "1 mm (native)"
        log(f"suite 1 brain-mr {name}")
        files = prepare(ctx, spacing)
        fixed = read_volume(files["fixed"])
        fixed_seg = read_labels(files["fixed_seg"])
        with_hd95 = spacing is not None
        initial_seg = resample(read_volume(files["moving_seg"]), fixed, None, mode="nearest").data[0]
        initial = evaluate(fixed_seg, initial_seg, structures, fixed.spacing, with_hd95)
        rows.append({"resolution": name, **initial_base(), **initial})
        chosen = runs_for(ctx.peers, ["affine", "deformable"], tuned=None if spacing else TUNED_1MM)
        commands.extend(variant for variant in chosen if variant not in commands)
        for variant in chosen:
            job = ctx.register(variant, ["brain", f"{spacing or 1:g}mm"], files["fixed"], files["moving"],
                               labels=(files["fixed_seg"], files["moving_seg"]))
            row = {"resolution": name, **row_base(variant), **job.measured}
            if not job.failed:
                with evaluating(row):
                    warped = read_labels(job.out / WARPED_LABELS)
                    row.update(evaluate(fixed_seg, warped, structures, fixed.spacing, with_hd95))
                    if variant.kind == "deformable":
                        row["jacobian"] = jacobian_statistics(ctx.export(job, with_field=True).displacement)
            rows.append(row)
            ctx.finish(job)
        if spacing == 2.0 and ctx.repeats:
            timed = [variant for variant in chosen if variant.kind == "deformable" and variant.run == "defaults"]
            log(f"suite 1 brain-mr 2 mm: {ctx.repeats} alternating runs of {', '.join(v.key for v in timed)}")
            repeated = (timed, ctx.alternating_times(timed, ["brain", "2mm"], files["fixed"], files["moving"],
                                                     labels=(files["fixed_seg"], files["moving_seg"])))
    for row in rows:
        if "jacobian" in row:
            row["folding_percent"] = 100 * row["jacobian"]["folding_fraction"]
            row["log_jacobian_std"] = row["jacobian"]["log_std"]
    summary = summarize(rows, ["dice_mean", "hd95_mean", "folding_percent", "log_jacobian_std"], by=["resolution"])
    table = markdown_table(
        ["resolution", "method", "transform", "run", "pairs", "failed", "mean Dice (30)", "mean HD95 mm", "folding %",
         "SD log J", *COST_HEADERS],
        [[s["resolution"], *variant_cells(s), s["cases"], s["failed"], s["dice_mean"], s["hd95_mean"],
          s["folding_percent"], s["log_jacobian_std"], *cost_cells(s)] for s in summary],
        digits=[0, 0, 0, 0, 0, 0, 3, 2, 3, 3, *COST_DIGITS],
    )
    body = "\n".join([
        "## Suite 1: brain-mr (subject B -> subject A)",
        "",
        "Inputs written once as NIfTI (2 mm: images linear, label maps nearest, RegSeg `resampled_grid`); every "
        "method reads the same files and writes the warped label map itself (nearest neighbour; RegSeg through "
        "`--fixed-labels`/`--moving-labels`, the peers with their own tools). Dice over the 30 structures of "
        "`labels.txt` on the fixed grid, HD95 at 2 mm only. Folding = share of voxels with Jacobian determinant "
        "<= 0 of the whole fixed-to-moving mapping, computed by the same code for every method from a displacement "
        "field on the fixed grid (RegSeg: `transform.h5` sampled; ANTs: its composed warp; elastix: transformix's "
        "deformation field), exported after the timed job.",
        "",
        table,
        "",
        *repeats_section(repeated),
        commands_section(ctx, commands, labels=True),
        *failures_section(rows, "resolution"),
        "",
    ])
    payload = {"rows": rows, "summary": summary, "labels": structures}
    if repeated is not None:
        payload["repeated_times_s"] = repeated[1]
    return body, payload


def repeats_section(repeated: tuple[list[Run], dict[str, list[float]]] | None) -> list[str]:
    """The paired timing at 2 mm: each method's median over alternating runs and the per-pair ratio."""
    if repeated is None:
        return []
    runs, times = repeated
    table = markdown_table(
        ["method", "transform", "runs", "median s", "min s", "max s"],
        [[METHOD_TITLES[run.method], run.transform, len(times[run.key]),
          *((float(np.median(v)), float(min(v)), float(max(v))) if (v := times[run.key]) else (None,) * 3)]
         for run in runs],
        digits=[0, 0, 0, 1, 1, 1],
    )  # fmt: skip
    lines = [
        f"Paired timing at 2 mm: the affine + deformable defaults of each method run again in turn (A B A B ...), "
        f"{max((len(t) for t in times.values()), default=0)} times each; the ratio is taken pair by pair.",
        "",
        table,
    ]
    ours = next((times[run.key] for run in runs if run.method == "regseg"), [])
    for run in runs:
        theirs = times[run.key]
        if run.method == "regseg" or not ours or len(theirs) != len(ours):
            continue
        ratios = [a / b for a, b in zip(ours, theirs)]
        lines += ["", f"RegSeg / {METHOD_TITLES[run.method]} {run.transform}, pair by pair: median {np.median(ratios):.2f} "
                      f"(min {min(ratios):.2f}, max {max(ratios):.2f})."]
    return lines + [""]
