"""Suite 6, scaling: time and peak memory against volume size and iterations (CPU unless ``--device``).

The brain pair (subject B -> subject A) is resampled to cubes of N^3 voxels covering the same extent
(anisotropic voxels, extent / N along each axis). RegSeg runs affine and deformable at every size; the
peers run their affine and deformable defaults at the same sizes. The iteration sweep scales RegSeg's
iterations (affine: every pyramid level; deformable: the Adam stage) at 128^3.
"""

from __future__ import annotations

import inspect
import math

import numpy as np

from bench.common import SHARED_DATA, markdown_table
from bench.registration import methods
from bench.registration.harness import METHOD_TITLES, Context, log, method_variants, resample_to_spacing, write_nifti
from RegSegLib.io.volumes import read_volume
from RegSegLib.registration.affine import register_affine
from RegSegLib.registration.deformable import DeformableSettings

SIZES = (64, 96, 128, 192, 256)
QUICK_SIZES = (64, 96)
SWEEP_SIZE = 128
AFFINE_ITERATIONS = tuple(inspect.signature(register_affine).parameters["iterations"].default)
"""RegSeg's default affine iterations per pyramid level (read from ``register_affine``)."""
DEFORMABLE_ITERATIONS = (DeformableSettings().adam_iterations, DeformableSettings().fine_iterations)
"""RegSeg's default Adam iterations of the deformable stage: on the control grid, on the full grid."""
SWEEP_FACTORS = (0.25, 0.5, 1.0, 2.0)


def prepare(ctx: Context, size: int) -> dict[str, str]:
    folder = ctx.work / "inputs" / "scaling" / f"{size}"
    files = {}
    for key, name in (("fixed", "subject_a_t1"), ("moving", "subject_b_t1")):
        path = folder / f"{name}.nii.gz"
        if not path.exists():
            volume = read_volume(SHARED_DATA / "brain-mr" / f"{name}.nii.gz")
            extent = volume.spacing * np.array(volume.shape[::-1])
            write_nifti(resample_to_spacing(volume, extent / size, "linear"), path)
        files[key] = str(path)
    return files


def slope(sizes: list[int], values: list[float]) -> float:
    """Exponent ``b`` of ``value ~ voxels ** b`` by least squares in log-log (``nan`` with < 2 points)."""
    pairs = [(3 * math.log(s), math.log(v)) for s, v in zip(sizes, values) if v and math.isfinite(v) and v > 0]
    if len(pairs) < 2:
        return math.nan
    x, y = np.array(pairs).T
    return float(np.polyfit(x, y, 1)[0])


def run(ctx: Context) -> tuple[str, dict]:
    sizes = QUICK_SIZES if ctx.quick else SIZES
    rows = []
    for size in sizes:
        log(f"suite 6 scaling {size}^3")
        files = prepare(ctx, size)
        for method, transform in method_variants(ctx, ["affine", "deformable"]):
            out = ctx.job_dir("scaling", str(size), method, transform)
            result = ctx.run_job(method, out, fixed=files["fixed"], moving=files["moving"], transform=transform)
            rows.append({"size": size, "voxels": size**3, "method": method,
                         "run": methods.peer_label(method, transform), "sweep": False, **result})
            ctx.finish_job(out)
    factors = SWEEP_FACTORS[1:3] if ctx.quick else SWEEP_FACTORS
    sweep_size = sizes[-1] if ctx.quick else SWEEP_SIZE
    if "regseg" in ctx.peers:
        files = prepare(ctx, sweep_size)
        for factor in factors:
            affine_iterations = [max(1, round(n * factor)) for n in AFFINE_ITERATIONS]
            adam_iterations = [max(1, round(n * factor)) for n in DEFORMABLE_ITERATIONS]
            for transform in ("affine", "deformable"):
                log(f"suite 6 iterations x{factor:g} {transform} at {sweep_size}^3")
                options = {"affine": {"iterations": affine_iterations}}
                if transform == "deformable":
                    options["deformable"] = {"adam_iterations": adam_iterations[0], "fine_iterations": adam_iterations[1]}
                out = ctx.job_dir("scaling", "sweep", f"{factor:g}", transform)
                result = ctx.run_job("regseg", out, fixed=files["fixed"], moving=files["moving"], transform=transform,
                                     options=options)
                rows.append({"size": sweep_size, "voxels": sweep_size**3, "method": "regseg",
                             "run": methods.peer_label("regseg", transform), "sweep": True, "factor": factor,
                             "affine_iterations": affine_iterations,
                             "adam_iterations": adam_iterations if transform == "deformable" else None, **result})
                ctx.finish_job(out)
    size_rows = [r for r in rows if not r["sweep"]]
    variants = list(dict.fromkeys((r["method"], r["run"]) for r in size_rows))
    gpu = ctx.device != "cpu"
    size_table = markdown_table(
        ["method", "run", *[f"{s}^3 time s" for s in sizes], *[f"{s}^3 peak RSS MB" for s in sizes],
         *([f"{s}^3 GPU peak MB" for s in sizes] if gpu else []), "time ~ voxels^b"],
        [
            [METHOD_TITLES.get(m, m), run_name,
             *[_value(size_rows, m, run_name, s, "time_s") for s in sizes],
             *[_value(size_rows, m, run_name, s, "peak_rss_mb") for s in sizes],
             *([_value(size_rows, m, run_name, s, "gpu_peak_mb") for s in sizes] if gpu else []),
             slope(list(sizes), [_value(size_rows, m, run_name, s, "time_s") for s in sizes])]
            for m, run_name in variants
        ],
        digits=[0, 0, *[1] * len(sizes), *[0] * len(sizes), *([0] * len(sizes) if gpu else []), 2],
    )
    sweep_rows = [r for r in rows if r["sweep"]]
    sweep_table = markdown_table(
        ["run", "iteration factor", "affine iterations per level", "deformable Adam iterations (grid / full)", "time s",
         "peak RSS MB"],
        [[r["run"], r["factor"], "/".join(str(n) for n in r["affine_iterations"]),
          "/".join(str(n) for n in r["adam_iterations"]) if r["adam_iterations"] else None,
          r.get("time_s"), r.get("peak_rss_mb")] for r in sweep_rows],
        digits=[0, 2, 0, 0, 1, 0],
    )
    failures = sorted({f"- {r['method']} {r['run']} {r['size']}^3: {r['error']}" for r in rows if "error" in r})
    body = "\n".join([
        f"## Suite 6: scaling ({'RegSeg on ' + ctx.device + ', peers on the CPU' if gpu else 'CPU'})",
        "",
        "Brain pair resampled to N^3 voxels (same extent). Time includes reading the inputs and writing the warped "
        "image. `b` is the least-squares exponent of time against the number of voxels (1 = linear). Peak RSS is "
        "the job's own peak including the worker's imported libraries.",
        "",
        size_table,
        "",
        f"RegSeg against iterations at {sweep_size}^3 (factor 1 = the defaults):",
        "",
        sweep_table if sweep_rows else "(RegSeg not selected)",
        *([""] + failures if failures else []),
        "",
    ])
    return body, {"rows": rows, "sizes": list(sizes), "device": ctx.device}


def _value(rows: list[dict], method: str, run_name: str, size: int, key: str) -> float | None:
    for row in rows:
        if row["method"] == method and row["run"] == run_name and row["size"] == size:
            return row.get(key)
    return None
