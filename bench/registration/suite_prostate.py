"""Suite 2, prostate-mr-us: MR (moving) to transrectal US (fixed), gland Dice and landmark-centroid error."""

from __future__ import annotations

import math

import numpy as np
import torch

from bench.common import SHARED_DATA, markdown_table
from bench.registration import methods
from bench.registration.harness import (
    METHOD_TITLES,
    Context,
    centroid_ras,
    log,
    method_variants,
    read_mask,
    summarize,
    write_nifti,
)
from RegSegLib.evaluation import dice_per_label
from RegSegLib.io.volumes import read_volume
from RegSegLib.transforms import resample
from RegSegLib.volume import Volume

DATA = SHARED_DATA / "prostate-mr-us"
CHANNELS = ("gland", "landmark1", "landmark2")
REGSEG_METRIC = "mind"
"""Multi-modal similarity RegSeg uses here (both stages)."""


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
    for number, case in enumerate(cases):
        log(f"suite 2 prostate-mr-us {case} ({number + 1}/{len(cases)})")
        files, channels = prepare(ctx, case)
        fixed = read_volume(files["fixed"])
        fixed_masks = {c: read_mask(files[f"fixed_{c}"]) for c in channels}
        initial = {
            c: resample(read_volume(files[f"moving_{c}"]).to(dtype=torch.float32), fixed).data[0] > 0.5
            for c in channels
        }
        rows.append({"case": case, "method": "initial", "run": "identity", **evaluate(fixed_masks, initial, fixed.ijk_to_ras)})
        for method, transform in method_variants(ctx, ["affine", "deformable"]):
            out = ctx.job_dir("prostate", case, method, transform)
            result = ctx.run_job(
                method, out, fixed=files["fixed"], moving=files["moving"], transform=transform,
                metric=REGSEG_METRIC if method == "regseg" else None,
                warp=[(files[f"moving_{c}"], "linear") for c in channels],
            )
            row = {"case": case, "method": method, "run": methods.peer_label(method, transform), **result}
            if "error" not in result:
                warped = {c: read_mask(out / methods.warped_name(files[f"moving_{c}"])) for c in channels}
                row.update(evaluate(fixed_masks, warped, fixed.ijk_to_ras))
            rows.append(row)
            ctx.finish_job(out)
    groups: dict[tuple[str, str], list] = {}
    for row in rows:
        groups.setdefault((row["method"], row["run"]), []).append(row)
    summary = []
    for (method, run_name), group in groups.items():
        stats = summarize(group, ["gland_dice", "landmark_error_mean", "time_s", "peak_rss_mb"])
        stats["landmarks_lost"] = int(sum(r.get("landmarks_lost", 0) for r in group if "error" not in r))
        summary.append({"method": method, "run": run_name, **stats})
    table = markdown_table(
        ["method", "run", "pairs", "failed", "mean gland Dice", "mean landmark-centroid error mm", "blobs lost",
         "mean time s", "mean peak RSS MB"],
        [
            [METHOD_TITLES.get(s["method"], s["method"]), s["run"], s["cases"], s["failed"], s["gland_dice"],
             s["landmark_error_mean"], s["landmarks_lost"], s["time_s"] if s["method"] != "initial" else None,
             s["peak_rss_mb"]]
            for s in summary
        ],
        digits=[0, 0, 0, 0, 3, 2, 0, 2, 0],
    )
    failures = sorted({f"- {r['method']} {r['run']}: {r['error']}" for r in rows if "error" in r})
    body = "\n".join([
        "## Suite 2: prostate-mr-us (MR moving -> US fixed)",
        "",
        f"{len(cases)} pairs ({', '.join(cases) if len(cases) <= 4 else cases[0] + ' ... ' + cases[-1]}). Gland = "
        "channel 0 of the label files, landmark blobs = channels 1-2 where the case has them, each warped as a float mask with linear "
        "interpolation by the method's own tool and thresholded at 0.5. Landmark error = distance between the "
        "centroids of the fixed blob and of the warped moving blob (a blob that vanishes counts as lost and is left "
        f"out of the mean). RegSeg uses metric `{REGSEG_METRIC}` for both stages; ANTsPy and elastix use their "
        "defaults (Mattes mutual information).",
        "",
        table,
        *([""] + failures if failures else []),
        "",
    ])
    return body, {"rows": rows, "summary": summary}
