"""Python dependencies of RegSeg inside Slicer, set up on first Apply with confirmation (never at import time).

* torch comes from the PyTorch extension (``PyTorchUtils``), which picks the right CPU/CUDA build.
* The other packages are listed in ``Resources/requirements.txt`` with ``>=`` bounds. Slicer 5.12+ installs
  them with ``slicer.packaging.pip_ensure`` (its own check, prompt, progress and restart offer, each switched
  off in batch use); Slicer 5.10 installs them after RegSeg's own confirmation with ``slicer.util.pip_install``.

Requirements are read and compared with the ``packaging`` library (bundled with Slicer's Python), against
package metadata only: nothing here imports torch.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Callable, Sequence

from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

from RegSegSlicerLib.paths import MODULE_FOLDER

REQUIREMENTS_FILE = MODULE_FOLDER / "Resources" / "requirements.txt"
TORCH_REQUIREMENT = "torch>=2.2"
REQUESTER = "RegSeg"
PACKAGE_MODULE = "slicer.packaging"
"""Slicer's package module with ``pip_ensure`` and ``load_requirements`` (Slicer 5.12 and later)."""


class DependencyError(RuntimeError):
    """A dependency is missing and was not (or could not be) installed; the message says what to do."""


def read_requirements(path: str | Path = REQUIREMENTS_FILE) -> list[str]:
    """Requirement lines of a requirements file (comments, blank lines and pip options such as ``-c`` dropped)."""
    lines = []
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            lines.append(line)
    return lines


def missing_requirements(
    requirements: Sequence[str], version_of: Callable[[str], str] = importlib.metadata.version
) -> list[str]:
    """The requirements that apply to this Python and are not installed in a version they accept.

    Args:
        requirements: requirement strings as pip reads them (``name>=version``, ranges, extras, markers).
        version_of: installed version of a distribution (raises ``PackageNotFoundError`` when absent).

    Raises:
        packaging.requirements.InvalidRequirement: a string that is not a requirement (a ``ValueError``).
    """
    importlib.invalidate_caches()  # a pip run in another process may have changed what is installed
    missing = []
    for text in requirements:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            installed = Version(version_of(requirement.name))
        except (importlib.metadata.PackageNotFoundError, InvalidVersion):
            missing.append(text)
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            missing.append(text)
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
    bound = str(Requirement(TORCH_REQUIREMENT).specifier)
    torch = logic.installTorch(askConfirmation=interactive, torchVersionRequirement=bound)
    if torch is None or torch_missing():
        raise DependencyError("PyTorch was not installed; RegSeg cannot run without it.")


def package_module() -> ModuleType | None:
    """``slicer.packaging`` (Slicer 5.12 and later), else ``None`` (Slicer 5.10).

    It is a submodule that Slicer does not import at start-up, so it is imported here, not looked up.
    """
    try:
        module = importlib.import_module(PACKAGE_MODULE)
    except ImportError:
        return None
    return module if hasattr(module, "pip_ensure") and hasattr(module, "load_requirements") else None


def ensure_packages(slicer, requirements_file: str | Path = REQUIREMENTS_FILE, interactive: bool = True) -> None:
    """Installs the packages of the requirements file that are missing, after confirmation.

    Args:
        slicer: the ``slicer`` module (``slicer.util`` gives the dialog and ``pip_install`` of Slicer 5.10).
        requirements_file: ``name>=version`` lines.
        interactive: ask before installing, show pip's progress dialog and offer a restart when an imported
            package was updated; ``False`` (batch) opens no dialog at all.

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
            # pip_ensure's prompt_restart and show_progress default to True: each opens a dialog
            packages.pip_ensure(
                packages.load_requirements(str(requirements_file)),
                requester=REQUESTER,
                prompt_install=interactive,
                prompt_restart=interactive,
                show_progress=interactive,
            )
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


def tests_skip_reason(tests: str, panel: str) -> str | None:
    """Why a module's in-Slicer tests are skipped (this Slicer lacks torch or a package), ``None`` when they can run.

    Args:
        tests: what is skipped, e.g. ``"RegSeg registration tests"``.
        panel: where one Apply installs the rest, e.g. ``"RegSeg Registration"``.
    """
    missing = ([TORCH_REQUIREMENT] if torch_missing() else []) + missing_requirements(read_requirements())
    if not missing:
        return None
    return (
        f"{tests} skipped: this Slicer lacks " + ", ".join(missing) + " (install the PyTorch "
        f"extension, then press Apply once in {panel} to install the rest)."
    )


class DependencyLogicMixin:
    """What every RegSeg module's Logic does about dependencies: install them once per session on request."""

    dependencies_ready = False

    def setup_dependencies(self, interactive: bool = True) -> None:
        """Installs torch (PyTorch extension) and the Python packages when missing, once per session.

        Raises:
            DependencyError: a dependency is still missing.
        """
        if self.dependencies_ready:
            return
        ensure_dependencies(interactive=interactive)
        self.dependencies_ready = True
