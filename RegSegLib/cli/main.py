"""The ``regseg`` command: one sub-command per file of this package.

Run as ``regseg ...``, ``python -m RegSegLib ...`` or ``python -m RegSegLib.cli ...`` (the Slicer modules
run ``PythonSlicer -m RegSegLib.cli ...``).

A command is a module of :mod:`RegSegLib.cli` that defines ``COMMAND`` (its name), ``ORDER`` (its place
in the help), ``add_arguments(parser)``, optionally ``check(parser, args)`` (combinations and settings,
before any file is read) and ``run(args, report) -> exit code``. A new command is a new file; nothing
here changes.

Exit codes: 0 success; 1 unexpected internal error (traceback with ``--verbose``); 2 bad input or usage,
reported as one line ``regseg: error: <path>: <problem>`` on stderr; 128 + signal number (130 for SIGINT,
143 for SIGTERM) when cancelled. Outputs are written to temporary names and moved into place only when
everything succeeded, so a failure or a cancellation leaves no half-written file; inputs are never
overwritten.

Progress: ``--progress bar`` draws a tqdm bar on stderr (the default on a terminal), ``--progress stages``
prints one line per stage on stdout (the default otherwise: logs and batch jobs see the run advance),
``--progress lines`` prints ``PROGRESS <fraction> <message>`` lines on stdout (flushed, fractions never
decrease, the last is ``PROGRESS 1.0000 done``), ``--progress none`` reports nothing. A closed standard output (``regseg ... |
head``) changes nothing: what would have been printed is dropped and the exit code stays 0 when the outputs
were written.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import signal
import sys
import traceback
from types import ModuleType
from typing import Sequence

from RegSegLib import __version__
from RegSegLib.cli.runtime import GUARD, Interrupted, ProgressReporter, silence_stdout
from RegSegLib.errors import RegSegError

PROG = "regseg"


def commands() -> list[ModuleType]:
    """The command modules of this package, in help order."""
    package = importlib.import_module("RegSegLib.cli")
    found = []
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"RegSegLib.cli.{info.name}")
        if hasattr(module, "COMMAND"):
            found.append(module)
    return sorted(found, key=lambda module: module.ORDER)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``regseg`` and its sub-commands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--progress",
        choices=("bar", "stages", "lines", "none"),
        default=argparse.SUPPRESS,
        help="progress display: tqdm bar on stderr (default on a terminal), one line per stage on stdout "
        "(default otherwise), PROGRESS lines on stdout, or none",
    )
    common.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help="tracebacks for internal errors")

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="RegSeg: medical image registration. Transforms map fixed points to moving points (RAS mm).",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in commands():
        sub = subparsers.add_parser(module.COMMAND, parents=[common], help=module.HELP, description=module.DESCRIPTION)
        module.add_arguments(sub)
        sub.set_defaults(module=module, command_parser=sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``regseg`` with ``argv`` (default ``sys.argv[1:]``) and returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if hasattr(args.module, "check"):
            args.module.check(args.command_parser, args)  # errors show the command's own usage
    except SystemExit as exc:
        return int(exc.code or 0)
    verbose = getattr(args, "verbose", False)
    mode = getattr(args, "progress", None) or ("bar" if sys.stderr.isatty() else "stages")
    reporter = None
    with GUARD:
        GUARD.pending, GUARD.raised = None, False
        try:
            reporter = ProgressReporter(mode)
            try:
                code = args.module.run(args, reporter)
                sys.stdout.flush()
                return code
            except BrokenPipeError:
                # stdout's reader left (``regseg ... | head``): after the work was done every output is
                # already in place, and a command whose product is what it prints has nobody to print it
                # to; either way the rest of stdout goes to the null device
                if reporter.last_fraction < 1.0 and not _stdout_closed():
                    raise
                silence_stdout()
                return 0
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


def run_and_exit() -> None:
    """The process entry point (``regseg``, ``python -m RegSegLib``): :func:`main`, then exit with its code.

    The process ends without the interpreter's shutdown (``os._exit`` once standard output and error are
    flushed): the outputs are already closed and in place, and the shutdown (0.2-0.4 s once torch is
    imported: module teardown and garbage collection) would only free memory the process gives back anyway.
    """
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that has gone, a stream already closed
            pass
    os._exit(code)


def _stdout_closed() -> bool:
    """Whether standard output's reader has gone (flushing it raises ``BrokenPipeError``)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return True
    except (OSError, ValueError):
        return False
    return False


def _close(reporter: ProgressReporter | None) -> None:
    """Removes the progress bar (before a message is printed under it)."""
    if reporter is not None:
        reporter.close()


if __name__ == "__main__":
    run_and_exit()
