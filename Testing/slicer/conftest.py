"""Fixtures of the Slicer suites: the extension as CMake installs it."""

from __future__ import annotations

from pathlib import Path

import pytest

import extension_build


@pytest.fixture(scope="session")
def installed_modules(tmp_path_factory) -> Path:
    """The ``qt-scripted-modules`` folder of the extension installed by its CMake files (stand-in Slicer 5.10):
    the module files and resources, RegSegLib with its data files, and ``Scripts/slicer_register.py``.

    Tests only read it (and may leave ``__pycache__`` folders).
    """
    return extension_build.install_extension(tmp_path_factory.mktemp("extension"))
