"""The shared machinery of the registration suites: runs, whole-process jobs, input files, evaluation.

A :class:`Run` is one way of running one method (a row of the tables): RegSeg's ``regseg register``
with its defaults or with tuning flags, the ANTsPy script or the itk-elastix script of
``bench/registration/peers``. :meth:`Context.register` starts it as a fresh process on two files and
measures the whole process (:func:`bench.common.run_process`). Everything the evaluation needs beyond
the files the job wrote is produced afterwards, untimed, by :meth:`Context.export`: for RegSeg in this
process from ``transform.h5`` (read with ``RegSegLib.io.read_transform``), for the peers by their
script's ``export`` command (their own tools map points and warp masks; ANTs and ITK speak LPS and
convert to RAS there). The figures are then computed here, by the same RegSegLib evaluation code for
every method.
"""

from __future__ import annotations

import contextlib
import math
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from bench.common import ProcessResult, markdown_table, run_process, thread_environment
from RegSegLib import geometry
from RegSegLib.errors import InputError
from RegSegLib.io import read_transform, read_volume, write_volume
from RegSegLib.transforms import DisplacementField, field_from_transform, resample
from RegSegLib.volume import Volume

METHOD_TITLES = {"regseg": "RegSeg", "ants": "ANTsPy", "elastix": "itk-elastix"}
PEERS_DIR = Path(__file__).resolve().parent / "peers"
PEER_SCRIPTS = {"ants": PEERS_DIR / "ants_register.py", "elastix": PEERS_DIR / "elastix_register.py"}
ANTS_TYPES = {"rigid": "Rigid", "similarity": "Similarity", "anisotropic": "Affine", "affine": "Affine"}
"""ANTsPy ``type_of_transform`` of each affine family (ANTs has no anisotropic-scaling-only stage)."""
ELASTIX_MAPS = {"rigid": ["rigid"], "similarity": ["affine"], "anisotropic": ["affine"], "affine": ["affine"]}
"""elastix default parameter maps of each affine family (the defaults have no similarity map)."""
WARPED_LABELS = "warped_labels.nii.gz"
"""The warped moving label map every method writes into its output folder when given labels."""
REGSEG_TRANSFORM = "transform.h5"


def regseg_executable() -> list[str]:
    """The ``regseg`` command of this environment (its entry point, else ``python -m RegSegLib.cli``)."""
    entry_point = Path(sys.executable).with_name("regseg")
    return [str(entry_point)] if entry_point.exists() else [sys.executable, "-m", "RegSegLib.cli"]


@dataclass(frozen=True)
class Run:
    """One way of running one method: a row of the tables.

    Attributes:
        method: ``regseg``, ``ants`` or ``elastix``.
        kind: ``affine``, ``deformable`` (an affine stage, then a deformable one) or ``network`` (RegSeg's
            ``--method network``: a model's prediction alone).
        family: affine family the suite asks for (``rigid``, ``similarity``, ``anisotropic``, ``affine``);
            ``None``: the method's default (RegSeg is then given no ``--transform``).
        flags: RegSeg tuning flags; a run with flags is labelled ``tuned``, one without ``defaults``.
    """

    method: str
    kind: str
    family: str | None = None
    flags: tuple[str, ...] = ()

    @property
    def run(self) -> str:
        """``defaults`` or ``tuned``."""
        return "tuned" if self.flags else "defaults"

    @property
    def label(self) -> str:
        """``defaults``, or ``tuned:`` and the flags."""
        return f"tuned: {' '.join(self.flags)}" if self.flags else "defaults"

    @property
    def transform(self) -> str:
        """What the method runs, as shown in the tables."""
        family = self.family or "affine"
        if self.method == "ants":
            return "SyN" if self.kind == "deformable" else ANTS_TYPES[family]
        if self.method == "elastix":
            return "affine + bspline" if self.kind == "deformable" else " + ".join(ELASTIX_MAPS[family])
        if self.kind == "network":
            return f"network ({family})"
        return "affine + deformable" if self.kind == "deformable" else family

    @property
    def key(self) -> str:
        """A folder name unique within a case."""
        parts = [self.method, self.kind, self.family or "default", self.run, *(f.lstrip("-") for f in self.flags)]
        return "_".join(parts).replace("/", "-").replace(",", "-")

    def arguments(self, fixed: str, moving: str, out: str, device: str, labels: tuple[str, str] | None) -> list[str]:
        """The command line after the program name (``regseg`` or ``python SCRIPT``).

        Args:
            fixed: fixed image.
            moving: moving image.
            out: output folder.
            device: RegSeg ``--device`` (``auto`` gives no option, as a user types it).
            labels: ``(fixed labels, moving labels)`` to warp (RegSeg also scores them).
        """
        if self.method == "regseg":
            arguments = ["register", fixed, moving, "-o", out, "--method", self.kind]
            if self.family:
                arguments += ["--transform", self.family]
            if labels:
                arguments += ["--fixed-labels", labels[0], "--moving-labels", labels[1]]
            if device != "auto":
                arguments += ["--device", device]
            return arguments + list(self.flags)
        arguments = ["register", fixed, moving, "-o", out]
        if self.method == "ants":
            arguments += ["--type", self.transform]
        else:
            arguments += ["--maps", *self.transform.split(" + ")]
        if labels:
            arguments += ["--labels", labels[1]]
        return arguments

    def program(self) -> list[str]:
        """The program a user starts: ``regseg``, or ``python`` with the peer's script."""
        return regseg_executable() if self.method == "regseg" else [sys.executable, str(PEER_SCRIPTS[self.method])]

    def template(self, device: str = "auto", labels: bool = False) -> str:
        """The command with placeholders, as shown under the tables."""
        program = "regseg" if self.method == "regseg" else f"python {PEER_SCRIPTS[self.method].name}"
        given = ("FIXED_LABELS", "MOVING_LABELS") if labels else None
        return " ".join([program, *self.arguments("FIXED", "MOVING", "OUT", device, given)])


def runs_for(
    peers: Sequence[str],
    kinds: Sequence[str],
    family: str | None = None,
    tuned: dict[str, Sequence[tuple[str, ...]]] | None = None,
) -> list[Run]:
    """The runs of a suite: every method with its defaults for each kind, plus RegSeg's tuned runs.

    Args:
        peers: methods, in order.
        kinds: ``affine`` and/or ``deformable``.
        family: the affine family (``None``: each method's default).
        tuned: RegSeg flag sets per kind, each giving one ``tuned`` run after the defaults.
    """
    chosen = []
    for method in peers:
        for kind in kinds:
            chosen.append(Run(method, kind, family))
            if method == "regseg":
                chosen.extend(Run(method, kind, family, tuple(flags)) for flags in (tuned or {}).get(kind, ()))
    return chosen


@dataclass
class Job:
    """One finished process and where its files are.

    Attributes:
        run: what ran.
        folder: the job's folder (log, evaluation exports); ``out`` inside it is the output folder.
        fixed: the fixed image file.
        moving: the moving image file.
        measured: the row fields: ``command``, ``exit_code``, ``time_s``, ``peak_rss_mb``, ``mb_written``,
            ``gpu_peak_mb`` when followed, and ``error`` when the job failed.
    """

    run: Run
    folder: Path
    fixed: str
    moving: str
    measured: dict[str, Any] = field(default_factory=dict)

    @property
    def out(self) -> Path:
        return self.folder / "out"

    @property
    def failed(self) -> bool:
        return "error" in self.measured


@dataclass
class Exported:
    """Evaluation data of a job, produced untimed after it.

    Attributes:
        points: the fixed points mapped to the moving image (RAS mm), when asked for.
        displacement: the whole fixed-to-moving mapping as a displacement field on the fixed grid, when asked for.
        masks: the moving soft masks warped (linear) onto the fixed grid, ``[K, J, I]`` float, in order.
    """

    points: np.ndarray | None = None
    displacement: DisplacementField | None = None
    masks: list[torch.Tensor] = field(default_factory=list)


class ExportFailed(RuntimeError):
    """A peer's untimed ``export`` process failed."""


@contextlib.contextmanager
def evaluating(row: dict[str, Any]) -> Iterator[None]:
    """Marks ``row`` failed (``error``) when evaluating its job fails, instead of stopping the benchmark."""
    try:
        yield
    except (ExportFailed, InputError) as exc:
        row["error"] = f"evaluation failed: {exc}"
        log(f"    {row['error']}")


@dataclass
class Context:
    """Options of one benchmark run and the way jobs are started.

    Attributes:
        peers: methods to run, in order (``regseg``, ``ants``, ``elastix``).
        quick: run the small subset of each suite.
        threads: threads per method (set through the environment of every process).
        work: folder for prepared inputs and job folders (a job's folder is deleted after its
            evaluation unless ``keep``).
        timeout_s: time limit of one job; a job past it is killed and reported as failed.
        device: RegSeg ``--device``; ``auto`` passes no option (the peers always run on the CPU).
        keep: keep every job's folder.
        cases: optional cap on the number of cases of the multi-case suites (2, 3).
        peer_cases: optional cap on the number of cases the peers run in the lung suite.
        repeats: extra alternating runs of the deformable defaults for paired timing (suite 1 at 2 mm).
    """

    peers: Sequence[str]
    quick: bool
    threads: int
    work: Path
    timeout_s: float
    device: str = "auto"
    keep: bool = False
    cases: int | None = None
    peer_cases: int | None = None
    repeats: int = 0

    @property
    def regseg_on_gpu(self) -> bool:
        """Whether ``regseg`` runs on a GPU (``--device cuda``, or ``auto`` with CUDA available)."""
        return self.device == "cuda" or (self.device == "auto" and torch.cuda.is_available())

    def template(self, run: Run, labels: bool = False) -> str:
        """``run``'s command with placeholders, with this benchmark's ``--device``."""
        return run.template(self.device, labels)

    def register(
        self, run: Run, where: Sequence[str], fixed: str, moving: str, labels: tuple[str, str] | None = None
    ) -> Job:
        """Runs one job as a fresh process and measures it.

        Args:
            run: the method and its settings.
            where: folder names under ``work/jobs`` (suite, case, ...); the run's key is added.
            fixed: fixed image file.
            moving: moving image file.
            labels: ``(fixed labels, moving labels)``: the job also warps the moving label map into
                ``warped_labels.nii.gz`` (RegSeg: ``--fixed-labels``/``--moving-labels``; peers: ``--labels``).
        """
        folder = self.work.joinpath("jobs", *where, run.key).resolve()
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        job = Job(run, folder, str(Path(fixed).resolve()), str(Path(moving).resolve()))
        given = None if labels is None else (str(Path(labels[0]).resolve()), str(Path(labels[1]).resolve()))
        command = run.program() + run.arguments(job.fixed, job.moving, str(job.out), self.device, given)
        result = run_process(
            command, job.out, folder / "log.txt", thread_environment(self.threads), self.timeout_s, cwd=folder,
            follow_gpu=run.method == "regseg" and self.regseg_on_gpu,
        )  # fmt: skip
        job.measured = measurement(result, command, folder / "log.txt", self.timeout_s)
        line = f"    {METHOD_TITLES[run.method]} {run.transform} ({run.label}): "
        if job.failed:
            log(line + f"FAILED {job.measured['error']}")
        else:
            written = job.measured["mb_written"]
            log(line + f"{result.wall_s:.1f} s, peak RSS {result.peak_rss_mb:.0f} MB, {written:.1f} MB written")
        return job

    def export(
        self,
        job: Job,
        points: np.ndarray | None = None,
        with_field: bool = False,
        masks: Sequence[str] = (),
    ) -> Exported:
        """Evaluation data of a finished job (untimed).

        RegSeg's ``transform.h5`` is read here and applied with RegSegLib; a peer's script is run again with
        ``export``, which reads the transforms its job wrote and uses the peer's own tools.

        Args:
            job: a job that did not fail.
            points: ``[N, 3]`` fixed RAS points to map to the moving image.
            with_field: also return the whole mapping as a displacement field on the fixed grid.
            masks: moving soft-mask files to warp (linear) onto the fixed grid.

        Raises:
            ExportFailed: the peer's export process failed.
            InputError: a transform file the job wrote cannot be read.
        """
        if job.run.method == "regseg":
            mapping = read_transform(job.out / REGSEG_TRANSFORM)
            fixed = read_volume(job.fixed)
            answer = Exported()
            if points is not None:
                given = torch.from_numpy(np.asarray(points, dtype=np.float64))
                answer.points = mapping.transform_points(given).double().numpy()
            if with_field:
                answer.displacement = field_from_transform(mapping, fixed)
            answer.masks = [
                resample(read_volume(m).to(dtype=torch.float32), fixed, mapping, mode="linear").data[0] for m in masks
            ]
            return answer
        folder = job.folder / "export"
        folder.mkdir(exist_ok=True)
        command = [sys.executable, str(PEER_SCRIPTS[job.run.method]), "export", str(job.out)]
        command += ["--fixed", job.fixed] if job.run.method == "ants" else ["--moving", job.moving]
        if points is not None:
            np.save(folder / "points.npy", np.asarray(points, dtype=np.float64))
            command += ["--points", str(folder / "points.npy"), "--points-out", str(folder / "mapped.npy")]
        field_path = folder / ("field.nii.gz" if job.run.method == "ants" else "field.mha")
        if with_field:
            command += ["--field-out", str(field_path)]
        warped = [folder / f"mask_{n}.nii.gz" for n in range(len(masks))]
        for source, destination in zip(masks, warped):
            command += ["--warp", str(Path(source).resolve()), str(destination)]
        log_path = folder / "log.txt"
        result = run_process(command, folder, log_path, thread_environment(self.threads), self.timeout_s, cwd=folder)
        if result.exit_code != 0 or result.timed_out:
            raise ExportFailed(measurement(result, command, log_path, self.timeout_s)["error"])
        answer = Exported(masks=[read_volume(path).data[0].float() for path in warped])
        if points is not None:
            answer.points = np.load(folder / "mapped.npy")
        if with_field:
            mapping = read_transform(field_path)
            if not isinstance(mapping, DisplacementField):
                mapping = field_from_transform(mapping, read_volume(job.fixed))
            answer.displacement = mapping
        return answer

    def alternating_times(
        self, runs: Sequence[Run], where: Sequence[str], fixed: str, moving: str, labels: tuple[str, str] | None = None
    ) -> dict[str, list[float]]:
        """Whole-process wall times of ``runs`` started in turn (A B A B ...), :attr:`repeats` times each.

        Pairing the runs keeps the ratio of two methods meaningful on a machine whose speed drifts; a single
        run of each is at the mercy of the moment. Failed runs are left out.

        Returns:
            Each run's :attr:`Run.key` -> its wall times (s), in order.
        """
        times: dict[str, list[float]] = {run.key: [] for run in runs}
        for _ in range(self.repeats):
            for run in runs:
                job = self.register(run, [*where, "repeats"], fixed, moving, labels)
                if not job.failed:
                    times[run.key].append(job.measured["time_s"])
                self.finish(job)
        return times

    def finish(self, job: Job) -> None:
        """Deletes the job's folder unless ``keep``."""
        if not self.keep:
            shutil.rmtree(job.folder, ignore_errors=True)


def measurement(result: ProcessResult, command: Sequence[str], log_path: Path, timeout_s: float) -> dict[str, Any]:
    """The row fields of a finished process; ``error`` names why it failed (its last log line)."""
    measured: dict[str, Any] = {
        "command": shlex.join(command),
        "exit_code": result.exit_code,
        "time_s": result.wall_s,
        "peak_rss_mb": result.peak_rss_mb,
        "mb_written": result.bytes_written / 2**20,
    }
    if result.gpu_peak_mb is not None:
        measured["gpu_peak_mb"] = result.gpu_peak_mb
    if result.timed_out:
        measured["error"] = f"killed at the time limit ({timeout_s:.0f} s)"
    elif result.exit_code != 0:
        lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
        measured["error"] = f"exit code {result.exit_code}: {lines[-1].strip() if lines else 'no output'}"
    return measured


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


def centroid_ras(mask: torch.Tensor, ijk_to_ras: np.ndarray) -> np.ndarray | None:
    """RAS centroid of a ``[K, J, I]`` bool mask, ``None`` when empty."""
    k, j, i = torch.nonzero(mask, as_tuple=True)
    if k.numel() == 0:
        return None
    ijk = np.array([i.double().mean().item(), j.double().mean().item(), k.double().mean().item()])
    return geometry.transform_points(ijk_to_ras, ijk)


def point_errors(mapped: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Distances ``|mapped - target|`` in mm: mean, median, p90, p95, max."""
    return distance_summary(np.linalg.norm(np.asarray(mapped) - np.asarray(target), axis=-1))


def distance_summary(distance: np.ndarray) -> dict[str, float]:
    """Mean, median, p90, p95 and max of distances (mm)."""
    return {
        "mean": float(distance.mean()),
        "median": float(np.median(distance)),
        "p90": float(np.percentile(distance, 90)),
        "p95": float(np.percentile(distance, 95)),
        "max": float(distance.max()),
    }


def nanmean(values: Sequence[float | None]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


COST_KEYS = ("time_s", "peak_rss_mb", "mb_written")
"""The whole-process figures every summary averages."""
COST_HEADERS = ["mean time s", "mean peak RSS MB", "mean MB written"]
COST_DIGITS = [1, 0, 1]


def row_base(run: Run) -> dict[str, Any]:
    """The identifying fields of a result row."""
    return {"method": run.method, "transform": run.transform, "run": run.run, "flags": " ".join(run.flags)}


def initial_base() -> dict[str, Any]:
    """The identifying fields of the row before registration."""
    return {"method": "initial", "transform": "identity", "run": "", "flags": ""}


def point_rows(
    ctx: "Context",
    variants: Sequence[Run],
    where: Sequence[str],
    fixed: str,
    moving: str,
    base: dict[str, Any],
    points: np.ndarray,
    score: Callable[[np.ndarray], dict[str, Any]],
) -> list[dict[str, Any]]:
    """Registers one pair with each variant and scores where its transform maps ``points`` (``score`` of
    the mapped points): one row per variant, a failed job or evaluation marked, job folders cleaned up."""
    rows = []
    for variant in variants:
        job = ctx.register(variant, where, fixed, moving)
        row = {**base, **row_base(variant), **job.measured}
        if not job.failed:
            with evaluating(row):
                row.update(score(ctx.export(job, points=points).points))
        rows.append(row)
        ctx.finish(job)
    return rows


def error_table(summary: Sequence[dict], by: str, header: str, count: str) -> str:
    """The table of point-mapping errors (mean, p95, max mm) and costs, one row per summary of
    :func:`summarize` grouped by ``by`` (shown as ``header``; ``count`` names the column of cases)."""
    return markdown_table(
        [header, "method", "transform", "run", count, "failed", "mean error mm", "p95 mm", "max mm", *COST_HEADERS],
        [[s[by], *variant_cells(s), s["cases"], s["failed"], s["mean_mm"], s["p95_mm"], s["max_mm"], *cost_cells(s)]
         for s in summary],
        digits=[0, 0, 0, 0, 0, 0, 2, 2, 2, *COST_DIGITS],
    )


def summarize(
    rows: Sequence[dict], keys: Sequence[str], by: Sequence[str] = (), totals: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """One summary per variant (``by`` fields, then method, transform, run, flags), in first-seen order.

    Each holds the means of ``keys`` and of the whole-process costs and the sums of ``totals`` over the
    rows that did not fail, ``cases`` and ``failed``.
    """
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in (*by, "method", "transform", "run", "flags")), []).append(row)
    summary = []
    for group in groups.values():
        done = [r for r in group if "error" not in r]
        entry = {k: group[0][k] for k in (*by, "method", "transform", "run", "flags")}
        entry.update({key: nanmean([r.get(key) for r in done]) for key in (*keys, *COST_KEYS)})
        entry.update({key: sum(r.get(key, 0) for r in done) for key in totals})
        entry.update({"cases": len(group), "failed": len(group) - len(done)})
        summary.append(entry)
    return summary


def variant_cells(entry: dict[str, Any]) -> list[Any]:
    """The method, transform and run cells of a table row (a tuned run shows its flags)."""
    run = f"tuned: `{entry['flags']}`" if entry["run"] == "tuned" else entry["run"]
    return [METHOD_TITLES.get(entry["method"], entry["method"]), entry["transform"], run]


def cost_cells(entry: dict[str, Any]) -> list[Any]:
    """The whole-process cost cells (empty for the row before registration)."""
    return [None] * len(COST_KEYS) if entry["method"] == "initial" else [entry.get(k) for k in COST_KEYS]


def commands_section(ctx: Context, chosen: Sequence[Run], labels: bool = False) -> str:
    """A list of the commands each run starts, with placeholders for the files."""
    lines = ["Commands (one fresh process per job; threads set by the environment):", ""]
    for run in chosen:
        lines.append(f"- {METHOD_TITLES[run.method]} {run.transform} ({run.label}): `{ctx.template(run, labels)}`")
    return "\n".join(lines)


def failures_section(rows: Sequence[dict], *where: str) -> list[str]:
    """Markdown lines naming every failed job (empty when none failed)."""
    lines = sorted(
        {f"- {METHOD_TITLES.get(r['method'], r['method'])} {r['transform']} ({r['run']})"
         f"{' ' + ' '.join(str(r[k]) for k in where) if where else ''}: {r['error']}" for r in rows if "error" in r}
    )  # fmt: skip
    return [""] + lines if lines else []
