"""The ``regseg`` command: register, apply a transform, evaluate.

Run as ``regseg ...``, ``python -m RegSegLib ...`` or ``python -m RegSegLib.cli ...`` (the Slicer modules
run ``PythonSlicer -m RegSegLib.cli ...``).

Exit codes: 0 success; 1 unexpected internal error (traceback with ``--verbose``); 2 bad input or usage,
reported as one line ``regseg: error: <path>: <problem>`` on stderr; 128 + signal number (130 for SIGINT,
143 for SIGTERM) when cancelled. Outputs are written to temporary names and moved into place only when
everything succeeded, so a failure or a cancellation leaves no half-written file; inputs are never
overwritten.

Progress: ``--progress bar`` draws a tqdm bar on stderr (the default on a terminal), ``--progress lines``
prints ``PROGRESS <fraction> <message>`` lines on stdout (flushed, fractions never decrease, the last is
``PROGRESS 1.0000 done``), ``--progress none`` reports nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from RegSegLib import __version__
from RegSegLib.errors import InputError, RegSegError

PROG = "regseg"
REGISTER_OUTPUTS = (
    "warped.nii.gz",
    "transform.h5",
    "affine.tfm",
    "displacement.nii.gz",
    "warped_labels.nii.gz",
    "metrics.json",
    "qc.png",
)
"""Every file ``regseg register`` may write into its output folder."""
METRICS = ("mse", "ncc", "lncc", "mi", "mind")
DEFORMABLE_PRESETS = ("default", "large-motion")
"""The names of ``deformable.PRESETS``, and below ``affine``'s default pyramid: kept here so that parsing
the command line does not import torch (a test checks that they agree)."""
DEFAULT_AFFINE_LEVELS = (4.0, 2.0, 1.0)
LINE_INTERVAL_S = 0.25
LINE_STEP = 0.01
"""``PROGRESS`` lines are printed at most every :data:`LINE_INTERVAL_S` unless the fraction grew by :data:`LINE_STEP`."""


class Interrupted(Exception):
    """Raised in the main thread when SIGINT or SIGTERM arrives.

    Args:
        signum: the signal number.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"cancelled by {signal.Signals(signum).name}")


class _SignalGuard:
    """Turns SIGINT/SIGTERM into :class:`Interrupted`, deferred while outputs are being moved into place."""

    def __init__(self) -> None:
        self.pending: int | None = None
        self.critical = False
        self.raised = False
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.raised:
            return
        if self.critical:
            self.pending = signum
            return
        self.raised = True
        raise Interrupted(signum)

    def __enter__(self) -> "_SignalGuard":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    @contextlib.contextmanager
    def protected(self) -> Iterator[None]:
        """A block a signal does not interrupt; a signal that arrived meanwhile is raised at its end."""
        self.critical = True
        try:
            yield
        finally:
            self.critical = False
        if self.pending is not None and not self.raised:
            self.raised = True
            raise Interrupted(self.pending)


_GUARD = _SignalGuard()


class ProgressReporter:
    """Receives ``(fraction, message)`` and shows it as a bar, as ``PROGRESS`` lines, or not at all.

    Fractions never decrease; ``PROGRESS`` lines are throttled (see :data:`LINE_INTERVAL_S`) and the final
    ``1.0`` line is always printed.

    Args:
        mode: ``"bar"``, ``"lines"`` or ``"none"``.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.last_fraction = 0.0
        self.last_line: tuple[str, str] | None = None
        self.last_time = -math.inf
        self.last_printed = -math.inf
        self.bar = None
        if mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(
                total=1.0,
                file=sys.stderr,
                bar_format="{desc:<40.40} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]",
                leave=False,
            )

    def __call__(self, fraction: float, message: str = "") -> None:
        fraction = max(self.last_fraction, min(max(float(fraction), 0.0), 1.0))
        self.last_fraction = fraction
        if self.mode == "lines":
            now = time.monotonic()
            due = now - self.last_time >= LINE_INTERVAL_S or fraction - self.last_printed >= LINE_STEP
            if (due or fraction >= 1.0) and (f"{fraction:.4f}", message) != self.last_line:
                self.last_line = (f"{fraction:.4f}", message)
                self.last_time, self.last_printed = now, fraction
                print(f"PROGRESS {fraction:.4f} {message}".rstrip(), flush=True)
        elif self.bar is not None:
            self.bar.n = fraction
            self.bar.set_description_str(message, refresh=False)
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ----------------------------------------------------------------------------------------------
# output safety
# ----------------------------------------------------------------------------------------------


def _same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def refuse_overwriting_inputs(outputs: Sequence[str | os.PathLike], inputs: Sequence[str | os.PathLike | None]) -> None:
    """Refuses any output path that is an input path.

    Raises:
        InputError: naming the output path.
    """
    for output in outputs:
        for given in inputs:
            if given is not None and _same_path(output, given):
                raise InputError(output, "is one of the inputs; choose another output path (inputs are never overwritten)")


class StagingFolder:
    """A temporary folder beside an output folder; :meth:`commit` moves its files into the output folder.

    Created at once, so an output location that cannot be written fails before any work is done.

    Args:
        output: the output folder (created at commit when missing; its parent is created now).
        known_names: names this command may write; ones left from an earlier run and not written by this
            one are removed at commit so the folder never mixes two runs.

    Raises:
        InputError: the output exists and is not a folder, or its location cannot be written.
    """

    def __init__(self, output: Path, known_names: Sequence[str] = ()) -> None:
        self.output = output
        self.known_names = tuple(known_names)
        if output.exists() and not output.is_dir():
            raise InputError(output, "exists and is not a folder")
        parent = output.parent
        existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            raise InputError(output, f"output folder cannot be created: {existing} is a file, not a folder")
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".partial", dir=parent))
        except OSError as exc:
            raise InputError(output, f"output folder cannot be written ({exc.strerror or exc})") from exc

    def file(self, name: str) -> Path:
        return self.path / name

    def commit(self) -> list[Path]:
        """Moves every staged file into the output folder; returns the final paths."""
        written = sorted(p.name for p in self.path.iterdir())
        with _GUARD.protected():
            try:
                self.output.mkdir(exist_ok=True)
                for name in self.known_names:
                    stale = self.output / name
                    if name not in written and stale.is_file():
                        stale.unlink()
                for name in written:
                    os.replace(self.path / name, self.output / name)
            except OSError as exc:
                raise InputError(self.output, f"output folder cannot be written ({exc.strerror or exc})") from exc
        return [self.output / name for name in written]

    def cleanup(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# reading and checking inputs
# ----------------------------------------------------------------------------------------------


def _read_image(path: str, channel: int | None, option: str):
    from RegSegLib.io.volumes import read_volume
    from RegSegLib.registration.pipeline import check_image, select_channel

    return check_image(select_channel(read_volume(path), path, channel, option), path)


def _read_mask(path: str, image, image_path: str):
    from RegSegLib.io.volumes import read_volume
    from RegSegLib.registration.pipeline import as_mask, check_same_grid

    mask = as_mask(read_volume(path), path)
    check_same_grid(mask, path, image, image_path, "mask")
    return mask


def _read_labels(path: str, image=None, image_path: str | None = None):
    from RegSegLib.io.volumes import read_volume
    from RegSegLib.registration.pipeline import as_label_map, check_same_grid

    labels = as_label_map(read_volume(path), path)
    if image is not None:
        check_same_grid(labels, path, image, image_path or "", "label map")
    return labels


def versions() -> dict[str, str]:
    """Versions of RegSeg and the libraries that shape its results."""
    import numpy
    import SimpleITK
    import torch

    return {
        "regseg": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "SimpleITK": SimpleITK.Version_VersionString(),
    }


def _similarity_report(fixed, before, after, metric: str, fixed_mask) -> dict[str, Any]:
    """The metric on robustly scaled images (0.5-99.5 percentiles to [0, 1]) before and after."""
    import torch

    from RegSegLib.registration.losses import METRICS as LOSS_METRICS
    from RegSegLib.registration.losses import similarity

    def scaled(volume) -> torch.Tensor:
        data = volume.data[:1].float()
        sample = data.reshape(-1)
        if sample.numel() > 1_000_000:
            sample = sample[:: sample.numel() // 500_000]
        low, high = torch.quantile(sample, torch.tensor([0.005, 0.995])).tolist()
        return ((data - low) / max(high - low, 1e-6)).clamp(0.0, 1.0)[None]

    mask = None if fixed_mask is None else fixed_mask.data[:1].float()[None]
    fixed_scaled = scaled(fixed)
    name, higher_is_better = LOSS_METRICS[metric]
    return {
        "metric": metric,
        "name": name,
        "higher_is_better": higher_is_better,
        "before": similarity(fixed_scaled, scaled(before), metric, mask),
        "after": similarity(fixed_scaled, scaled(after), metric, mask),
    }


# ----------------------------------------------------------------------------------------------
# commands
# ----------------------------------------------------------------------------------------------


def _affine_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keywords of ``register_affine`` given on the command line."""
    options: dict[str, Any] = {}
    if args.levels:
        options["levels"] = tuple(args.levels)
    if args.iterations:
        options["iterations"] = tuple(args.iterations)
    return options


def _deformable_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keywords of ``register_deformable`` given on the command line."""
    options: dict[str, Any] = {"preset": args.preset}
    if args.deformable_iterations:
        options["adam_iterations"] = args.deformable_iterations[0]
        if len(args.deformable_iterations) == 2:
            options["fine_iterations"] = args.deformable_iterations[1]
    if args.regularisation is not None:
        options["regularisation"] = args.regularisation
    if args.spacing is not None:
        options["spacing_mm"] = args.spacing
    return options


def command_register(args: argparse.Namespace, report: Callable[[float, str], None]) -> int:
    """``regseg register``: registers MOVING to FIXED and writes the result folder."""
    from RegSegLib.evaluation import dice_per_label, jacobian_statistics, json_ready, mean_ignoring_nan
    from RegSegLib.io.transforms import read_transform, write_transform
    from RegSegLib.io.volumes import write_volume
    from RegSegLib.qc import qc_figure
    from RegSegLib.registration.common import Progress, resolve_device
    from RegSegLib.registration.pipeline import register
    from RegSegLib.transforms import CompositeTransform, resample

    started = time.perf_counter()
    output = Path(args.output)
    inputs = [args.fixed, args.moving, args.fixed_mask, args.moving_mask, args.init, args.fixed_labels, args.moving_labels]
    refuse_overwriting_inputs([output, *(output / name for name in REGISTER_OUTPUTS)], inputs)
    device = resolve_device(args.device)
    staging = StagingFolder(output, REGISTER_OUTPUTS)
    try:
        report(0.0, "reading inputs")
        fixed = _read_image(args.fixed, args.fixed_channel, "--fixed-channel")
        moving = _read_image(args.moving, args.moving_channel, "--moving-channel")
        fixed_mask = _read_mask(args.fixed_mask, fixed, args.fixed) if args.fixed_mask else None
        moving_mask = _read_mask(args.moving_mask, moving, args.moving) if args.moving_mask else None
        fixed_labels = _read_labels(args.fixed_labels, fixed, args.fixed) if args.fixed_labels else None
        moving_labels = _read_labels(args.moving_labels, moving, args.moving) if args.moving_labels else None
        initial = read_transform(args.init) if args.init else None
        read_seconds = time.perf_counter() - started

        result = register(
            fixed,
            moving,
            method=args.method,
            family=args.transform,
            metric=args.metric,
            fixed_mask=fixed_mask,
            moving_mask=moving_mask,
            initial=initial,
            diffeomorphic=args.diffeomorphic,
            device=device,
            progress=Progress(report).sub(0.05, 0.8),
            affine_options=_affine_options(args),
            deformable_options=_deformable_options(args),
        )

        report(0.85, "writing results")
        write_started = time.perf_counter()
        before = resample(moving, fixed, None, mode="linear")
        warped = resample(moving, fixed, result.transform, mode="linear")
        write_volume(warped, staging.file("warped.nii.gz"))
        whole = result.transform if isinstance(result.transform, CompositeTransform) else CompositeTransform([result.transform])
        write_transform(whole, staging.file("transform.h5"))
        write_transform(result.affine, staging.file("affine.tfm"))
        if result.field is not None:
            write_transform(result.field, staging.file("displacement.nii.gz"))
        report(0.9, "evaluating")
        metrics: dict[str, Any] = {
            "command": "register",
            "fixed": args.fixed,
            "moving": args.moving,
            "method": args.method,
            "transform_family": args.transform,
            "metric": args.metric,
            "diffeomorphic": bool(args.diffeomorphic),
            "initial_transform": args.init,
            "settings": {"affine": _affine_options(args), "deformable": _deformable_options(args)},
            "device": str(device),
            "similarity": _similarity_report(fixed, before, warped, args.metric or "lncc", fixed_mask),
        }
        if fixed_labels is not None and moving_labels is not None:
            labels_before = resample(moving_labels, fixed, None, mode="nearest")
            warped_labels = resample(moving_labels, fixed, result.transform, mode="nearest")
            write_volume(warped_labels, staging.file("warped_labels.nii.gz"))
            dice_after = dice_per_label(fixed_labels.data[0], warped_labels.data[0], args.labels)
            dice_before = dice_per_label(fixed_labels.data[0], labels_before.data[0], list(dice_after))
            metrics["dice"] = {
                "per_label": dice_after,
                "mean": mean_ignoring_nan(dice_after),
                "before_per_label": dice_before,
                "mean_before": mean_ignoring_nan(dice_before),
            }
        if result.field is not None:
            metrics["jacobian"] = jacobian_statistics(result.field)
        report(0.95, "drawing the QC picture")
        qc_figure(fixed, before, warped, staging.file("qc.png"))
        write_seconds = time.perf_counter() - write_started
        metrics["seconds"] = {
            "read": read_seconds,
            **result.seconds,
            "write": write_seconds,
            "total": time.perf_counter() - started,
        }
        metrics["versions"] = versions()
        (staging.file("metrics.json")).write_text(json.dumps(json_ready(metrics), indent=2) + "\n")
        written = staging.commit()
    finally:
        staging.cleanup()
    report(1.0, "done")
    _print_register_summary(metrics, written)
    return 0


def _print_register_summary(metrics: dict[str, Any], written: list[Path]) -> None:
    similarity = metrics["similarity"]
    print(
        f"{PROG}: {metrics['method']} registration in {metrics['seconds']['total']:.1f} s on {metrics['device']}; "
        f"{similarity['name']} {similarity['before']:.4g} -> {similarity['after']:.4g}"
    )
    if "dice" in metrics:
        print(f"{PROG}: mean Dice {metrics['dice']['mean_before']:.4f} -> {metrics['dice']['mean']:.4f}")
    if "jacobian" in metrics:
        print(f"{PROG}: folding fraction {metrics['jacobian']['folding_fraction']:.2e}")
    print(f"{PROG}: wrote {', '.join(str(p) for p in written)}", flush=True)


def command_apply(args: argparse.Namespace, report: Callable[[float, str], None]) -> int:
    """``regseg apply``: resamples MOVING onto the reference grid through a fixed-to-moving transform."""
    from RegSegLib.io.transforms import read_transform
    from RegSegLib.io.volumes import read_volume, write_volume
    from RegSegLib.transforms import resample

    refuse_overwriting_inputs([args.output], [args.transform, args.moving, args.reference])
    report(0.0, "reading inputs")
    transform = read_transform(args.transform)
    if args.labels:
        moving = _read_labels(args.moving)
    else:
        moving = read_volume(args.moving)
    reference = read_volume(args.reference)
    report(0.3, "resampling")
    warped = resample(moving, reference, transform, mode="nearest" if args.labels else "linear")
    report(0.8, "writing")
    write_volume(warped, args.output)
    report(1.0, "done")
    print(f"{PROG}: wrote {args.output}", flush=True)
    return 0


def command_evaluate(args: argparse.Namespace, report: Callable[[float, str], None]) -> int:
    """``regseg evaluate``: Dice and HD95 of label maps, landmark error through a transform."""
    from RegSegLib.evaluation import dice_per_label, hd95_per_label, json_ready, landmark_errors, mean_ignoring_nan
    from RegSegLib.io.transforms import read_transform
    from RegSegLib.io.volumes import atomic_output, read_landmarks
    from RegSegLib.registration.pipeline import check_same_grid

    inputs = [args.fixed_labels, args.warped_labels, args.transform, args.landmarks]
    if args.json:
        refuse_overwriting_inputs([args.json], inputs)
    results: dict[str, Any] = {}
    report(0.0, "reading inputs")
    if args.fixed_labels:
        fixed = _read_labels(args.fixed_labels)
        warped = _read_labels(args.warped_labels)
        check_same_grid(warped, args.warped_labels, fixed, args.fixed_labels, "label map")
        report(0.2, "Dice")
        dice = dice_per_label(fixed.data[0], warped.data[0], args.labels)
        report(0.4, "HD95")
        hd95 = hd95_per_label(fixed.data[0], warped.data[0], fixed.spacing, list(dice))
        results.update(dice=dice, dice_mean=mean_ignoring_nan(dice), hd95=hd95, hd95_mean=mean_ignoring_nan(hd95))
    if args.landmarks:
        report(0.8, "landmark errors")
        points = read_landmarks(args.landmarks)
        if "fixed" not in points:
            raise InputError(args.landmarks, "needs paired columns fixed_R,fixed_A,fixed_S,moving_R,moving_A,moving_S")
        transform = read_transform(args.transform) if args.transform else None
        results["landmarks_before"] = landmark_errors(points["fixed"], points["moving"], None)
        if transform is not None:
            results["landmarks"] = landmark_errors(points["fixed"], points["moving"], transform)
    report(1.0, "done")
    _print_evaluation(results)
    if args.json:
        with atomic_output(args.json) as temp:
            Path(temp).write_text(json.dumps(json_ready(results), indent=2) + "\n")
    return 0


def _print_evaluation(results: dict[str, Any]) -> None:
    if "dice" in results:
        print(f"{'label':>8} {'dice':>8} {'hd95_mm':>9}")
        for label, value in results["dice"].items():
            print(f"{label:>8} {value:8.4f} {results['hd95'][label]:9.2f}")
        print(f"{'mean':>8} {results['dice_mean']:8.4f} {results['hd95_mean']:9.2f}")
    for key, title in (("landmarks_before", "landmark error before"), ("landmarks", "landmark error after")):
        if key in results:
            errors = results[key]
            print(
                f"{title} (n={errors['count']}): mean {errors['mean']:.3f} mm, median {errors['median']:.3f} mm, "
                f"p90 {errors['p90']:.3f} mm, max {errors['max']:.3f} mm"
            )
    sys.stdout.flush()


# ----------------------------------------------------------------------------------------------
# argument parsing and the entry point
# ----------------------------------------------------------------------------------------------


def _check_sign(value, text: str, lead: str, what: str, zero_allowed: bool) -> None:
    if value < 0 or (value == 0 and not zero_allowed):
        sign = "non-negative" if zero_allowed else "positive"
        raise argparse.ArgumentTypeError(f"expected {lead}{sign} {what}, got {text!r}")


def _number_list(kind: type, what: str, zero_allowed: bool = False):
    """An argparse type: comma-separated positive (or, when allowed, zero) numbers of ``kind``."""

    def parse(text: str) -> list:
        try:
            values = [kind(part) for part in text.split(",") if part.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from exc
        if not values:
            raise argparse.ArgumentTypeError(f"no {what} given")
        for value in values:
            _check_sign(value, text, "comma-separated ", what, zero_allowed)
        return values

    return parse


def _number(kind: type, what: str, zero_allowed: bool = False):
    """An argparse type: one positive (or, when allowed, zero) number of ``kind``."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected a {what}, got {text!r}") from exc
        _check_sign(value, text, "a ", what, zero_allowed)
        return value

    return parse


_label_list = _number_list(int, "integer labels", zero_allowed=True)
_non_negative = _number(int, "channel number", zero_allowed=True)
_positive_float = _number(float, "number")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``regseg`` and its sub-commands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--progress",
        choices=("bar", "lines", "none"),
        default=argparse.SUPPRESS,
        help="progress display: tqdm bar on stderr (default on a terminal), PROGRESS lines on stdout, or none",
    )
    common.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help="tracebacks for internal errors")

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="RegSeg: medical image registration. Transforms map fixed points to moving points (RAS mm).",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    reg = commands.add_parser(
        "register",
        parents=[common],
        help="register MOVING to FIXED and write a result folder",
        description="Registers MOVING to FIXED. Writes warped.nii.gz, transform.h5 (the whole fixed-to-moving "
        "mapping, ITK composite), affine.tfm, displacement.nii.gz (deformable), warped_labels.nii.gz (with "
        "labels), metrics.json and qc.png into OUTDIR.",
    )
    reg.add_argument("fixed", metavar="FIXED", help="fixed image (NIfTI, NRRD, MHA or DICOM folder)")
    reg.add_argument("moving", metavar="MOVING", help="moving image")
    reg.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder (created; files replaced)")
    reg.add_argument("--method", choices=("affine", "deformable"), default="affine")
    reg.add_argument(
        "--transform",
        choices=("rigid", "similarity", "anisotropic", "affine"),
        default="affine",
        help="family of the affine stage",
    )
    reg.add_argument("--metric", choices=METRICS, default=None, help="similarity measure (default: each stage's own)")
    reg.add_argument("--fixed-mask", metavar="F", help="mask on the fixed grid (nonzero = inside)")
    reg.add_argument("--moving-mask", metavar="F", help="mask on the moving grid")
    reg.add_argument("--init", metavar="TRANSFORM", help="initial fixed-to-moving transform (.tfm, .h5, field image)")
    reg.add_argument("--fixed-labels", metavar="F", help="fixed label map (for Dice)")
    reg.add_argument("--moving-labels", metavar="F", help="moving label map (warped and scored)")
    reg.add_argument("--labels", type=_label_list, metavar="2,3,...", help="labels to score (default: all nonzero)")
    reg.add_argument("--fixed-channel", type=_non_negative, metavar="N", help="channel of a 4D fixed image")
    reg.add_argument("--moving-channel", type=_non_negative, metavar="N", help="channel of a 4D moving image")
    reg.add_argument("--diffeomorphic", action="store_true", help="deformable stage as a stationary velocity field")
    advanced = reg.add_argument_group("advanced settings (defaults: the engine's published settings)")
    advanced.add_argument(
        "--levels", type=_number_list(float, "pyramid factors"), metavar="4,2,1",
        help="affine pyramid factors, coarse to fine (level f works at f times the base spacing)",
    )
    advanced.add_argument(
        "--iterations", type=_number_list(int, "iteration counts"), metavar="60,20,10",
        help="affine iterations per pyramid level (as many as --levels)",
    )
    advanced.add_argument(
        "--deformable-iterations", type=_number_list(int, "iteration counts", zero_allowed=True), metavar="12,8",
        help="deformable Adam iterations: on the control grid, then (optional) on the full working grid; 0 skips",
    )
    advanced.add_argument(
        "--regularisation", type=_positive_float, metavar="W", help="deformable smoothness weight (default 1)"
    )
    advanced.add_argument(
        "--preset", choices=DEFORMABLE_PRESETS, default="default",
        help="deformable settings: default, or large-motion (breathing-size motion, +-12 working voxels)",
    )
    advanced.add_argument(
        "--spacing", type=_positive_float, metavar="MM", help="isotropic working resolution of the deformable stage"
    )
    reg.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    reg.set_defaults(handler=command_register)

    app = commands.add_parser(
        "apply",
        parents=[common],
        help="resample an image through a transform",
        description="Resamples MOVING onto the grid of --reference through TRANSFORM (fixed-to-moving).",
    )
    app.add_argument("transform", metavar="TRANSFORM", help="ITK transform file or displacement field image")
    app.add_argument("moving", metavar="MOVING", help="image or label map to resample")
    app.add_argument("--reference", required=True, metavar="FIXED", help="image whose grid the output takes")
    app.add_argument("-o", "--output", required=True, metavar="OUT", help="output image file")
    app.add_argument("--labels", action="store_true", help="MOVING is a label map: nearest neighbour, integer output")
    app.set_defaults(handler=command_apply)

    ev = commands.add_parser(
        "evaluate",
        parents=[common],
        help="Dice/HD95 of label maps and landmark errors",
        description="Dice and HD95 per label of two label maps on one grid; target registration error of paired "
        "landmarks (CSV with fixed_R,fixed_A,fixed_S,moving_R,moving_A,moving_S) through a transform.",
    )
    ev.add_argument("--fixed-labels", metavar="F")
    ev.add_argument("--warped-labels", metavar="W")
    ev.add_argument("--labels", type=_label_list, metavar="2,3,...", help="labels to score (default: all nonzero)")
    ev.add_argument("--transform", metavar="T", help="fixed-to-moving transform for the landmarks")
    ev.add_argument("--landmarks", metavar="CSV", help="paired landmarks (RAS mm)")
    ev.add_argument("--json", metavar="OUT", help="write the results as JSON")
    ev.set_defaults(handler=command_evaluate)
    return parser


def _check_combinations(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.command == "register":
        if bool(args.fixed_labels) != bool(args.moving_labels):
            parser.error("--fixed-labels and --moving-labels go together")
        if args.labels and not args.fixed_labels:
            parser.error("--labels needs --fixed-labels and --moving-labels")
        if args.iterations and len(args.iterations) != len(args.levels or DEFAULT_AFFINE_LEVELS):
            parser.error("--iterations needs one count per pyramid level (--levels)")
        if args.deformable_iterations and len(args.deformable_iterations) > 2:
            parser.error("--deformable-iterations takes one or two counts")
    if args.command == "evaluate":
        if bool(args.fixed_labels) != bool(args.warped_labels):
            parser.error("--fixed-labels and --warped-labels go together")
        if args.transform and not args.landmarks:
            parser.error("--transform needs --landmarks")
        if not args.fixed_labels and not args.landmarks:
            parser.error("give --fixed-labels with --warped-labels, or --landmarks")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``regseg`` with ``argv`` (default ``sys.argv[1:]``) and returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        _check_combinations(parser, args)
    except SystemExit as exc:
        return int(exc.code or 0)
    verbose = getattr(args, "verbose", False)
    mode = getattr(args, "progress", None) or ("bar" if sys.stderr.isatty() else "none")
    reporter = None
    with _GUARD:
        _GUARD.pending, _GUARD.raised = None, False
        try:
            reporter = ProgressReporter(mode)
            return args.handler(args, reporter)
        except Interrupted as exc:
            _close(reporter)
            print(f"{PROG}: {exc}; no output written", file=sys.stderr, flush=True)
            return 128 + exc.signum
        except KeyboardInterrupt:
            _close(reporter)
            print(f"{PROG}: cancelled; no output written", file=sys.stderr, flush=True)
            return 128 + signal.SIGINT
        except RegSegError as exc:
            _close(reporter)
            if verbose:
                traceback.print_exc()
            print(f"{PROG}: error: {exc}", file=sys.stderr, flush=True)
            return 2
        except Exception as exc:  # the last line of defence: one readable line, exit code 1
            _close(reporter)
            if verbose:
                traceback.print_exc()
            print(
                f"{PROG}: internal error: {type(exc).__name__}: {exc} (run with --verbose for the traceback)",
                file=sys.stderr,
                flush=True,
            )
            return 1
        finally:
            _close(reporter)


def _close(reporter: ProgressReporter | None) -> None:
    if reporter is not None:
        reporter.close()


if __name__ == "__main__":
    sys.exit(main())
