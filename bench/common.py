"""What every benchmark shares: data paths, thread limits, isolated method workers, machine facts, result files.

Each method runs in its own worker process (``multiprocessing`` spawn), one job after another. Before a
job the worker resets the kernel's peak-RSS counter of its process (``/proc/self/clear_refs``), so the
peak resident memory reported for a job is that job's own, on top of what the worker already held
(the imported libraries). A worker that crashes (a segfault in a C++ library) or runs past its time
limit is replaced, and the job is reported as failed instead of stopping the benchmark.
"""

from __future__ import annotations

import datetime as _datetime
import importlib
import json
import math
import multiprocessing
import os
import platform
import subprocess
import sys
import time
import traceback
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


def limit_threads(threads: int) -> None:
    """Sets the thread variables read by torch, BLAS and ITK (ANTs, elastix); call before importing them."""
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


def _read_status_kb(field: str) -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return float(line.split()[1])
    return math.nan


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _worker_loop(connection, threads: int, warm_up: str | None) -> None:
    limit_threads(threads)
    if warm_up:
        module_name, function_name = warm_up.split(":")
        getattr(importlib.import_module(module_name), function_name)(threads)
    connection.send(("ready", None))
    while True:
        message = connection.recv()
        if message is None:
            return
        target, kwargs = message
        module_name, function_name = target.split(":")
        function = getattr(importlib.import_module(module_name), function_name)
        reset = _reset_peak_rss()
        start_rss = _read_status_kb("VmRSS")
        start = time.perf_counter()
        try:
            result = function(**kwargs)
        except Exception:  # reported to the parent as a failed job, the worker lives on
            connection.send(("error", traceback.format_exc(limit=8)))
            continue
        wall = time.perf_counter() - start
        result = dict(result or {})
        extra = float(result.pop("extra_s", 0.0))
        result["time_s"] = wall - extra
        result["eval_export_s"] = extra
        result["peak_rss_mb"] = _read_status_kb("VmHWM") / 1024.0 if reset else math.nan
        result["start_rss_mb"] = start_rss / 1024.0
        connection.send(("ok", result))


class JobFailed(RuntimeError):
    """A job raised, crashed its worker or ran past its time limit."""


class Worker:
    """A process that runs one method's jobs in isolation.

    Args:
        name: label used in messages.
        threads: thread count for torch / ITK inside the worker.
        warm_up: ``"module:function"`` called once with ``threads`` at start (imports, lazy loading), so
            that library start-up is not counted in the first job's time.
    """

    def __init__(self, name: str, threads: int, warm_up: str | None = None) -> None:
        self.name = name
        self.threads = threads
        self.warm_up = warm_up
        self._process = None
        self._connection = None

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self._process = context.Process(
            target=_worker_loop, args=(child, self.threads, self.warm_up), name=f"bench-{self.name}", daemon=True
        )
        self._process.start()
        child.close()
        self._connection = parent
        status, _ = self._connection.recv()
        if status != "ready":
            raise JobFailed(f"{self.name}: worker did not start")

    def call(self, target: str, timeout_s: float | None = None, **kwargs: Any) -> dict:
        """Runs ``module:function(**kwargs)`` in the worker.

        Returns:
            The function's dict plus ``time_s`` (wall time minus the ``extra_s`` the job declared as
            evaluation-only export), ``eval_export_s``, ``peak_rss_mb`` and ``start_rss_mb``.

        Raises:
            JobFailed: the job raised, the worker died, or ``timeout_s`` passed.
        """
        if self._process is None or not self._process.is_alive():
            self._start()
        self._connection.send((target, kwargs))
        if not self._connection.poll(timeout_s):
            self.stop(force=True)
            raise JobFailed(f"{self.name}: no result within {timeout_s:.0f} s (time limit)")
        try:
            status, payload = self._connection.recv()
        except EOFError:
            code = self._process.exitcode if self._process is not None else None
            self.stop(force=True)
            raise JobFailed(f"{self.name}: worker died (exit code {code})") from None
        if status == "error":
            raise JobFailed(f"{self.name}: {payload.strip().splitlines()[-1]}\n{payload}")
        return payload

    def stop(self, force: bool = False) -> None:
        """Ends the worker process (politely unless ``force``)."""
        if self._process is None:
            return
        if not force and self._process.is_alive():
            try:
                self._connection.send(None)
                self._process.join(10)
            except (BrokenPipeError, OSError):
                pass
        if self._process.is_alive():
            self._process.kill()
            self._process.join(10)
        self._process = None
        self._connection = None


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
        f"- threads per method: {machine['threads_per_method']}; load average at start: {machine['load_average_1_5_15']}",
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
