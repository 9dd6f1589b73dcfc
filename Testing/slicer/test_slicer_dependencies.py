"""Dependency set-up on first Apply: missing packages are really installed by pip (from a wheel built here, no
network), a declined confirmation or a failing pip is a readable ``DependencyError``, and Slicer 5.12+'s
``slicer.packaging.pip_ensure`` is found and called with RegSeg's requirements, every dialog it can open (install
prompt, progress, restart offer) switched off in batch use. Requirements are compared as pip compares them.

Slicer's installers (``slicer.util.pip_install``, ``slicer.packaging``) exist only in the application; the tests
use named stand-ins for them that run the real pip of this interpreter into a temporary folder on ``sys.path``.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest

from slicer_standins import slicer_module_standins

PROBE = "regseg-probe"
PROBE_MODULE = "regseg_probe"


def build_wheel(folder: Path, version: str = "1.0") -> Path:
    """A pure-Python wheel of the probe package (``regseg_probe.VALUE == 1``), written with zipfile."""
    dist_info = f"{PROBE_MODULE}-{version}.dist-info"
    files = {
        f"{PROBE_MODULE}/__init__.py": "VALUE = 1\n",
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {PROBE}\nVersion: {version}\n",
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: regseg-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    files[f"{dist_info}/RECORD"] = "\n".join(record + [f"{dist_info}/RECORD,,"]) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{PROBE_MODULE}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


def pip_into(target: Path, wheels: Path, requirements) -> None:
    """Real pip of this interpreter, offline, into ``target``; raises ``CalledProcessError`` like Slicer's."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels), "--target", str(target),
         "--disable-pip-version-check", "--quiet", *[str(r) for r in requirements]],
        check=True,
    )  # fmt: skip


class StandinSlicerUtil:
    """Stand-in for the application's ``slicer.util`` dialogs and ``pip_install`` (which runs real pip here)."""

    def __init__(self, target: Path, wheels: Path, answer: bool) -> None:
        self.target, self.wheels, self.answer = target, wheels, answer
        self.questions: list[str] = []
        self.installed: list[list[str]] = []

    def confirmOkCancelDisplay(self, text: str, windowTitle: str | None = None) -> bool:
        self.questions.append(text)
        return self.answer

    def pip_install(self, requirements) -> None:
        self.installed.append(list(requirements))
        pip_into(self.target, self.wheels, requirements)


@pytest.fixture
def dependencies():
    with slicer_module_standins():
        from RegSegSlicerLib import dependencies

    return dependencies


@pytest.fixture
def probe_site(tmp_path, monkeypatch):
    """A wheel folder with the probe 1.0, an empty install folder on ``sys.path`` and a requirements file."""
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    build_wheel(wheels)
    target.mkdir()
    monkeypatch.syspath_prepend(str(target))
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"# RegSeg test requirements\n{PROBE}>=1.0\n")
    yield types.SimpleNamespace(wheels=wheels, target=target, requirements=requirements)
    sys.modules.pop(PROBE_MODULE, None)


@pytest.fixture
def without_package_module(monkeypatch):
    """Slicer 5.10: no ``slicer.packaging`` to import."""
    monkeypatch.setitem(sys.modules, "slicer.packaging", None)


def probe_version() -> str | None:
    try:
        return importlib.metadata.version(PROBE)
    except importlib.metadata.PackageNotFoundError:
        return None


def test_a_missing_package_is_installed_for_real_after_confirmation(dependencies, probe_site, without_package_module):
    assert dependencies.missing_requirements([f"{PROBE}>=1.0"]) == [f"{PROBE}>=1.0"]
    util = StandinSlicerUtil(probe_site.target, probe_site.wheels, answer=True)
    dependencies.ensure_packages(types.SimpleNamespace(util=util), probe_site.requirements, interactive=True)
    assert len(util.questions) == 1 and f"{PROBE}>=1.0" in util.questions[0]
    assert util.installed == [[f"{PROBE}>=1.0"]]
    assert probe_version() == "1.0"
    assert __import__(PROBE_MODULE).VALUE == 1
    # a second Apply finds everything installed: no question, no pip
    dependencies.ensure_packages(types.SimpleNamespace(util=util), probe_site.requirements, interactive=True)
    assert len(util.questions) == 1 and len(util.installed) == 1


def test_batch_use_installs_without_asking(dependencies, probe_site, without_package_module):
    util = StandinSlicerUtil(probe_site.target, probe_site.wheels, answer=False)
    dependencies.ensure_packages(types.SimpleNamespace(util=util), probe_site.requirements, interactive=False)
    assert util.questions == [] and probe_version() == "1.0"


def test_declining_installs_nothing_and_says_what_is_missing(dependencies, probe_site, without_package_module):
    util = StandinSlicerUtil(probe_site.target, probe_site.wheels, answer=False)
    with pytest.raises(dependencies.DependencyError, match=rf"^RegSeg's Python packages were not installed: {PROBE}>=1\.0$"):
        dependencies.ensure_packages(types.SimpleNamespace(util=util), probe_site.requirements, interactive=True)
    assert util.installed == [] and list(probe_site.target.iterdir()) == []


def test_a_failing_pip_is_a_dependency_error_naming_the_packages(dependencies, probe_site, without_package_module):
    probe_site.requirements.write_text(f"{PROBE}>=2.0\n")  # only 1.0 can be found
    util = StandinSlicerUtil(probe_site.target, probe_site.wheels, answer=True)
    with pytest.raises(dependencies.DependencyError, match=rf"^pip could not install {PROBE}>=2\.0 \(exit code 1\)"):
        dependencies.ensure_packages(types.SimpleNamespace(util=util), probe_site.requirements, interactive=True)
    assert probe_version() is None


PIP_ENSURE_OPTIONS = (
    "constraints", "skip_packages", "prompt_install", "prompt_restart", "requester", "skip_in_testing", "show_progress",
)  # fmt: skip
"""The keyword parameters of ``slicer.packaging.pip_ensure`` in Slicer 5.12 (each dialog option defaults to True)."""


class StandinPackageModule(types.ModuleType):
    """Stand-in for Slicer 5.12+'s ``slicer.packaging``: ``load_requirements`` and ``pip_ensure`` (real pip here).

    ``pip_ensure`` accepts the real keyword parameters only and records those it was given.
    """

    def __init__(self, target: Path, wheels: Path, decline: bool = False) -> None:
        super().__init__("slicer.packaging")
        self.target, self.wheels, self.decline = target, wheels, decline
        self.calls: list[dict] = []

    def load_requirements(self, path: str) -> list[str]:
        lines = [line.split("#", 1)[0].strip() for line in Path(path).read_text().splitlines()]
        return [line for line in lines if line]

    def pip_ensure(self, requirements, **options):
        unknown = set(options) - set(PIP_ENSURE_OPTIONS)
        if unknown:
            raise TypeError(f"pip_ensure() got unexpected keyword arguments {sorted(unknown)}")
        self.calls.append({"requirements": list(requirements), **options})
        if self.decline:
            raise RuntimeError("the user declined the installation")
        pip_into(self.target, self.wheels, requirements)


@pytest.mark.parametrize("interactive", [True, False])
def test_slicer_5_12_pip_ensure_installs_the_requirements_with_dialogs_only_when_interactive(
    dependencies, probe_site, monkeypatch, interactive
):
    module = StandinPackageModule(probe_site.target, probe_site.wheels)
    monkeypatch.setitem(sys.modules, "slicer.packaging", module)
    util = StandinSlicerUtil(probe_site.target, probe_site.wheels, answer=False)
    dependencies.ensure_packages(types.SimpleNamespace(util=util), probe_site.requirements, interactive=interactive)
    assert module.calls == [
        {
            "requirements": [f"{PROBE}>=1.0"],
            "requester": "RegSeg",
            "prompt_install": interactive,
            "prompt_restart": interactive,
            "show_progress": interactive,
        }
    ]
    assert util.questions == [] and util.installed == []  # pip_ensure asks and installs itself
    assert probe_version() == "1.0"


def test_declining_slicer_5_12_pip_ensure_is_a_dependency_error(dependencies, probe_site, monkeypatch):
    module = StandinPackageModule(probe_site.target, probe_site.wheels, decline=True)
    monkeypatch.setitem(sys.modules, "slicer.packaging", module)
    util = StandinSlicerUtil(probe_site.target, probe_site.wheels, answer=True)
    with pytest.raises(dependencies.DependencyError, match=rf"not installed \(the user declined the installation\): {PROBE}>=1\.0$"):
        dependencies.ensure_packages(types.SimpleNamespace(util=util), probe_site.requirements, interactive=True)
    assert probe_version() is None


def test_without_the_pytorch_extension_torch_is_a_dependency_error_saying_what_to_install(dependencies, monkeypatch):
    monkeypatch.setattr(dependencies, "torch_missing", lambda: True)
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)
    with pytest.raises(dependencies.DependencyError, match=r"install the 'PyTorch' extension from the Extensions Manager"):
        dependencies.ensure_torch(types.SimpleNamespace(), interactive=True)


def test_requirements_are_compared_as_pip_compares_them(dependencies):
    """Through ``packaging``: pre-releases sort before their release, ranges, extras and markers are understood."""
    versions = {"scipy": "1.10.0rc1", "nibabel": "5.2.1", "h5py": "4.0", "tqdm": "4.66.1", "psutil": "5.9.0"}

    def version_of(name):
        if name not in versions:
            raise importlib.metadata.PackageNotFoundError(name)
        return versions[name]

    requirements = [
        "scipy>=1.10",  # 1.10.0rc1 comes before 1.10
        "nibabel>=5.0",
        "h5py>=3.8,<4",  # 4.0 is outside the range
        "tqdm[notebook]>=4.60",
        'matplotlib>=3.7; python_version < "3"',  # not for this Python: never missing
        "psutil>=5.9",
        "numpy>=1.24",  # not installed
    ]
    assert dependencies.missing_requirements(requirements, version_of) == ["scipy>=1.10", "h5py>=3.8,<4", "numpy>=1.24"]
