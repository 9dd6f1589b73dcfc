"""Where RegSegLib lives and which Python runs it.

RegSegLib is found in three situations (DESIGN.md section 1):

* the extension is installed: CMake installs ``RegSegLib/`` beside the module files, so the module
  folder is its root;
* Slicer runs the modules from a source checkout (``--additional-module-paths <checkout>/RegSeg``): the
  checkout root (the module folder's parent) holds ``RegSegLib/``;
* RegSegLib is installed as the ``regseg`` distribution in Slicer's Python.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

MODULE_FOLDER = Path(__file__).resolve().parents[1]
"""The folder holding the RegSeg module files (``RegSeg/`` in a checkout, ``qt-scripted-modules`` installed)."""


def regseglib_root() -> Path | None:
    """The folder that holds the ``RegSegLib`` package next to the modules, or ``None``.

    Returns:
        The module folder when RegSegLib is installed beside the modules, else the checkout root when
        the modules run from a source checkout, else ``None`` (RegSegLib must then be importable from
        Python's own path).
    """
    for candidate in (MODULE_FOLDER, MODULE_FOLDER.parent):
        if (candidate / "RegSegLib" / "__init__.py").is_file():
            return candidate
    return None


def ensure_regseglib_importable() -> None:
    """Puts RegSegLib's folder on ``sys.path`` when it is beside the modules and not importable yet.

    Importing RegSegLib afterwards is cheap (the package does not import torch).
    """
    root = regseglib_root()
    if root is not None and importlib.util.find_spec("RegSegLib") is None and str(root) not in sys.path:
        sys.path.insert(0, str(root))


def child_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a ``python -m RegSegLib.cli`` child process.

    Args:
        base: starting environment (default: this process's).

    Returns:
        ``base`` with RegSegLib's folder first on ``PYTHONPATH``, unbuffered UTF-8 output.
    """
    env = dict(os.environ if base is None else base)
    root = regseglib_root()
    if root is not None:
        paths = [str(root)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def python_executable() -> str:
    """The Python that runs RegSegLib: ``PythonSlicer`` inside Slicer, else this interpreter.

    Inside the Slicer application ``sys.executable`` is not a plain Python interpreter; Slicer's launcher
    puts ``PythonSlicer`` on ``PATH`` and beside the application in ``bin/``.
    """
    slicer = sys.modules.get("slicer")
    app = getattr(slicer, "app", None) if slicer is not None else None
    if app is None:
        return sys.executable
    found = shutil.which("PythonSlicer")
    if found:
        return found
    name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
    return str(Path(app.slicerHome) / "bin" / name)
