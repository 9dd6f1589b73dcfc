"""The Slicer extension's files: every module file imports (with named stand-ins for Slicer's Qt-side modules),
every ``ui.<name>`` the code uses is in the .ui XML, every file CMake lists exists, the module icons are right,
RegSegLib is found as installed, and the background runner handles progress, logs, failures and cancellation on
POSIX and Windows (small Python children). The catalog entry: test_slicer_extension; the batch script:
test_slicer_batch."""

from __future__ import annotations

import importlib
import os
import re
import sys
import textwrap
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from slicer_panel_standins import install_standin_application
from slicer_standins import MODULE_FOLDER, REPOSITORY_ROOT, import_file, require_mrml, slicer_module_standins

slicer = require_mrml()

MODULE_FILES = sorted(MODULE_FOLDER.glob("*.py"))
LIBRARY_FILES = sorted((MODULE_FOLDER / "RegSegSlicerLib").glob("*.py"))


@pytest.mark.parametrize("path", MODULE_FILES + LIBRARY_FILES, ids=lambda p: p.name)
def test_every_module_file_imports_without_torch(path):
    """Slicer imports the module files at start-up, before any dependency is installed: no torch there.

    Checked in a fresh interpreter, since this test process has torch loaded already.
    """
    import subprocess

    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parents[1] / "support")!r})
        from slicer_standins import import_file, slicer_module_standins
        with slicer_module_standins():
            module = import_file(__import__("pathlib").Path({str(path)!r}))
        assert module.__doc__, "no docstring"
        print(sorted(name for name in sys.modules if name == "torch" or name.startswith("torch.")))
        """
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"


def test_module_follows_the_scripted_module_template(tmp_path, monkeypatch):
    import slicer

    app = install_standin_application(monkeypatch, tmp_path, slicer.vtkMRMLScene())
    with slicer_module_standins():
        module = import_file(MODULE_FOLDER / "RegSegRegistration.py")
        template = importlib.import_module("slicer.ScriptedLoadableModule")

    for suffix in ("", "Widget", "Logic", "Test"):
        assert issubclass(getattr(module, f"RegSegRegistration{suffix}"), getattr(template, f"ScriptedLoadableModule{suffix}"))

    class Parent:
        pass

    parent = Parent()
    module.RegSegRegistration(parent)
    assert parent.categories == ["Registration"] and "fixed points to moving points" in parent.helpText
    assert app.connections["startupCompleted()"] == [module.observeSceneImports]
    assert set(module.RegSegRegistrationParameterNode.parameter_names) >= {"fixed_volume", "moving_volume", "output_transform"}


def ui_names(path: Path) -> dict[str, str]:
    return {widget.get("name"): widget.get("class") for widget in ET.parse(path).iter("widget")}


def test_every_ui_name_the_code_uses_is_in_the_ui_file():
    names = ui_names(MODULE_FOLDER / "Resources" / "UI" / "RegSegRegistration.ui")
    code = (MODULE_FOLDER / "RegSegRegistration.py").read_text()
    used = set(re.findall(r"\bui\.(\w+)", code))
    assert used, "the widget uses no ui names?"
    assert used <= set(names), sorted(used - set(names))


def test_every_parameter_is_bound_to_a_widget():
    tree = ET.parse(MODULE_FOLDER / "Resources" / "UI" / "RegSegRegistration.ui")
    bound = {
        prop.find("string").text
        for prop in tree.iter("property")
        if prop.get("name") == "SlicerParameterName"
    }
    with slicer_module_standins():
        module = import_file(MODULE_FOLDER / "RegSegRegistration.py")
    assert bound == set(module.RegSegRegistrationParameterNode.parameter_names)
    # the wrapper gives a bound spin box the range of its annotation: it must be the .ui's own
    import typing

    annotations = typing.get_type_hints(module.RegSegRegistrationParameterNode, include_extras=True)
    for widget in tree.iter("widget"):
        if widget.get("class") != "QDoubleSpinBox":
            continue
        name = next(p.find("string").text for p in widget.iter("property") if p.get("name") == "SlicerParameterName")
        limits = {p.get("name"): float(p.find("double").text) for p in widget.iter("property") if p.get("name") in ("minimum", "maximum")}
        (within,) = [a for a in annotations[name].__metadata__ if type(a).__name__ == "WithinRange"]
        assert (within.minimum, within.maximum) == (limits["minimum"], limits["maximum"]), name


def cmake_listed_files(cmake: Path) -> list[Path]:
    text = cmake.read_text()
    text = text.replace("${MODULE_NAME}", re.search(r"set\(MODULE_NAME (\w+)\)", text).group(1))
    files = []
    for block in re.findall(r"set\((?:\w+_)?MODULE_PYTHON_(?:SCRIPTS|RESOURCES)(.*?)\)", text, re.S):
        files += [cmake.parent / token for token in block.split()]
    return files


def test_every_file_cmake_lists_exists_and_every_helper_is_listed():
    listed = cmake_listed_files(MODULE_FOLDER / "CMakeLists.txt")
    assert listed
    missing = [str(p) for p in listed if not p.is_file()]
    assert not missing
    helpers = {p.relative_to(MODULE_FOLDER) for p in LIBRARY_FILES} | {p.relative_to(MODULE_FOLDER) for p in MODULE_FILES}
    resources = {p.relative_to(MODULE_FOLDER) for p in (MODULE_FOLDER / "Resources").rglob("*") if p.is_file()}
    assert helpers | resources == {p.relative_to(MODULE_FOLDER) for p in listed}
    top = (REPOSITORY_ROOT / "CMakeLists.txt").read_text()
    for field in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert f"set(EXTENSION_{field} " in top
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in top and "project(RegSeg)" in top
    assert "add_subdirectory(RegSeg)" in top and "${CMAKE_CURRENT_SOURCE_DIR}/RegSegLib/*\n" in top
    assert (REPOSITORY_ROOT / "RegSegLib" / "__init__.py").is_file()


def test_every_module_has_its_icon():
    """Slicer shows ``Resources/Icons/<module name>.png`` beside each module (the extension's: test_slicer_extension)."""
    from PIL import Image

    for path in MODULE_FILES:
        with Image.open(MODULE_FOLDER / "Resources" / "Icons" / f"{path.stem}.png") as icon:
            assert icon.size == (128, 128)


def test_slicer_requirements_are_regseglib_dependencies_less_torch_and_what_slicer_bundles():
    from packaging.requirements import Requirement

    with slicer_module_standins():
        from RegSegSlicerLib import dependencies

    requirements = dependencies.read_requirements()
    assert requirements and all(">=" in line for line in requirements)
    import tomllib

    project = tomllib.loads((REPOSITORY_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    bundled = ("torch", "numpy", "SimpleITK")  # torch through the PyTorch extension
    assert sorted(requirements) == sorted(r for r in project if Requirement(r).name not in bundled)


def test_regseglib_is_found_beside_the_modules_or_in_the_checkout():
    with slicer_module_standins():
        from RegSegSlicerLib import paths

    assert paths.regseglib_root() == REPOSITORY_ROOT
    env = paths.child_environment({"PYTHONPATH": "/elsewhere"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(REPOSITORY_ROOT), "/elsewhere"]
    assert paths.python_executable() == sys.executable


def test_state_machine_refuses_impossible_transitions():
    with slicer_module_standins():
        from RegSegSlicerLib.jobs import FINAL_STATES, TRANSITIONS, JobState
        from RegSegSlicerLib.registration import RegistrationJob, RegistrationRequest

    assert TRANSITIONS[JobState.IMPORTING] == {JobState.IDLE, JobState.FAILED}
    assert all(not TRANSITIONS[state] for state in FINAL_STATES)
    assert JobState.IMPORTING not in TRANSITIONS[JobState.STARTING]
    states = []
    job = RegistrationJob(None, RegistrationRequest(None, None), python=sys.executable, env={}, on_state=states.append)
    with pytest.raises(RuntimeError, match="a job cannot go from idle to importing results"):
        job._set_state(JobState.IMPORTING)
    job._set_state(JobState.STARTING)
    job._set_state(JobState.CANCELLED)
    with pytest.raises(RuntimeError, match="a job cannot go from cancelled to running"):
        job._set_state(JobState.RUNNING)
    assert job.state is JobState.CANCELLED and states == [JobState.STARTING, JobState.CANCELLED]


# ------------------------------------------------------------------------------------------------ the generic job

STANDIN_CLI = """
import pathlib, sys, time

mode, source, output = sys.argv[1:]
if mode == "upper":
    print("PROGRESS 0.5000 reading", flush=True)
    print("a log line", flush=True)
    pathlib.Path(output).mkdir(parents=True)
    (pathlib.Path(output) / "upper.txt").write_text(pathlib.Path(source).read_text().upper())
    print("PROGRESS 1.0000 done", flush=True)
elif mode == "fail":
    print(f"regseg: error: {source}: is constant", file=sys.stderr)
    sys.exit(2)
elif mode == "nothing":
    pathlib.Path(output).mkdir(parents=True)
else:
    print("PROGRESS 0.1000 waiting", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def text_job(tmp_path):
    """A :class:`BackgroundJob` subclass whose child is a stand-in ``RegSegLib.cli`` (first on ``PYTHONPATH``).

    Its request is ``(mode, text)``: the job writes ``text`` to a file named as the node ``'notes'``, and the
    stand-in upper-cases it (``upper``), fails naming the file (``fail``), writes nothing (``nothing``) or waits.
    """
    package = tmp_path / "standin" / "RegSegLib"
    (package / "cli").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "cli" / "__init__.py").write_text("")
    (package / "cli" / "__main__.py").write_text(STANDIN_CLI)
    with slicer_module_standins():
        from RegSegSlicerLib import jobs

    class TextJob(jobs.BackgroundJob):
        what = "upper-casing"

        def validate(self) -> None:
            if not self.request[1]:
                raise ValueError("Give some text.")

        def export_inputs(self) -> dict[str, str]:
            def write(path: str) -> str:
                Path(path).write_text(self.request[1])
                return path

            return {"text": self.export_file("notes.txt", "text node 'notes'", write)}

        def child_arguments(self, files: dict[str, str], output_dir: str) -> list[str]:
            return [self.request[0], files["text"], output_dir]

        def import_results(self, folder: Path) -> str:
            return (folder / "upper.txt").read_text()

    def make(mode: str, text: str = "hello", **options):
        env = {**os.environ, "PYTHONPATH": str(tmp_path / "standin")}
        return TextJob(None, (mode, text), python=sys.executable, env=env, work_root=str(tmp_path), **options)

    make.jobs = jobs
    return make


def test_a_job_runs_the_cli_child_reports_progress_and_returns_the_imported_result(text_job, tmp_path):
    JobState = text_job.jobs.JobState
    states, progress, log = [], [], []
    job = text_job("upper", on_state=states.append, on_progress=lambda f, m: progress.append((f, m)), on_log=log.append)
    assert not job.finished
    assert job.wait(0.02) == "HELLO" and job.outputs == "HELLO"
    assert states == [JobState.STARTING, JobState.RUNNING, JobState.IMPORTING, JobState.IDLE] and job.finished
    assert progress == [(0.5, "reading"), (1.0, "done")]
    assert log[0] == f"running: {sys.executable} -m RegSegLib.cli upper {job.work_dir / 'notes.txt'} {job.work_dir / 'result'}"
    assert "a log line" in log and log[-1].startswith("done in ")
    assert not job.work_dir.exists()


def test_a_job_keeps_the_result_folder_it_is_given(text_job, tmp_path):
    job = text_job("upper", "kept", result_dir=str(tmp_path / "kept"))
    assert job.wait(0.02) == "KEPT"
    assert job.result_folder == tmp_path / "kept" and (tmp_path / "kept" / "upper.txt").read_text() == "KEPT"
    assert not job.work_dir.exists()


def test_a_failing_job_names_its_input_node_not_the_temporary_file(text_job):
    jobs = text_job.jobs
    log = []
    job = text_job("fail", on_log=log.append)
    with pytest.raises(jobs.JobError) as raised:
        job.wait(0.02)
    assert str(raised.value) == "regseg: error: text node 'notes': is constant" == job.error
    assert job.state is jobs.JobState.FAILED and job.finished and job.poll()
    assert log[-1] == "failed: regseg: error: text node 'notes': is constant"
    assert not job.work_dir.exists()


def test_a_result_that_cannot_be_loaded_fails_the_job(text_job):
    jobs = text_job.jobs
    job = text_job("nothing")
    with pytest.raises(jobs.JobError, match=r"^the results could not be loaded: .*upper\.txt"):
        job.wait(0.02)
    assert job.state is jobs.JobState.FAILED and not job.work_dir.exists()


def test_an_impossible_request_starts_nothing(text_job):
    jobs = text_job.jobs
    job = text_job("upper", "")
    with pytest.raises(ValueError, match=r"^Give some text\.$"):
        job.start()
    assert (job.state, job.process, job.work_dir, job.finished) == (jobs.JobState.IDLE, None, None, False)


def test_a_cancelled_job_ends_its_child_and_removes_its_files(text_job):
    jobs = text_job.jobs
    progress = []
    job = text_job("wait", on_progress=lambda f, m: progress.append(f))
    job.start()
    deadline = time.monotonic() + 30
    while not progress and time.monotonic() < deadline:
        assert not job.poll()
        time.sleep(0.02)
    assert progress == [0.1] and job.state is jobs.JobState.RUNNING
    job.cancel()
    assert job.process.process.poll() is not None
    assert job.state is jobs.JobState.CANCELLED and job.finished and not job.work_dir.exists()
    with pytest.raises(jobs.JobCancelled, match=r"^the upper-casing was cancelled$"):
        job.wait(0.02)


def test_registration_errors_are_job_errors():
    with slicer_module_standins():
        from RegSegSlicerLib import jobs, registration

    assert issubclass(registration.RegistrationJob, jobs.BackgroundJob)
    assert registration.RegistrationJob.error_class is registration.RegistrationError
    assert issubclass(registration.RegistrationError, jobs.JobError) and issubclass(jobs.JobError, RuntimeError)
    assert registration.RegistrationJob.cancelled_class is registration.RegistrationCancelled
    assert issubclass(registration.RegistrationCancelled, jobs.JobCancelled)


# ------------------------------------------------------------------------------------------------ the runner


def process_module():
    """``RegSegSlicerLib.process`` (imported with the module folder on the path, whatever ran before)."""
    with slicer_module_standins():
        from RegSegSlicerLib import process

    return process


def child(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(body))
    return [sys.executable, str(script)]


def test_runner_turns_progress_lines_into_callbacks_and_the_rest_into_the_log(tmp_path):
    ChildProcess = process_module().ChildProcess

    progress, log = [], []
    args = child(
        tmp_path,
        """
        import sys
        print("PROGRESS 0.2500 level 1/3", flush=True)
        print("hello", flush=True)
        print("a warning", file=sys.stderr, flush=True)
        print("PROGRESS 1.0000 done", flush=True)
        """,
    )
    runner = ChildProcess(args, on_progress=lambda f, m: progress.append((f, m)), on_log=log.append, log_path=tmp_path / "log.txt")
    runner.start()
    assert runner.wait(0.02) == 0
    assert progress == [(0.25, "level 1/3"), (1.0, "done")]
    assert sorted(log) == ["a warning", "hello"]
    assert "PROGRESS 0.2500 level 1/3" in (tmp_path / "log.txt").read_text()


def test_runner_reports_the_last_error_line(tmp_path):
    process = process_module()
    ChildProcess, ProcessFailed = process.ChildProcess, process.ProcessFailed

    args = child(
        tmp_path,
        """
        import sys
        print("regseg: error: /data/moving.nii.gz: file not found", file=sys.stderr)
        print("some cleanup note", file=sys.stderr)
        sys.exit(2)
        """,
    )
    runner = ChildProcess(args)
    runner.start()
    with pytest.raises(ProcessFailed, match=r"^regseg: error: /data/moving.nii.gz: file not found$") as raised:
        runner.wait(0.02)
    assert raised.value.returncode == 2


def running(pid: int) -> bool:
    """Whether a process exists and is not a zombie waiting to be reaped (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    return fields[0] not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc to see the process tree")
def test_cancel_kills_the_whole_process_tree(tmp_path):
    process = process_module()
    ChildProcess, ProcessCancelled = process.ChildProcess, process.ProcessCancelled

    pid_file = tmp_path / "grandchild.pid"
    args = child(
        tmp_path,
        f"""
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a child that ignores the polite request
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pid_file)!r}, "w").write(str(grandchild.pid))
        print("PROGRESS 0.1000 working", flush=True)
        time.sleep(60)
        """,
    )
    started = threading.Event()
    runner = ChildProcess(args, on_progress=lambda f, m: started.set())
    runner.start()
    while not started.is_set():
        runner.poll()
        started.wait(0.02)
    canceller = threading.Thread(target=runner.cancel)
    canceller.start()
    canceller.join(timeout=2.0)
    assert not canceller.is_alive()
    assert runner.process.poll() is not None
    grandchild = int(pid_file.read_text())
    # SIGKILL to the group is delivered asynchronously: the grandchild must be gone within the same 2 s.
    deadline = time.monotonic() + 2.0
    while running(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not running(grandchild)
    with pytest.raises(ProcessCancelled):
        runner.check()


class WindowsOs:
    """``os`` as ``process.py`` sees it on Windows: ``name == "nt"``, everything else this system's."""

    name = "nt"

    def __getattr__(self, attribute):
        return getattr(os, attribute)


class Taskkill:
    """``subprocess`` with ``run`` standing in for Windows' ``taskkill``: it records each command; with ``/F`` it
    kills the process group (as ``/F /T`` kills the tree), without ``/F`` it fails as it does for a child that has no
    window. ``works=False``: it fails every time (access denied)."""

    def __init__(self, works: bool = True) -> None:
        self.works = works
        self.commands: list[list[str]] = []

    def run(self, command, **options):
        import signal
        import subprocess

        self.commands.append(list(command))
        if self.works and "/F" in command:
            os.killpg(int(command[command.index("/PID") + 1]), signal.SIGKILL)
            return subprocess.CompletedProcess(command, 0, b"", b"")
        return subprocess.CompletedProcess(command, 1, b"", b"ERROR: The process could not be terminated.")

    def __getattr__(self, attribute):
        import subprocess

        return getattr(subprocess, attribute)


def sleeping_child():
    runner = process_module().ChildProcess([sys.executable, "-c", "import time; time.sleep(60)"])
    runner.start()
    return runner


@pytest.mark.skipif(os.name == "nt", reason="stands in for Windows on POSIX")
def test_windows_cancel_kills_the_tree_with_forced_taskkill_at_once(monkeypatch):
    """``taskkill /T`` without ``/F`` cannot end a console child without a window: it used to wait the grace time
    for nothing, then force."""
    process = process_module()
    runner = sleeping_child()
    taskkill = Taskkill()
    with monkeypatch.context() as patch:
        patch.setattr(process, "os", WindowsOs())
        patch.setattr(process, "subprocess", taskkill)
        started = time.monotonic()
        runner.cancel(grace_s=5.0)
        elapsed = time.monotonic() - started
    assert taskkill.commands == [["taskkill", "/F", "/T", "/PID", str(runner.process.pid)]]
    assert elapsed < 2.5 and runner.process.poll() is not None
    with pytest.raises(process.ProcessCancelled):
        runner.check()


@pytest.mark.skipif(os.name == "nt", reason="stands in for Windows on POSIX")
def test_windows_cancel_ends_the_child_even_when_taskkill_fails(monkeypatch):
    process = process_module()
    runner = sleeping_child()
    with monkeypatch.context() as patch:
        patch.setattr(process, "os", WindowsOs())
        patch.setattr(process, "subprocess", Taskkill(works=False))
        canceller = threading.Thread(target=runner.cancel, kwargs={"grace_s": 0.5})
        canceller.start()
        canceller.join(timeout=5.0)
        hung = canceller.is_alive()
        if hung:
            runner.process.kill()  # let the waiting thread end before failing
            canceller.join()
    assert not hung, "cancel kept waiting for a child that taskkill could not end"
    assert runner.cancelled and runner.process.returncode is not None


def test_the_installed_layout_finds_regseglib_beside_the_modules(installed_modules):
    import subprocess

    modules = installed_modules
    completed = subprocess.run(
        [sys.executable, "-c", "from RegSegSlicerLib import paths; print(paths.regseglib_root()); print(paths.MODULE_FOLDER)"],
        cwd=str(modules), capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(modules)},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == [str(modules), str(modules)]


IMPORT_PROBE = """
import sys
if {hide_installed}:  # as if RegSegLib were not installed in this Python (the venv has an editable install)
    sys.meta_path[:] = [f for f in sys.meta_path if "Editable" not in getattr(f, "__name__", type(f).__name__)]
import RegSegSlicerLib.registration
import RegSegLib
print(RegSegLib.__file__)
print(RegSegSlicerLib.registration.settings.__file__)
print(sorted(name for name in sys.modules if name == "torch" or name.startswith("torch.")))
"""


@pytest.mark.parametrize("situation", ["installed extension", "source checkout", "installed package"])
def test_the_slicer_glue_imports_regseglib_settings_in_the_three_situations(tmp_path, installed_modules, situation):
    """DESIGN.md section 1: RegSegLib beside the installed modules, in the checkout above RegSeg/, or pip-installed;
    importing the glue (which validates requests with RegSegLib.registration.settings) never imports torch."""
    import shutil
    import subprocess

    if situation == "installed extension":
        modules = installed_modules
        expected = modules / "RegSegLib"
    elif situation == "source checkout":
        modules, expected = MODULE_FOLDER, REPOSITORY_ROOT / "RegSegLib"
    else:  # the module files alone, no RegSegLib beside or above them: the installed distribution is used
        modules = tmp_path / "alone" / "RegSeg"
        for path in cmake_listed_files(MODULE_FOLDER / "CMakeLists.txt"):
            (modules / path.relative_to(MODULE_FOLDER)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, modules / path.relative_to(MODULE_FOLDER))
        expected = REPOSITORY_ROOT / "RegSegLib"
    code = IMPORT_PROBE.format(hide_installed=situation != "installed package")
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=str(tmp_path), capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(modules)},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == [
        str(expected / "__init__.py"),
        str(expected / "registration" / "settings.py"),
        "[]",
    ]


# ------------------------------------------------------------------------------------------------ advanced settings

DEFAULT_ARGUMENTS = ["--method", "affine", "--transform", "affine", "--device", "auto", "--progress", "lines"]


def small_volume(name: str):
    import numpy as np

    node = slicer.vtkMRMLScalarVolumeNode()
    node.SetName(name)
    slicer.util.updateVolumeFromArray(node, np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6))
    return node


def test_grid_difference_is_regseglib_corner_distance_with_vtk_dimensions_reversed():
    """VTK dimensions are (I, J, K), RegSegLib's shapes (K, J, I): a k spacing change moves the far corner by (K - 1) steps."""
    from RegSegLib import geometry

    with slicer_module_standins():
        from RegSegSlicerLib import nodes

    fixed = small_volume("fixed")
    assert nodes.dimensions(fixed) == (6, 5, 4)
    stretched = small_volume("stretched")
    stretched.SetSpacing(1.0, 1.0, 1.1)
    assert nodes.grid_difference_mm(fixed, stretched) == pytest.approx(3 * 0.1)  # (I - 1) * 0.1 = 0.5 if swapped
    other = small_volume("other")
    slicer.util.updateVolumeFromArray(other, slicer.util.arrayFromVolume(fixed).reshape(4, 6, 5).copy())
    assert nodes.grid_difference_mm(fixed, other) == float("inf")
    close = small_volume("close")
    close.SetOrigin(0.5 * geometry.GRID_TOLERANCE_MM, 0.0, 0.0)
    assert nodes.as_label_map(close, fixed, None, "fixed mask") is close
    shifted = small_volume("shifted")
    shifted.SetOrigin(0.0, 0.0, 2.0 * geometry.GRID_TOLERANCE_MM)
    with pytest.raises(ValueError, match=r"^The fixed mask 'shifted' is not on the grid of 'fixed' \(corners differ by 0\.002 mm\)"):
        nodes.as_label_map(shifted, fixed, None, "fixed mask")


def test_advanced_settings_become_exactly_the_cli_options_and_defaults_none():
    from RegSegLib import cli

    with slicer_module_standins():
        from RegSegSlicerLib.registration import RegistrationRequest, command_arguments

    files = {"fixed": "/w/fixed.nrrd", "moving": "/w/moving.nrrd"}
    head = ["register", "/w/fixed.nrrd", "/w/moving.nrrd", "-o", "/w/result"]
    assert command_arguments(RegistrationRequest(None, None), files, "/w/result") == head + DEFAULT_ARGUMENTS
    request = RegistrationRequest(
        None,
        None,
        method="deformable",
        levels=[2, 1.5],
        iterations=(20, 10),
        deformable_iterations=[0, 5],
        regularisation=2.5,
        preset="large-motion",
        spacing_mm=3,
    )
    args = command_arguments(request, files, "/w/result")
    assert args[len(head) + 6 : -2] == [
        "--levels", "2.0,1.5",
        "--iterations", "20,10",
        "--deformable-iterations", "0,5",
        "--regularisation", "2.5",
        "--preset", "large-motion",
        "--spacing", "3.0",
    ]
    parsed = cli.build_parser().parse_args(args)
    assert (parsed.levels, parsed.iterations, parsed.deformable_iterations) == ([2.0, 1.5], [20, 10], [0, 5])
    assert (parsed.regularisation, parsed.preset, parsed.spacing) == (2.5, "large-motion", 3.0)
    # an affine run leaves the panel's deformable values out (regseg register refuses them for affine)
    import dataclasses

    affine_args = command_arguments(dataclasses.replace(request, method="affine"), files, "/w/result")
    assert affine_args[len(head) + 6 : -2] == ["--levels", "2.0,1.5", "--iterations", "20,10"]
    parser = cli.build_parser()
    parsed = parser.parse_args(affine_args)
    parsed.module.check(parser, parsed)
    assert parsed.settings.method == "affine" and parsed.settings.affine.levels == (2.0, 1.5)


def test_segmentation_guidance_becomes_the_segment_with_option():
    from RegSegLib import cli

    with slicer_module_standins():
        from RegSegSlicerLib.registration import RegistrationRequest, command_arguments

    files = {"fixed": "/w/fixed.nrrd", "moving": "/w/moving.nrrd"}
    request = RegistrationRequest(None, None, method="deformable", segment_with=("gland-us", " /m/gland-mr.pt"))
    args = command_arguments(request, files, "/w/result")
    assert args[args.index("--segment-with") + 1] == "gland-us,/m/gland-mr.pt"
    parsed = cli.build_parser().parse_args(args)
    assert parsed.segment_with == ("gland-us", "/m/gland-mr.pt")
    with pytest.raises(ValueError, match="a segmentation model for each volume"):
        RegistrationRequest(small_volume("fixed"), small_volume("moving"), segment_with=("gland-us",)).validate()


def test_panel_and_batch_choices_are_the_settings_vocabulary_and_the_ui_lists_them():
    """The panel's choices come from RegSegLib.registration.settings, and each bound combo box lists exactly them."""
    import typing

    from RegSegLib.registration import settings

    with slicer_module_standins():
        module = import_file(MODULE_FOLDER / "RegSegRegistration.py")
        script_parser = import_file(REPOSITORY_ROOT / "Scripts" / "slicer_register.py").build_parser()
    annotations = typing.get_type_hints(module.RegSegRegistrationParameterNode, include_extras=True)
    choices = {
        name: next(a.choices for a in hint.__metadata__ if type(a).__name__ == "Choice")
        for name, hint in annotations.items()
        if hasattr(hint, "__metadata__") and any(type(a).__name__ == "Choice" for a in hint.__metadata__)
    }
    assert choices == {
        "method": ["affine", "deformable"],
        "transform_family": ["rigid", "similarity", "anisotropic", "affine"],
        "metric": ["auto", "lncc", "ncc", "mse", "mi", "mind"],
        "device": ["auto", "cpu", "cuda"],
        "preset": ["default", "large-motion"],
    }
    assert (choices["method"], choices["transform_family"]) == (list(settings.ITERATIVE_METHODS), list(settings.FAMILIES))
    assert (choices["metric"], choices["device"], choices["preset"]) == (list(settings.METRIC_CHOICES), list(settings.DEVICES), list(settings.PRESETS))
    tree = ET.parse(MODULE_FOLDER / "Resources" / "UI" / "RegSegRegistration.ui")
    listed = {}
    for widget in tree.iter("widget"):
        if widget.get("class") == "QComboBox":
            items = [item.find("property/string").text for item in widget.findall("item")]
            bound = [p.find("string").text for p in widget.findall("property") if p.get("name") == "SlicerParameterName"]
            if not bound:  # filled by the panel (the model lists), not a setting
                assert widget.get("name") in ("modelComboBox", "fixedSegmenterComboBox", "movingSegmenterComboBox") and items == []
                continue
            listed[bound[0]] = items
    assert listed == choices
    # the batch script offers the same choices
    parser_choices = {action.dest: list(action.choices) for action in script_parser._actions if action.choices}
    assert parser_choices == {
        "method": choices["method"],
        "transform": choices["transform_family"],
        "metric": choices["metric"],
        "device": choices["device"],
        "preset": choices["preset"],
    }


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"levels": [4, 0, 1]}, r"^Affine pyramid levels must be a positive number, got 0\.$"),
        ({"levels": [], "iterations": [60, 20, 10]}, r"^Affine pyramid levels are empty\.$"),
        ({"levels": [2, 1]}, r"^Affine iterations need one count per pyramid level: 2 levels \(2\.0, 1\.0\), 3 counts \(60, 20, 10\) \(give them with the levels\)\.$"),
        ({"iterations": [60, 20]}, r"one count per pyramid level: 3 levels \(4\.0, 2\.0, 1\.0\), 2 counts \(60, 20\)\.$"),
        ({"levels": [2, 1], "iterations": [20, 10, 5]}, r"one count per pyramid level: 2 levels \(2\.0, 1\.0\), 3 counts \(20, 10, 5\)\.$"),
        ({"iterations": [60, -1, 10]}, r"^Affine iterations must be a non-negative whole number, got -1\.$"),
        ({"iterations": [60, 2.5, 10]}, r"^Affine iterations must be a non-negative whole number, got 2\.5\.$"),
        ({"deformable_iterations": [12, -1]}, r"^Deformable iterations must be a non-negative whole number, got -1\.$"),
        ({"deformable_iterations": [12, 8, 4]}, r"^Deformable iterations take one or two counts .* got 3\.$"),
        ({"regularisation": 0.0}, r"^Regularisation weight must be a positive number, got 0\.0\.$"),
        ({"spacing_mm": -2.0}, r"^Deformable spacing must be a positive number, got -2\.0\.$"),
        ({"spacing_mm": float("nan")}, r"^Deformable spacing must be a positive number, got nan\.$"),
        ({"preset": "huge-motion"}, r"^Unknown deformable preset 'huge-motion'; choose one of default, large-motion\.$"),
        ({"method": "elastic"}, r"^Unknown method 'elastic'; choose one of affine, deformable\.$"),
        ({"transform_family": "shear"}, r"^Unknown transform family 'shear'; choose one of rigid, similarity, anisotropic, affine\.$"),
        ({"metric": "ssd"}, r"^Unknown similarity metric 'ssd'; choose one of auto, lncc, ncc, mse, mi, mind\.$"),
        ({"device": "gpu"}, r"^Unknown device 'gpu'; choose one of auto, cpu, cuda\.$"),
    ],
)
def test_bad_advanced_settings_are_readable_value_errors(settings, message):
    with slicer_module_standins():
        from RegSegSlicerLib.registration import RegistrationRequest

    fixed, moving = small_volume("fixed"), small_volume("moving")
    RegistrationRequest(fixed, moving, levels=[2, 1], iterations=[20, 10], deformable_iterations=[0, 0]).validate()
    RegistrationRequest(fixed, moving, iterations=[60, 20, 10], deformable_iterations=[12], preset="large-motion").validate()
    with pytest.raises(ValueError, match=message):
        RegistrationRequest(fixed, moving, **settings).validate()


def panel_parameters(module, **values):
    """The parameter node's fields with their defaults (``None`` for nodes), overridden by ``values``."""
    import types

    return types.SimpleNamespace(**{**module.RegSegRegistrationParameterNode.parameter_defaults, **values})


def test_panel_fields_become_the_request_and_empty_or_zero_is_the_default():
    with slicer_module_standins():
        module = import_file(MODULE_FOLDER / "RegSegRegistration.py")

    logic = module.RegSegRegistrationLogic()
    default = logic.request_from_parameters(panel_parameters(module))
    assert (default.levels, default.iterations, default.deformable_iterations) == (None, None, None)
    assert (default.regularisation, default.preset, default.spacing_mm) == (None, "default", None)
    request = logic.request_from_parameters(
        panel_parameters(
            module,
            levels=" 2, 1 ",
            iterations="20,10",
            deformable_iterations="0",
            regularisation=0.5,
            preset="large-motion",
            spacing_mm=2.0,
        )
    )
    assert (request.levels, request.iterations, request.deformable_iterations) == ([2.0, 1.0], [20, 10], [0])
    assert (request.regularisation, request.preset, request.spacing_mm) == (0.5, "large-motion", 2.0)
    with pytest.raises(ValueError, match=r"The pyramid levels must be comma-separated numbers, got '4,x'\."):
        logic.request_from_parameters(panel_parameters(module, levels="4,x"))
    with pytest.raises(ValueError, match=r"The affine iterations must be comma-separated whole numbers, got '60,,10'\."):
        logic.request_from_parameters(panel_parameters(module, iterations="60,,10"))
    with pytest.raises(ValueError, match=r"The deformable iterations must be comma-separated whole numbers"):
        logic.request_from_parameters(panel_parameters(module, deformable_iterations="12.5"))
