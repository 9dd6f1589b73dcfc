"""Suite 6, scaling: whole-process time and peak memory against volume size and iterations.

The brain pair (subject B -> subject A) is resampled to cubes of N^3 voxels covering the same extent
(anisotropic voxels, extent / N along each axis). RegSeg runs affine and deformable at every size with
its defaults; the peers run their affine and deformable defaults at the same sizes. The iteration sweep
scales RegSeg's iterations (``--iterations``: every affine pyramid level; ``--deformable-iterations``: both
Adam stages of the deformable stage) at 128^3; those runs are tuned runs, labelled by their factor.
"""

from __future__ import annotations

import math

import numpy as np

from bench.common import SHARED_DATA, markdown_table
from bench.registration.harness import (
    Context,
    Run,
    commands_section,
    failures_section,
    log,
    resample_to_spacing,
    row_base,
    runs_for,
    variant_cells,
    write_nifti,
)
from RegSegLib.io import read_volume
from RegSegLib.registration.settings import AffineSettings, DeformableSettings

SIZES = (64, 96, 128, 192, 256)
QUICK_SIZES = (64, 96)
SWEEP_SIZE = 128
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


def slope(sizes: list[int], values: list[float | None]) -> float:
    """Exponent ``b`` of ``value ~ voxels ** b`` by least squares in log-log (``nan`` with < 2 points)."""
    pairs = [(3 * math.log(s), math.log(v)) for s, v in zip(sizes, values) if v and math.isfinite(v) and v > 0]
    if len(pairs) < 2:
        return math.nan
    x, y = np.array(pairs).T
    return float(np.polyfit(x, y, 1)[0])


def sweep_runs(factor: float) -> list[Run]:
    """RegSeg affine and deformable with every default iteration count scaled by ``factor`` (at least 1).

    The defaults are those of the same-modality metric, the one ``regseg`` chooses for the brain pair.
    """
    affine = [max(1, round(n * factor)) for n in AffineSettings().resolved_iterations]
    defaults = DeformableSettings()
    deformable = [max(1, round(n * factor)) for n in (defaults.adam_iterations, defaults.fine_iterations)]
    affine_flags = ("--iterations", ",".join(str(n) for n in affine))
    deformable_flags = ("--deformable-iterations", ",".join(str(n) for n in deformable))
    return [
        Run("regseg", "affine", flags=affine_flags),
        Run("regseg", "deformable", flags=(*affine_flags, *deformable_flags)),
    ]


def run(ctx: Context) -> tuple[str, dict]:
    sizes = QUICK_SIZES if ctx.quick else SIZES
    chosen = runs_for(ctx.peers, ["affine", "deformable"])
    rows = []
    for size in sizes:
        log(f"suite 6 scaling {size}^3")
        files = prepare(ctx, size)
        for variant in chosen:
            job = ctx.register(variant, ["scaling", str(size)], files["fixed"], files["moving"])
            rows.append({"size": size, "voxels": size**3, "sweep": False, **row_base(variant), **job.measured})
            ctx.finish(job)
    factors = SWEEP_FACTORS[1:3] if ctx.quick else SWEEP_FACTORS
    sweep_size = sizes[-1] if ctx.quick else SWEEP_SIZE
    swept: list[Run] = []
    if "regseg" in ctx.peers:
        files = prepare(ctx, sweep_size)
        for factor in factors:
            for variant in sweep_runs(factor):
                log(f"suite 6 iterations x{factor:g} {variant.kind} at {sweep_size}^3")
                swept.append(variant)
                job = ctx.register(variant, ["scaling", "sweep", f"{factor:g}"], files["fixed"], files["moving"])
                rows.append({"size": sweep_size, "voxels": sweep_size**3, "sweep": True, "factor": factor,
                             **row_base(variant), **job.measured})
                ctx.finish(job)
    size_rows = [r for r in rows if not r["sweep"]]
    gpu = ctx.regseg_on_gpu
    cost_columns = [("time_s", "time s", 1), ("peak_rss_mb", "peak RSS MB", 0), ("mb_written", "MB written", 1)]
    if gpu:
        cost_columns.append(("gpu_peak_mb", "GPU peak MB", 0))
    size_table = markdown_table(
        ["method", "transform", "run", *[f"{s}^3 {title}" for _, title, _ in cost_columns for s in sizes],
         "time ~ voxels^b"],
        [
            [*variant_cells(row_base(v)),
             *[_value(size_rows, v, s, key) for key, _, _ in cost_columns for s in sizes],
             slope(list(sizes), [_value(size_rows, v, s, "time_s") for s in sizes])]
            for v in chosen
        ],
        digits=[0, 0, 0, *[d for _, _, d in cost_columns for _ in sizes], 2],
    )
    sweep_rows = [r for r in rows if r["sweep"]]
    sweep_table = markdown_table(
        ["transform", "iteration factor", "flags", "time s", "peak RSS MB", "MB written"],
        [[r["transform"], r["factor"], f"`{r['flags']}`", r.get("time_s"), r.get("peak_rss_mb"), r.get("mb_written")]
         for r in sweep_rows],
        digits=[0, 2, 0, 1, 0, 1],
    )
    body = "\n".join([
        f"## Suite 6: scaling ({'RegSeg on the GPU, peers on the CPU' if gpu else 'CPU'})",
        "",
        "Brain pair resampled to N^3 voxels (same extent). Each figure is one whole process: start-up, reading the "
        "inputs, registering, writing the result folder. `b` is the least-squares exponent of time against the "
        "number of voxels (1 = linear); start-up, a fixed cost, flattens it at small sizes."
        + (" GPU peak: the most memory `nvidia-smi` saw the process hold (polled)." if gpu else ""),
        "",
        size_table,
        "",
        f"RegSeg against iterations at {sweep_size}^3 (factor 1 = the default counts, given explicitly):",
        "",
        sweep_table if sweep_rows else "(RegSeg not selected)",
        "",
        commands_section(ctx, [*chosen, *swept]),
        *failures_section(rows, "size"),
        "",
    ])
    return body, {"rows": rows, "sizes": list(sizes), "device": ctx.device}


def _value(rows: list[dict], variant: Run, size: int, key: str) -> float | None:
    base = row_base(variant)
    for row in rows:
        if row["size"] == size and all(row[k] == v for k, v in base.items()):
            return row.get(key)
    return None
