"""The shared machinery of the registration suites: method workers, job folders, input files, evaluation."""

from __future__ import annotations

import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from bench.common import JobFailed, Worker
from bench.registration import methods
from RegSegLib import geometry
from RegSegLib.io.volumes import read_volume, write_volume
from RegSegLib.transforms import DisplacementField, resample
from RegSegLib.volume import Volume

METHOD_TITLES = {"regseg": "RegSeg", "ants": "ANTsPy", "elastix": "itk-elastix"}


@dataclass
class Context:
    """Options and state of one benchmark run.

    Attributes:
        peers: methods to run, in order (``regseg``, ``ants``, ``elastix``).
        quick: run the small subset of each suite.
        threads: threads per method.
        work: folder for inputs and job outputs (deleted per job unless ``keep``).
        timeout_s: time limit of one job; a job past it is reported as failed.
        device: RegSeg device (``cpu`` by default; the peers always run on the CPU).
        keep: keep job outputs for inspection.
        cases: optional cap on the number of cases of the multi-case suites (2, 3).
        peer_cases: optional cap on the number of cases the peers run in the lung suite.
    """

    peers: Sequence[str]
    quick: bool
    threads: int
    work: Path
    timeout_s: float
    device: str = "cpu"
    keep: bool = False
    cases: int | None = None
    peer_cases: int | None = None
    workers: dict[str, Worker] = field(default_factory=dict)

    def worker(self, method: str) -> Worker:
        if method not in self.workers:
            _, warm_up = methods.JOBS[method]
            self.workers[method] = Worker(method, self.threads, warm_up)
        return self.workers[method]

    def stop_workers(self) -> None:
        """Ends every worker (between suites, so each suite starts from fresh processes)."""
        for worker in self.workers.values():
            worker.stop()
        self.workers.clear()

    def job_dir(self, *parts: str) -> Path:
        folder = self.work.joinpath("jobs", *parts)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return folder

    def run_job(self, method: str, out_dir: Path, **kwargs: Any) -> dict:
        """Runs one registration job of ``method``; returns its measurements or ``{"error": ...}``.

        The keyword arguments are those of the jobs in :mod:`bench.registration.methods`.
        """
        target, _ = methods.JOBS[method]
        if method == "regseg":
            options = dict(kwargs.pop("options", None) or {})
            options.setdefault("device", self.device)
            kwargs["options"] = options
        start = time.perf_counter()
        try:
            result = self.worker(method).call(target, timeout_s=self.timeout_s, out_dir=str(out_dir), **kwargs)
        except JobFailed as exc:
            message = str(exc).splitlines()[0]
            print(f"    {method}: FAILED {message}", file=sys.stderr, flush=True)
            return {"error": message, "time_s": time.perf_counter() - start}
        print(
            f"    {method}: {result['time_s']:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MB",
            file=sys.stderr,
            flush=True,
        )
        return result

    def finish_job(self, out_dir: Path) -> None:
        if not self.keep:
            shutil.rmtree(out_dir, ignore_errors=True)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def write_nifti(volume: Volume, path: Path) -> str:
    """Writes an input file (creating its folder) and returns its path as a string."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_volume(volume, path)
    return str(path)


def resample_to_spacing(volume: Volume, spacing_mm: float | Sequence[float], mode: str) -> Volume:
    """``volume`` on a grid of the same extent and directions with a new voxel size."""
    matrix, shape = geometry.resampled_grid(volume.ijk_to_ras, volume.shape, spacing_mm)
    source = volume if mode == "nearest" else volume.to(dtype=torch.float32)
    return resample(source, (matrix, shape), None, mode=mode)


def read_labels(path: Path) -> torch.Tensor:
    """A label map as ``[K, J, I]`` int64 (float files from the peers are rounded)."""
    data = read_volume(path).data[0]
    if data.is_floating_point():
        data = torch.round(data)
    return data.to(torch.int64)


def read_mask(path: Path, threshold: float = 0.5) -> torch.Tensor:
    """A soft mask thresholded to ``[K, J, I]`` bool."""
    return read_volume(path).data[0].float() > threshold


def read_field(path: Path) -> DisplacementField:
    volume = read_volume(path)
    return DisplacementField(volume.data.float(), volume.ijk_to_ras)


def centroid_ras(mask: torch.Tensor, ijk_to_ras: np.ndarray) -> np.ndarray | None:
    """RAS centroid of a ``[K, J, I]`` bool mask, ``None`` when empty."""
    k, j, i = torch.nonzero(mask, as_tuple=True)
    if k.numel() == 0:
        return None
    ijk = np.array([i.double().mean().item(), j.double().mean().item(), k.double().mean().item()])
    return geometry.transform_points(ijk_to_ras, ijk)


def point_errors(mapped: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Distances ``|mapped - target|`` in mm: mean, median, p90, p95, max."""
    distance = np.linalg.norm(np.asarray(mapped) - np.asarray(target), axis=-1)
    return {
        "mean": float(distance.mean()),
        "median": float(np.median(distance)),
        "p90": float(np.percentile(distance, 90)),
        "p95": float(np.percentile(distance, 95)),
        "max": float(distance.max()),
    }


def nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def summarize(rows: Sequence[dict], keys: Sequence[str]) -> dict[str, float]:
    """Mean of each key over rows (failed rows and missing values skipped) plus the failure count."""
    done = [r for r in rows if "error" not in r]
    summary = {key: nanmean([r.get(key, math.nan) for r in done]) for key in keys}
    summary["failed"] = len(rows) - len(done)
    summary["cases"] = len(rows)
    return summary


def method_variants(ctx: Context, transforms: Sequence[str]) -> list[tuple[str, str]]:
    """``(method, transform)`` pairs to run, peers in the order given."""
    return [(method, transform) for method in ctx.peers for transform in transforms]
