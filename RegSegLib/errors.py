"""Errors that reach users as one clear line naming the file and the problem."""

from __future__ import annotations

import os


class RegSegError(Exception):
    """A problem with the user's input or output; the CLI prints it as one line and exits with 2."""


class InputError(RegSegError):
    """A file that cannot be used as given.

    Args:
        path: the offending file or folder.
        problem: what is wrong with it, in words a user understands.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
