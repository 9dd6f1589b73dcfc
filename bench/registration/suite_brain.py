"""Suite 1, brain-mr: subject B (moving) to subject A (fixed), 30 FreeSurfer structures, at 2 mm and 1 mm."""

from __future__ import annotations

from bench.common import SHARED_DATA, markdown_table
from bench.registration import methods
from bench.registration.harness import (
    METHOD_TITLES,
    Context,
    log,
    method_variants,
    read_field,
    read_labels,
    resample_to_spacing,
    write_nifti,
)
from RegSegLib.evaluation import dice_per_label, hd95_per_label, jacobian_statistics, mean_ignoring_nan
from RegSegLib.io.volumes import read_volume
from RegSegLib.transforms import resample

DATA = SHARED_DATA / "brain-mr"


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


def evaluate(fixed_seg, warped_seg, structures, spacing, with_hd95: bool) -> dict:
    dice = dice_per_label(fixed_seg, warped_seg, structures)
    answer = {"dice_mean": mean_ignoring_nan(dice), "dice": dice}
    if with_hd95:
        hd95 = hd95_per_label(fixed_seg, warped_seg, spacing, structures)
        answer["hd95_mean"] = mean_ignoring_nan(hd95)
    return answer


def run(ctx: Context) -> tuple[str, dict]:
    structures = labels()
    resolutions = [2.0] if ctx.quick else [2.0, None]
    rows = []
    for spacing in resolutions:
        name = "2 mm" if spacing else "1 mm (native)"
        log(f"suite 1 brain-mr {name}")
        files = prepare(ctx, spacing)
        fixed = read_volume(files["fixed"])
        fixed_seg = read_labels(files["fixed_seg"])
        with_hd95 = spacing is not None
        initial_seg = resample(read_volume(files["moving_seg"]), fixed, None, mode="nearest").data[0]
        rows.append({"resolution": name, "method": "initial", "run": "identity",
                     **evaluate(fixed_seg, initial_seg, structures, fixed.spacing, with_hd95)})
        for method, transform in method_variants(ctx, ["affine", "deformable"]):
            log(f"  {method} {transform}")
            out = ctx.job_dir("brain", f"{spacing or 1:g}mm", method, transform)
            result = ctx.run_job(
                method, out, fixed=files["fixed"], moving=files["moving"], transform=transform,
                warp=[(files["moving_seg"], "nearest")], export_field=transform == "deformable",
            )
            row = {"resolution": name, "method": method, "run": methods.peer_label(method, transform), **result}
            if "error" not in result:
                warped = read_labels(out / methods.warped_name(files["moving_seg"]))
                row.update(evaluate(fixed_seg, warped, structures, fixed.spacing, with_hd95))
                if transform == "deformable":
                    row["jacobian"] = jacobian_statistics(read_field(out / methods.OUTPUT_FIELD))
            rows.append(row)
            ctx.finish_job(out)
    table = markdown_table(
        ["resolution", "method", "run", "mean Dice (30)", "mean HD95 mm", "folding %", "SD log J", "time s", "peak RSS MB"],
        [
            [
                r["resolution"], METHOD_TITLES.get(r["method"], r["method"]), r["run"], r.get("dice_mean"),
                r.get("hd95_mean"),
                100 * r["jacobian"]["folding_fraction"] if "jacobian" in r else None,
                r["jacobian"]["log_std"] if "jacobian" in r else None,
                r.get("time_s") if r["method"] != "initial" else None,
                r.get("peak_rss_mb"),
            ]
            for r in rows
        ],
        digits=[0, 0, 0, 3, 2, 3, 3, 1, 0],
    )
    failures = [f"- {r['method']} {r['run']} ({r['resolution']}) failed: {r['error']}" for r in rows if "error" in r]
    body = "\n".join([
        "## Suite 1: brain-mr (subject B -> subject A)",
        "",
        "Inputs written once as NIfTI (2 mm: images linear, label maps nearest, RegSeg `resampled_grid`); every "
        "method reads the same files. Dice over the 30 structures of `labels.txt` on the fixed grid; labels "
        "warped with nearest neighbour by each method's own tool. Folding = share of voxels with Jacobian "
        "determinant <= 0 of the whole fixed-to-moving mapping, computed the same way for all methods from the "
        "exported displacement field. Time: reading the inputs, registering, writing the warped image and "
        "label map. Peak RSS: the job's own peak (the worker's resident memory including the imported library). "
        "HD95 at 2 mm only.",
        "",
        table,
        *([""] + failures if failures else []),
        "",
    ])
    return body, {"rows": rows, "labels": structures}
