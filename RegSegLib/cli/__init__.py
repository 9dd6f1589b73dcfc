"""The ``regseg`` command line (:mod:`RegSegLib.cli.main`); one file per sub-command, no numerical code."""

from RegSegLib.cli.main import build_parser, main, run_and_exit

__all__ = ["build_parser", "main", "run_and_exit"]
