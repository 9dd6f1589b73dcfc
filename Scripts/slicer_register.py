"""Batch registration in Slicer: loads two volumes, runs RegSegRegistrationLogic, saves the results, exits with a status.

    Slicer --no-splash --no-main-window --python-script Scripts/slicer_register.py \\
        --fixed F --moving M --output-dir D [--method affine|deformable] [--transform rigid|...|affine] \\
        [--metric M] [--device auto|cpu|cuda] [--install-dependencies] \\
        [--levels 4,2,1] [--iterations 60,20,10] [--deformable-iterations 12,6] [--regularisation W] \\
        [--preset default|large-motion] [--spacing MM]

Writes ``D/transform.h5`` (the output transform node: fixed -> moving, "transform from parent"),
``D/warped.nrrd`` (the moving volume on the fixed grid) and keeps RegSeg's own result folder in
``D/regseg`` (``metrics.json``, ``qc.png``, ...). Exit codes: 0 success, 1 registration failed or an internal
error (one line on stderr), 2 bad arguments or inputs. Every path ends the process with its code: ``Slicer
--python-script`` itself never exits. In an installed extension the script lies in
``<extension>/lib/Slicer-X.Y/qt-scripted-modules/Scripts/``. Also runs with plain Python when the
``slicer-core`` package provides the MRML classes.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

SCRIPT_FOLDER = Path(__file__).resolve().parent
MODULE_FOLDER = next(
    (folder for folder in (SCRIPT_FOLDER.parent / "RegSeg", SCRIPT_FOLDER.parent) if (folder / "RegSegSlicerLib").is_dir()),
    SCRIPT_FOLDER.parent / "RegSeg",
)
"""The folder of the module files: ``RegSeg/`` in a source checkout, ``qt-scripted-modules`` in an installed
extension (where CMake installs this script into ``qt-scripted-modules/Scripts``)."""


def make_modules_importable() -> None:
    """Puts the module folder (RegSegSlicerLib) and RegSegLib on ``sys.path``.

    RegSegLib is found as the modules find it (:func:`RegSegSlicerLib.paths.ensure_regseglib_importable`): beside the
    modules in an installed extension, in the checkout root, or installed in this Python.
    """
    if str(MODULE_FOLDER) not in sys.path:
        sys.path.insert(0, str(MODULE_FOLDER))
    from RegSegSlicerLib.paths import ensure_regseglib_importable

    ensure_regseglib_importable()


def build_parser() -> argparse.ArgumentParser:
    """The command line; the choices are those of :mod:`RegSegLib.registration.settings` (torch-free)."""
    make_modules_importable()
    from RegSegLib.registration import settings

    parser = argparse.ArgumentParser(prog="slicer_register.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--fixed", required=True, help="fixed volume file")
    parser.add_argument("--moving", required=True, help="moving volume file")
    parser.add_argument("--output-dir", required=True, help="folder for transform.h5, warped.nrrd and regseg/")
    parser.add_argument("--method", choices=settings.ITERATIVE_METHODS, default="affine")
    parser.add_argument("--transform", choices=settings.FAMILIES, default="affine")
    parser.add_argument("--metric", choices=settings.METRIC_CHOICES, default=settings.AUTO_METRIC)
    parser.add_argument("--device", choices=settings.DEVICES, default="auto")
    parser.add_argument("--install-dependencies", action="store_true", help="install missing Python packages first")
    advanced = parser.add_argument_group("advanced settings (as in regseg register; default: the engine's)")
    advanced.add_argument("--levels", default="", metavar="4,2,1", help="affine pyramid factors, coarse to fine")
    advanced.add_argument("--iterations", default="", metavar="60,20,10", help="affine iterations per level")
    advanced.add_argument("--deformable-iterations", default="", metavar="12,6", help="deformable Adam iterations")
    advanced.add_argument("--regularisation", type=float, default=None, metavar="W", help="deformable smoothness weight")
    advanced.add_argument("--preset", choices=tuple(settings.PRESETS), default="default", help="deformable preset")
    advanced.add_argument("--spacing", type=float, default=None, metavar="MM", help="deformable working resolution")
    return parser


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def module_logic():
    """A new RegSegRegistrationLogic inside the Slicer application, ``None`` outside it (no Qt).

    The Logic class is instantiated directly (``slicer.util.getModuleLogic`` would build the module's whole
    panel to reach it): from the module Slicer loaded, else imported from the module folder. Outside the
    application the caller runs the same :class:`RegSegSlicerLib.registration.RegistrationJob` the Logic runs.
    """
    import slicer

    if getattr(slicer, "app", None) is None:
        return None
    module = sys.modules.get("RegSegRegistration")  # Slicer registers each scripted module it loads there
    if module is None:
        make_modules_importable()
        import RegSegRegistration as module
    return module.RegSegRegistrationLogic()


def register(logic, scene, fixed, moving, **options):
    """Runs the registration through the Logic, or through its job runner outside the application."""
    if logic is not None:
        return logic.register(fixed, moving, scene=scene, **options)
    from RegSegSlicerLib.registration import RegistrationJob, RegistrationRequest

    callbacks = {key: options.pop(key) for key in ("on_progress", "on_log", "result_dir")}
    job = RegistrationJob(scene, RegistrationRequest(fixed, moving, **options), **callbacks)
    return job.wait()


def run(args: argparse.Namespace) -> int:
    import slicer

    if getattr(slicer, "mrmlScene", None) is None:
        slicer.mrmlScene = slicer.vtkMRMLScene()
    scene = slicer.mrmlScene
    make_modules_importable()
    from RegSegSlicerLib import nodes
    from RegSegSlicerLib.dependencies import DependencyError
    from RegSegSlicerLib.registration import RegistrationError, parse_number_list

    for path in (args.fixed, args.moving):
        if not Path(path).exists():
            print(f"slicer_register: error: {path}: file not found", file=sys.stderr)
            return 2
    try:
        fixed = nodes.add_volume_file(scene, args.fixed, "fixed")
        moving = nodes.add_volume_file(scene, args.moving, "moving")
    except RuntimeError as exc:
        print(f"slicer_register: error: {exc}", file=sys.stderr)
        return 2
    try:
        advanced = {
            "levels": parse_number_list(args.levels, float, "pyramid levels"),
            "iterations": parse_number_list(args.iterations, int, "affine iterations"),
            "deformable_iterations": parse_number_list(args.deformable_iterations, int, "deformable iterations"),
            "regularisation": args.regularisation,
            "preset": args.preset,
            "spacing_mm": args.spacing,
        }
    except ValueError as exc:
        print(f"slicer_register: error: {exc}", file=sys.stderr)
        return 2
    output_dir = Path(args.output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or exc
        print(f"slicer_register: error: {output_dir}: cannot create the output folder ({reason})", file=sys.stderr)
        return 2
    logic = module_logic()
    try:
        if args.install_dependencies and logic is not None:
            logic.setup_dependencies(interactive=False)
        outputs = register(
            logic,
            scene,
            fixed,
            moving,
            on_progress=lambda fraction, message: print(f"PROGRESS {fraction:.4f} {message}", flush=True),
            on_log=lambda line: print(line, flush=True),
            result_dir=str(output_dir / "regseg"),
            method=args.method,
            transform_family=args.transform,
            metric=args.metric,
            device=args.device,
            output_volume=scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "warped"),
            **advanced,
        )
    except ValueError as exc:
        print(f"slicer_register: error: {exc}", file=sys.stderr)
        return 2
    except (RegistrationError, DependencyError) as exc:
        print(f"slicer_register: error: {exc}", file=sys.stderr)
        return 1
    nodes.write_transform_node(outputs.transform_node, output_dir / "transform.h5")
    nodes.write_volume_node(outputs.volume_node, output_dir / "warped.nrrd")
    print(f"slicer_register: wrote {output_dir / 'transform.h5'}, {output_dir / 'warped.nrrd'}", flush=True)
    return 0


def main(argv: list[str]) -> int:
    """Runs the script; returns its exit code whatever happens (argparse's own exits and internal errors too).

    Bad arguments or inputs give 2; anything unexpected gives 1 with one line on stderr (the traceback goes to
    stdout, the log).
    """
    try:
        return run(parse_arguments(argv))
    except SystemExit as exc:  # argparse: --help (0), or arguments it refused (2; it printed why)
        return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 2
    except Exception as exc:  # noqa: BLE001 -- a batch job must end with a status, whatever failed
        traceback.print_exc(file=sys.stdout)
        print(f"slicer_register: internal error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    status = 1
    try:
        status = main(sys.argv[1:])
    finally:  # even on KeyboardInterrupt or SystemExit from deep inside: Slicer would otherwise stay alive
        make_modules_importable()
        from RegSegLib.process import exit_with

        exit_with(status)
