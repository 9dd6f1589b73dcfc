"""Suite 3, lung-vessels: inhale (fixed, ``case_XXX_1``) to exhale (moving, ``case_XXX_2``), TRE on 4590 landmarks."""

from __future__ import annotations

import numpy as np

from bench.common import SHARED_DATA, markdown_table
from bench.registration import methods
from bench.registration.harness import (
    METHOD_TITLES,
    Context,
    log,
    point_errors,
    resample_to_spacing,
    write_nifti,
)
from RegSegLib.io.landmarks import read_landmarks
from RegSegLib.io.volumes import read_volume

DATA = SHARED_DATA / "lung-vessels"
SPACING_MM = 2.0
"""Working resolution of every method: the ~1 mm masks are resampled (linear, as float) to 2 mm once."""
REGSEG_OPTIONS = {"deformable": {"preset": "large-motion"}}
"""RegSeg's named setting for breathing motion (about +-10 working voxels)."""


def case_names(ctx: Context) -> list[str]:
    names = sorted(p.stem for p in (DATA / "landmarks").glob("case_*.csv"))
    if ctx.quick:
        return names[:1]
    return names[: ctx.cases] if ctx.cases else names


def prepare(ctx: Context, case: str) -> dict[str, str]:
    folder = ctx.work / "inputs" / f"lung_{SPACING_MM:g}mm" / case
    files = {}
    for key, suffix in (("fixed", "1"), ("moving", "2")):
        path = folder / f"{case}_{suffix}.nii.gz"
        if not path.exists():
            write_nifti(resample_to_spacing(read_volume(DATA / "test" / f"{case}_{suffix}.nii.gz"), SPACING_MM, "linear"), path)
        files[key] = str(path)
    points = folder / "fixed_points.npy"
    if not points.exists():
        np.save(points, read_landmarks(DATA / "landmarks" / f"{case}.csv")["fixed"])
    files["points"] = str(points)
    return files


def run(ctx: Context) -> tuple[str, dict]:
    cases = case_names(ctx)
    peer_count = len(cases) if ctx.peer_cases is None else min(ctx.peer_cases, len(cases))
    rows = []
    all_errors: dict[str, list] = {}
    for number, case in enumerate(cases):
        log(f"suite 3 lung-vessels {case} ({number + 1}/{len(cases)})")
        files = prepare(ctx, case)
        landmarks = read_landmarks(DATA / "landmarks" / f"{case}.csv")
        initial = np.linalg.norm(landmarks["fixed"] - landmarks["moving"], axis=1)
        all_errors.setdefault("initial", []).append(initial)
        rows.append({"case": case, "method": "initial", "run": "identity", "landmarks": len(initial),
                     "tre": point_errors(landmarks["fixed"], landmarks["moving"])})
        for method in ctx.peers:
            if method != "regseg" and number >= peer_count:
                continue
            out = ctx.job_dir("lung", case, method)
            result = ctx.run_job(
                method, out, fixed=files["fixed"], moving=files["moving"], transform="deformable",
                points=files["points"], options=REGSEG_OPTIONS if method == "regseg" else None,
            )
            row = {"case": case, "method": method, "run": methods.peer_label(method, "deformable"), **result}
            if "error" not in result:
                mapped = np.load(out / methods.OUTPUT_POINTS)
                row["tre"] = point_errors(mapped, landmarks["moving"])
                all_errors.setdefault(method, []).append(np.linalg.norm(mapped - landmarks["moving"], axis=1))
            rows.append(row)
            ctx.finish_job(out)
    summary = []
    for method in ["initial", *ctx.peers]:
        group = [r for r in rows if r["method"] == method]
        done = [r for r in group if "tre" in r]
        errors = np.concatenate(all_errors.get(method, [np.zeros(0)]))
        summary.append({
            "method": method,
            "run": group[0]["run"] if group else "",
            "pairs": len(group),
            "failed": len(group) - len(done),
            "landmarks": int(errors.size),
            "tre_mean": float(errors.mean()) if errors.size else None,
            "tre_median": float(np.median(errors)) if errors.size else None,
            "tre_p90": float(np.percentile(errors, 90)) if errors.size else None,
            "tre_case_mean": float(np.mean([r["tre"]["mean"] for r in done])) if done else None,
            "time_s": float(np.mean([r["time_s"] for r in done])) if done and method != "initial" else None,
            "peak_rss_mb": float(np.mean([r["peak_rss_mb"] for r in done])) if done and method != "initial" else None,
        })
    table = markdown_table(
        ["method", "run", "pairs", "failed", "landmarks", "TRE mean mm", "median", "p90", "mean of case means",
         "mean time s", "mean peak RSS MB"],
        [[METHOD_TITLES.get(s["method"], s["method"]), s["run"], s["pairs"], s["failed"], s["landmarks"], s["tre_mean"],
          s["tre_median"], s["tre_p90"], s["tre_case_mean"], s["time_s"], s["peak_rss_mb"]] for s in summary],
        digits=[0, 0, 0, 0, 0, 2, 2, 2, 2, 1, 0],
    )
    subset = (
        f" The peers ran on the first {peer_count} of the {len(cases)} pairs only ({', '.join(cases[:peer_count])});"
        " compare them with RegSeg's per-case rows in the JSON for those pairs."
        if peer_count < len(cases) and len(ctx.peers) > 1 else ""
    )
    per_case = markdown_table(
        ["case", *[METHOD_TITLES.get(m, m) for m in ["initial", *ctx.peers]]],
        [[case, *[next((r["tre"]["mean"] for r in rows if r["case"] == case and r["method"] == m and "tre" in r), None)
                  for m in ["initial", *ctx.peers]]] for case in cases],
        digits=[0] + [2] * (len(ctx.peers) + 1),
    )
    failures = sorted({f"- {r['method']} {r['case']}: {r['error']}" for r in rows if "error" in r})
    body = "\n".join([
        "## Suite 3: lung-vessels (inhale fixed, exhale moving)",
        "",
        f"{len(cases)} test pairs. Every method registers the same vessel-mask volumes resampled to {SPACING_MM:g} mm "
        "(linear, as float). TRE = |T(fixed landmark) - moving landmark| in mm, T the method's fixed-to-moving "
        "mapping applied to the landmarks with its own tool (ANTsPy `apply_transforms_to_points` with the forward "
        "transforms, elastix transformix point sets; ANTs and ITK points converted RAS <-> LPS). RegSeg runs "
        f"`pipeline` stages with the deformable preset `{REGSEG_OPTIONS['deformable']['preset']}`." + subset,
        "",
        table,
        "",
        "Mean TRE (mm) per pair:",
        "",
        per_case,
        *([""] + failures if failures else []),
        "",
    ])
    return body, {"rows": rows, "summary": summary, "spacing_mm": SPACING_MM, "peer_cases": cases[:peer_count]}
