"""Python dependencies of RegSeg inside Slicer, set up on first Apply with confirmation (never at import time).

* torch comes from the PyTorch extension (``PyTorchUtils``), which picks the right CPU/CUDA build.
* The other packages are listed in ``Resources/requirements.txt`` with ``>=`` bounds. Slicer 5.12+ installs
  them with ``pip_ensure`` of its package module (``slicer.packaging``, named ``slicer.pydeps`` when it first
  appeared): its own check, prompt, progress and restart offer. Older versions install them after a
  confirmation dialog with ``slicer.util.pip_install``.

Checks use package metadata only: nothing here imports torch.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import re
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Callable, Sequence

from RegSegSlicerLib.paths import MODULE_FOLDER

REQUIREMENTS_FILE = MODULE_FOLDER / "Resources" / "requirements.txt"
TORCH_REQUIREMENT = "torch>=2.2"
REQUESTER = "RegSeg"
PACKAGE_MODULES = ("slicer.packaging", "slicer.pydeps")
"""Slicer's package modules with ``pip_ensure``, newest name first."""


class DependencyError(RuntimeError):
    """A dependency is missing and was not (or could not be) installed; the message says what to do."""


def read_requirements(path: str | Path = REQUIREMENTS_FILE) -> list[str]:
    """Requirement lines of a requirements file (comments and blank lines dropped)."""
    lines = []
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def _version_tuple(text: str) -> tuple[int, ...]:
    numbers = []
    for part in text.split("."):
        match = re.match(r"\d+", part)
        if match is None:
            break
        numbers.append(int(match.group()))
    return tuple(numbers)


def parse_requirement(requirement: str) -> tuple[str, str | None]:
    """``(name, minimum version or None)`` of ``name`` or ``name>=version``.

    Raises:
        ValueError: another specifier (RegSeg's files use ``>=`` bounds only).
    """
    match = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:>=\s*([0-9][0-9A-Za-z.]*))?\s*", requirement)
    if match is None:
        raise ValueError(f"unsupported requirement {requirement!r}; use 'name' or 'name>=version'")
    return match.group(1), match.group(2)


def missing_requirements(
    requirements: Sequence[str], version_of: Callable[[str], str] = importlib.metadata.version
) -> list[str]:
    """The requirements that are not installed, or installed in a version below the bound.

    Args:
        requirements: ``name`` or ``name>=version`` strings.
        version_of: installed version of a distribution (raises ``PackageNotFoundError`` when absent).
    """
    importlib.invalidate_caches()  # a pip run in another process may have changed what is installed
    missing = []
    for requirement in requirements:
        name, minimum = parse_requirement(requirement)
        try:
            installed = version_of(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(requirement)
            continue
        if minimum is not None and _version_tuple(installed) < _version_tuple(minimum):
            missing.append(requirement)
    return missing


def torch_missing() -> bool:
    """Whether torch is absent or older than :data:`TORCH_REQUIREMENT` (without importing it)."""
    importlib.invalidate_caches()
    if importlib.util.find_spec("torch") is None:
        return True
    return bool(missing_requirements([TORCH_REQUIREMENT]))


def ensure_torch(slicer, interactive: bool = True) -> None:
    """Installs torch through the PyTorch extension when it is missing.

    Raises:
        DependencyError: the PyTorch extension is not installed, or torch was not installed.
    """
    if not torch_missing():
        return
    try:
        import PyTorchUtils
    except ImportError as exc:
        raise DependencyError(
            "RegSeg needs PyTorch: install the 'PyTorch' extension from the Extensions Manager, restart Slicer, "
            "and press Apply again."
        ) from exc
    logic = PyTorchUtils.PyTorchUtilsLogic()
    torch = logic.installTorch(askConfirmation=interactive, torchVersionRequirement=TORCH_REQUIREMENT[len("torch"):])
    if torch is None or torch_missing():
        raise DependencyError("PyTorch was not installed; RegSeg cannot run without it.")


def package_module() -> ModuleType | None:
    """Slicer's package module with ``pip_ensure`` and ``load_requirements`` (Slicer 5.12+), else ``None``.

    It is a submodule that Slicer does not import at start-up, so it is imported here, not looked up.
    """
    for name in PACKAGE_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "pip_ensure") and hasattr(module, "load_requirements"):
            return module
    return None


def ensure_packages(slicer, requirements_file: str | Path = REQUIREMENTS_FILE, interactive: bool = True) -> None:
    """Installs the packages of the requirements file that are missing, after confirmation.

    Args:
        slicer: the ``slicer`` module (``slicer.util`` gives the dialogs and ``pip_install`` of older versions).
        requirements_file: ``name>=version`` lines.
        interactive: ask before installing.

    Raises:
        DependencyError: the user declined, pip failed, or the packages are still missing afterwards.
    """
    requirements = read_requirements(requirements_file)
    missing = missing_requirements(requirements)
    if not missing:
        return
    packages = package_module()
    if packages is None and interactive and not slicer.util.confirmOkCancelDisplay(
        "RegSeg needs these Python packages, which will be downloaded and installed now:\n\n"
        + "\n".join(missing)
        + "\n\nThis can take a few minutes.",
        "RegSeg: install Python packages",
    ):
        raise DependencyError("RegSeg's Python packages were not installed: " + ", ".join(missing))
    try:
        if packages is not None:
            options = {"requester": REQUESTER}
            if "prompt_install" in inspect.signature(packages.pip_ensure).parameters:
                options["prompt_install"] = interactive
            packages.pip_ensure(packages.load_requirements(str(requirements_file)), **options)
        else:
            slicer.util.pip_install(missing)
    except subprocess.CalledProcessError as exc:
        raise DependencyError(
            f"pip could not install {', '.join(missing)} (exit code {exc.returncode}); the Python console shows "
            "pip's output."
        ) from exc
    except RuntimeError as exc:  # pip_ensure's answer when the user declines
        raise DependencyError(f"RegSeg's Python packages were not installed ({exc}): {', '.join(missing)}") from exc
    still_missing = missing_requirements(requirements)
    if still_missing:
        raise DependencyError("These Python packages are still missing: " + ", ".join(still_missing))


def ensure_dependencies(interactive: bool = True) -> None:
    """Sets up torch and the other packages (called on the first Apply, never at import time).

    Args:
        interactive: ask before installing (``False`` in batch scripts, where installing is the caller's choice).

    Raises:
        DependencyError: a dependency is missing after the attempt, with what to do about it.
    """
    import slicer

    ensure_torch(slicer, interactive)
    ensure_packages(slicer, REQUIREMENTS_FILE, interactive)
