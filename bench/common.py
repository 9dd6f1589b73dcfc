"""What every benchmark shares: data paths, whole-process jobs, machine facts, result files.

Every method runs as a whole process, one fresh process per job, exactly as a user would start it
(:func:`run_process`): the wall time covers start-up, imports, reading, the work and writing; the
peak resident memory is the kernel's figure for that process (``ru_maxrss`` from ``os.wait4``, taken by
the small ``launcher.py`` that starts it, so that the harness's own memory does not leak into it); the
output size is what the process left in its output folder. A process that exits with an error, is
killed by a signal or runs past its time limit is reported as a failed job instead of stopping the
benchmark.
"""

from __future__ import annotations

import datetime as _datetime
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
WORK = REPO / "bench" / "work"
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS",
)
"""Environment variables that set the thread count of torch, BLAS and ITK (ANTs, elastix)."""
LAUNCHER = Path(__file__).resolve().with_name("launcher.py")
"""The small process that starts and measures every job (see :func:`run_process`)."""
GPU_POLL_S = 0.2
"""Interval of the ``nvidia-smi`` polls that follow a process's GPU memory."""


def thread_environment(threads: int) -> dict[str, str]:
    """The current environment with every variable of :data:`THREAD_VARIABLES` set to ``threads``."""
    environment = dict(os.environ)
    environment.update({name: str(threads) for name in THREAD_VARIABLES})
    return environment


@dataclass
class ProcessResult:
    """What one whole process cost.

    Attributes:
        exit_code: the process's exit status (negative: killed by that signal).
        wall_s: wall time from starting the process to its end (``time.perf_counter``).
        peak_rss_mb: the process's peak resident memory (``ru_maxrss``), MiB.
        bytes_written: total size of the files in its output folder after it ended.
        timed_out: it ran past the time limit and was killed.
        gpu_peak_mb: the most GPU memory ``nvidia-smi`` saw it hold (MiB), when followed.
    """

    exit_code: int
    wall_s: float
    peak_rss_mb: float
    bytes_written: int
    timed_out: bool
    gpu_peak_mb: float | None = None


def folder_bytes(folder: Path) -> int:
    """Total size of the regular files under ``folder`` (0 when it does not exist)."""
    if not folder.is_dir():
        return 0
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file() and not path.is_symlink())


class _GpuMonitor(threading.Thread):
    """Polls ``nvidia-smi`` for the GPU memory of one process group and keeps the largest total."""

    def __init__(self, group: int) -> None:
        super().__init__(daemon=True)
        self.group = group
        self.peak_mb: float | None = None
        self.done = threading.Event()

    def _in_group(self, pid: str) -> bool:
        try:
            return os.getpgid(int(pid)) == self.group
        except (ValueError, OSError):
            return False

    def run(self) -> None:
        query = ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]
        while not self.done.wait(GPU_POLL_S):
            try:
                lines = subprocess.run(query, capture_output=True, text=True, timeout=10, check=True).stdout
            except (OSError, subprocess.SubprocessError):
                return
            fields = [[part.strip() for part in line.split(",")] for line in lines.splitlines()]
            used = [float(f[1]) for f in fields if len(f) == 2 and f[1].isdigit() and self._in_group(f[0])]
            if used:
                self.peak_mb = max(self.peak_mb or 0.0, sum(used))


def run_process(
    argv: Sequence[str],
    output_dir: Path,
    log_path: Path,
    env: dict[str, str],
    timeout_s: float,
    cwd: Path | None = None,
    follow_gpu: bool = False,
) -> ProcessResult:
    """Runs one command as a fresh process and measures it.

    The command is started by ``launcher.py`` (``python -I -S``, standard library only), which times it
    from just before it starts to its end and takes its peak RSS from ``os.wait4``. The launcher starts a
    session of its own (so a time limit kills it with everything it started), reads nothing from standard
    input and writes standard output and error to ``log_path``.

    Args:
        argv: the command.
        output_dir: the folder it writes its results into (measured after it ends).
        log_path: file that receives its standard output and error; the launcher's report is written beside
            it (``<log name>.cost.json``).
        env: its environment (thread counts, see :func:`thread_environment`).
        timeout_s: time limit; past it the process group is killed.
        cwd: its working folder (default: the current one).
        follow_gpu: poll ``nvidia-smi`` for its GPU memory.

    Returns:
        Exit code, wall time, peak RSS (``nan`` when the launcher was killed), bytes written and whether the
        time limit was hit.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    report = log_path.with_name(log_path.name + ".cost.json")
    report.unlink(missing_ok=True)
    launcher = [sys.executable, "-I", "-S", str(LAUNCHER), str(report)]
    timed_out = False
    with open(log_path, "wb") as log:
        start = time.perf_counter()
        process = subprocess.Popen(
            [*launcher, *argv], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
            start_new_session=True,
        )  # fmt: skip
        monitor = _GpuMonitor(process.pid) if follow_gpu and shutil.which("nvidia-smi") else None
        if monitor is not None:
            monitor.start()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(process)
        except BaseException:
            _kill_group(process)
            raise
        finally:
            if monitor is not None:
                monitor.done.set()
                monitor.join()
        wall = time.perf_counter() - start
    cost = json.loads(report.read_text()) if report.exists() else {}
    return ProcessResult(
        exit_code=cost.get("exit_code", process.returncode),
        wall_s=cost.get("wall_s", wall),
        peak_rss_mb=cost["peak_rss_kb"] / 1024.0 if "peak_rss_kb" in cost else math.nan,
        bytes_written=folder_bytes(output_dir),
        timed_out=timed_out,
        gpu_peak_mb=None if monitor is None else monitor.peak_mb,
    )


def _kill_group(process: subprocess.Popen) -> None:
    """Kills the process group a :func:`run_process` launcher leads, then reaps the launcher."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=20, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(threads: int) -> dict[str, Any]:
    """Machine, software versions, code revision, date, command line and load at the time of the call."""
    import psutil

    packages = ("regseg", "torch", "numpy", "scipy", "nibabel", "SimpleITK", "antspyx", "itk", "itk-elastix", "psutil")
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench/results")
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return {
        "date": _datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads_per_method": threads,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": gpu,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: _package_version(name) for name in packages},
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
    }


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: numbers rounded, ``None``/``nan`` as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: Sequence[int] | None = None) -> str:
    """A GitHub markdown table; ``digits`` gives the decimals of each column's floats."""
    digits = list(digits) if digits is not None else [3] * len(headers)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(v, d) for v, d in zip(row, digits)) + " |")
    return "\n".join(lines)


def json_ready(value: Any) -> Any:
    """Nested dicts/lists with ``nan``/``inf`` as ``None``, numpy scalars as Python numbers, keys as strings."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


def write_results(out_dir: Path, stem: str, title: str, machine: dict, body_markdown: str, payload: dict) -> tuple[Path, Path]:
    """Writes ``stem.md`` (title, machine block, tables) and ``stem.json`` (machine + payload) atomically.

    Returns:
        The two paths written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    header = [
        f"# {title}",
        "",
        f"- date: {machine['date']}",
        f"- command: `{machine['command']}`",
        f"- machine: {machine['cpu']}, {machine['cores_available']} cores available, {machine['memory_gb']} GB RAM"
        + (f", GPU {machine['gpu']}" if machine.get("gpu") else ""),
        f"- threads per process: {machine['threads_per_method']}; load average at start: {machine['load_average_1_5_15']}",
        f"- code: git {machine['git_commit']}{' (uncommitted changes)' if machine['git_dirty'] else ''}",
        f"- versions: {versions}",
        "",
    ]
    md_path = out_dir / f"{stem}.md"
    json_path = out_dir / f"{stem}.json"
    for path, text in (
        (md_path, "\n".join(header) + body_markdown.rstrip() + "\n"),
        (json_path, json.dumps(json_ready({"title": title, "machine": machine, **payload}), indent=1) + "\n"),
    ):
        temp = path.with_name(f".{path.name}.tmp")
        temp.write_text(text)
        os.replace(temp, path)
    return md_path, json_path
