"""Suite 3, lung-vessels: inhale (fixed, ``case_XXX_1``) to exhale (moving, ``case_XXX_2``), TRE on 4590 landmarks.

Every method reads the native files (about 1 mm, 339 x 237 x 306 voxels); nothing is resampled beforehand.
"""

from __future__ import annotations

import numpy as np

from bench.common import SHARED_DATA, markdown_table
from bench.registration.harness import (
    COST_DIGITS,
    COST_HEADERS,
    Context,
    commands_section,
    cost_cells,
    evaluating,
    distance_summary,
    failures_section,
    initial_base,
    log,
    point_errors,
    row_base,
    runs_for,
    summarize,
    variant_cells,
)
from RegSegLib.io import read_landmarks

DATA = SHARED_DATA / "lung-vessels"
TUNED = {"deformable": [("--preset", "large-motion")]}
"""RegSeg's tuned run: the named setting for breathing motion (a wider displacement search)."""


def case_names(ctx: Context) -> list[str]:
    names = sorted(p.stem for p in (DATA / "landmarks").glob("case_*.csv"))
    if ctx.quick:
        return names[:1]
    return names[: ctx.cases] if ctx.cases else names


def run(ctx: Context) -> tuple[str, dict]:
    cases = case_names(ctx)
    peer_count = len(cases) if ctx.peer_cases is None else min(ctx.peer_cases, len(cases))
    chosen = runs_for(ctx.peers, ["deformable"], tuned=TUNED)
    rows = []
    errors: dict[tuple, list[np.ndarray]] = {}
    for number, case in enumerate(cases):
        log(f"suite 3 lung-vessels {case} ({number + 1}/{len(cases)})")
        fixed, moving = str(DATA / "test" / f"{case}_1.nii.gz"), str(DATA / "test" / f"{case}_2.nii.gz")
        landmarks = read_landmarks(DATA / "landmarks" / f"{case}.csv")
        initial = initial_base()
        rows.append({"case": case, **initial, "landmarks": len(landmarks["fixed"]),
                     "tre": point_errors(landmarks["fixed"], landmarks["moving"])})
        distances = np.linalg.norm(landmarks["fixed"] - landmarks["moving"], axis=1)
        errors.setdefault(tuple(initial.values()), []).append(distances)
        for variant in chosen:
            if variant.method != "regseg" and number >= peer_count:
                continue
            job = ctx.register(variant, ["lung", case], fixed, moving)
            base = row_base(variant)
            row = {"case": case, **base, **job.measured}
            if not job.failed:
                with evaluating(row):
                    mapped = ctx.export(job, points=landmarks["fixed"]).points
                    row["landmarks"] = len(mapped)
                    row["tre"] = point_errors(mapped, landmarks["moving"])
                    distances = np.linalg.norm(mapped - landmarks["moving"], axis=1)
                    errors.setdefault(tuple(base.values()), []).append(distances)
            rows.append(row)
            ctx.finish(job)
    for row in rows:
        if "tre" in row:
            row["tre_case_mean"] = row["tre"]["mean"]
    summary = summarize(rows, ["tre_case_mean"])
    for entry in summary:
        variant = (entry["method"], entry["transform"], entry["run"], entry["flags"])
        pooled = np.concatenate(errors.get(variant, [np.zeros(0)]))
        entry["landmarks"] = int(pooled.size)
        entry.update({f"tre_{k}": v for k, v in (distance_summary(pooled) if pooled.size else {}).items()})
    table = markdown_table(
        ["method", "transform", "run", "pairs", "failed", "landmarks", "TRE mean mm", "median", "p90",
         "mean of case means", *COST_HEADERS],
        [[*variant_cells(s), s["cases"], s["failed"], s["landmarks"], s.get("tre_mean"), s.get("tre_median"),
          s.get("tre_p90"), s["tre_case_mean"], *cost_cells(s)] for s in summary],
        digits=[0, 0, 0, 0, 0, 0, 2, 2, 2, 2, *COST_DIGITS],
    )
    columns = [initial_base(), *(row_base(v) for v in chosen)]
    per_case = markdown_table(
        ["case", *[" ".join(variant_cells(c)).strip() for c in columns]],
        [[case, *[next((r["tre"]["mean"] for r in rows if r["case"] == case and "tre" in r
                        and all(r[k] == v for k, v in c.items())), None) for c in columns]] for case in cases],
        digits=[0] + [2] * len(columns),
    )
    subset = (
        f" The peers ran on the first {peer_count} of the {len(cases)} pairs only ({', '.join(cases[:peer_count])});"
        " compare them with RegSeg's rows for those pairs in the per-pair table."
        if peer_count < len(cases) and any(v.method != "regseg" for v in chosen) else ""
    )
    body = "\n".join([
        "## Suite 3: lung-vessels (inhale fixed, exhale moving)",
        "",
        f"{len(cases)} test pairs at their native resolution (about 1 mm). TRE = |T(fixed landmark) - moving "
        "landmark| in mm over the pairs' landmarks pooled, T the method's fixed-to-moving mapping applied to the "
        "landmarks after the timed job (RegSeg: `transform.h5` read back by RegSegLib; ANTsPy "
        "`apply_transforms_to_points` with the forward transforms; transformix point sets; ANTs and ITK points "
        f"converted RAS <-> LPS).{subset}",
        "",
        table,
        "",
        "Mean TRE (mm) per pair:",
        "",
        per_case,
        "",
        commands_section(ctx, chosen),
        *failures_section(rows, "case"),
        "",
    ])
    return body, {"rows": rows, "summary": summary, "peer_cases": cases[:peer_count]}
