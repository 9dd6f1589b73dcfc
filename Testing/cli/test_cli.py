"""The ``regseg`` command end to end on a small synthetic pair with a known shift.

The moving image is the fixed phantom moved by ``SHIFT`` mm (RAS), so the fixed-to-moving transform is
the translation ``x -> x + SHIFT``. Registrations run once per module; bad-input cases fail before any
registration work.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from RegSegLib import cli
from RegSegLib.io.transforms import read_transform, write_transform
from RegSegLib.transforms import AffineTransform
from cli_phantom import SHIFT, SIZE, SPACING, affine_matrix, phantom, save

REPO = Path(__file__).resolve().parents[2]
FAST_RIGID = ["--transform", "rigid", "--metric", "mse", "--device", "cpu"]


def _digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "RegSegLib.cli", *args], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("pair")
    fixed, fixed_labels = phantom(np.zeros(3))
    moving, moving_labels = phantom(SHIFT)
    files = {
        "fixed": save(fixed, folder / "fixed.nii.gz"),
        "moving": save(moving, folder / "moving.nii.gz"),
        "fixed_labels": save(fixed_labels, folder / "fixed_labels.nii.gz"),
        "moving_labels": save(moving_labels, folder / "moving_labels.nii.gz"),
    }
    files["digests"] = {name: _digest(path) for name, path in files.items()}
    return files


@pytest.fixture(scope="module")
def bent_pair(tmp_path_factory) -> dict[str, str]:
    """The phantom pair with the inner ellipsoid moved 3 mm further: the deformable stage has work to do."""
    folder = tmp_path_factory.mktemp("bent")
    fixed, _ = phantom(np.zeros(3))
    moving, _ = phantom(SHIFT, np.array([3.0, 0.0, -2.0]))
    return {"fixed": save(fixed, folder / "fixed.nii.gz"), "moving": save(moving, folder / "moving.nii.gz")}


@pytest.fixture(scope="module")
def affine_run(pair, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("affine") / "result"
    result = _run(
        "register", pair["fixed"], pair["moving"], "-o", str(out),
        "--fixed-labels", pair["fixed_labels"], "--moving-labels", pair["moving_labels"],
        "--progress", "lines", *FAST_RIGID,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out, result


@pytest.fixture(scope="module")
def deformable_run(pair, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("deformable") / "result"
    code = cli.main(
        ["register", pair["fixed"], pair["moving"], "-o", str(out), "--method", "deformable", "--progress", "none",
         "--fixed-labels", pair["fixed_labels"], "--moving-labels", pair["moving_labels"], "--displacement-image",
         *FAST_RIGID]
    )  # fmt: skip
    assert code == 0
    return out


def _sitk_resample(transform_file: Path, moving: str, fixed: str) -> np.ndarray:
    transform = sitk.ReadTransform(str(transform_file))
    image = sitk.Resample(
        sitk.ReadImage(moving, sitk.sitkFloat32), sitk.ReadImage(fixed), transform, sitk.sitkLinear, 0.0
    )
    return sitk.GetArrayFromImage(image)


def _assert_itk_reproduces(out: Path, pair: dict) -> None:
    """SimpleITK resampling through transform.h5 equals warped.nii.gz away from the border.

    Within a voxel of the moving image's edge ITK reads "outside" (0) where ``grid_sample`` still
    interpolates towards zero padding, so the comparison keeps voxels mapped well inside the moving image.
    """
    warped = _kji(out / "warped.nii.gz")
    by_itk = _sitk_resample(out / "transform.h5", pair["moving"], pair["fixed"])
    inner = (slice(4, -4),) * 3
    assert np.abs(by_itk[inner] - warped[inner]).max() < 1e-3 * warped.max()


def _kji(path: Path | str) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj).T


def test_affine_register_writes_every_file(affine_run, pair):
    out, result = affine_run
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["warped.nii.gz", "transform.h5", "affine.tfm", "warped_labels.nii.gz", "metrics.json", "qc.png"])
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "staging folder left behind"
    assert {name: _digest(pair[name]) for name in pair["digests"]} == pair["digests"]
    assert (out / "qc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_affine_recovers_the_known_shift(affine_run):
    out, _ = affine_run
    transform = read_transform(out / "affine.tfm")
    assert isinstance(transform, AffineTransform)
    np.testing.assert_allclose(transform.matrix[:3, 3], SHIFT, atol=1.0)
    np.testing.assert_allclose(transform.matrix[:3, :3], np.eye(3), atol=0.03)


def test_transform_h5_is_a_composite_that_reproduces_warped(affine_run, pair):
    out, _ = affine_run
    transform = sitk.ReadTransform(str(out / "transform.h5"))
    assert transform.GetName() == "CompositeTransform"
    assert transform.Downcast().GetNumberOfTransforms() == 1
    _assert_itk_reproduces(out, pair)


def test_metrics_json_reports_times_similarity_dice_versions(affine_run):
    out, _ = affine_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"seconds", "device", "similarity", "dice", "versions", "method"} <= set(metrics)
    assert {"read", "affine", "write", "total"} <= set(metrics["seconds"])
    assert metrics["device"] == "cpu"
    assert metrics["similarity"]["metric"] == "mse"
    assert metrics["similarity"]["after"] < 0.2 * metrics["similarity"]["before"]
    assert set(metrics["dice"]["per_label"]) == {"1", "2"}
    assert metrics["dice"]["mean"] > 0.8
    assert metrics["dice"]["mean"] > metrics["dice"]["mean_before"] + 0.3
    assert "jacobian" not in metrics
    assert metrics["versions"]["regseg"]


def test_progress_lines_are_monotone_and_end_at_one(affine_run):
    _, result = affine_run
    fractions = [float(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("PROGRESS ")]
    assert len(fractions) > 3
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0


def test_apply_reproduces_warped_image_and_labels(affine_run, pair, tmp_path):
    out, _ = affine_run
    image_out, labels_out = tmp_path / "image.nii.gz", tmp_path / "labels.nii.gz"
    base = ["apply", str(out / "transform.h5")]
    assert cli.main([*base, pair["moving"], "--reference", pair["fixed"], "-o", str(image_out)]) == 0
    assert cli.main([*base, pair["moving_labels"], "--reference", pair["fixed"], "-o", str(labels_out), "--labels"]) == 0
    np.testing.assert_allclose(_kji(image_out), _kji(out / "warped.nii.gz"), atol=1e-4)
    labels = nib.load(str(labels_out))
    assert np.issubdtype(labels.get_data_dtype(), np.integer)
    np.testing.assert_array_equal(_kji(labels_out), _kji(out / "warped_labels.nii.gz"))


def test_deformable_writes_field_and_itk_reproduces_the_composite(deformable_run, pair):
    out = deformable_run
    transform = sitk.ReadTransform(str(out / "transform.h5")).Downcast()
    assert transform.GetNumberOfTransforms() == 2
    _assert_itk_reproduces(out, pair)
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"prepare", "affine", "deformable", "guard"} <= set(metrics["seconds"])
    assert metrics["jacobian"]["folding_fraction"] < 0.01
    assert metrics["dice"]["mean"] > 0.8
    assert metrics["warnings"] == [] and set(metrics["guard"]) == {"affine", "deformable"}
    # the field is stored once, on the grid it was estimated on; --displacement-image writes the same field
    field = read_transform(out / "displacement.nii.gz")
    assert metrics["field_grid"]["shape_ijk"] == list(field.shape[::-1])
    whole = read_transform(out / "transform.h5")
    np.testing.assert_allclose(whole.transforms[-1].field.numpy(), field.field.numpy(), atol=1e-5)


def test_field_on_the_fixed_grid_when_asked(bent_pair, tmp_path):
    out = tmp_path / "result"
    code = cli.main(
        ["register", bent_pair["fixed"], bent_pair["moving"], "-o", str(out), "--method", "deformable", "--progress", "none",
         "--field-grid", "fixed", "--spacing", str(2 * SPACING), *FAST_RIGID]
    )  # fmt: skip
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["affine.tfm", "metrics.json", "qc.png", "transform.h5", "warped.nii.gz"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["warnings"] == []
    assert metrics["field_grid"] == {"shape_ijk": [SIZE] * 3, "spacing_mm": [SPACING] * 3}
    assert metrics["settings"]["deformable"]["spacing_mm"] == 2 * SPACING
    _assert_itk_reproduces(out, bent_pair)


def test_sigterm_cancels_cleanly(pair, tmp_path):
    out = tmp_path / "cancelled"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = subprocess.Popen(
        [sys.executable, "-m", "RegSegLib.cli", "register", pair["fixed"], pair["moving"], "-o", str(out),
         "--progress", "lines", "--method", "deformable", *FAST_RIGID],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    for line in process.stdout:
        if line.startswith("PROGRESS") and "affine level" in line:
            process.send_signal(signal.SIGTERM)
            break
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "cancelled" in stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# bad input: one line naming the file, exit code 2, no output, inputs unchanged
# ----------------------------------------------------------------------------------------------


def _make_case(case: str, pair: dict, folder: Path) -> tuple[list[str], str]:
    """Command line and the path the error must name."""
    fixed, moving = pair["fixed"], pair["moving"]
    out = str(folder / "out")
    register = ["register", fixed, moving, "-o", out, "--device", "cpu"]
    image, labels = phantom(np.zeros(3))
    if case == "missing file":
        missing = str(folder / "absent.nii.gz")
        return ["register", missing, moving, "-o", out], missing
    if case == "corrupt file":
        corrupt = folder / "corrupt.nii.gz"
        corrupt.write_bytes(b"\x1f\x8b\x08\x00 this is not a NIfTI file" * 20)
        return ["register", str(corrupt), moving, "-o", out], str(corrupt)
    if case == "unsupported format":
        text = folder / "image.txt"
        text.write_text("1 2 3")
        return ["register", fixed, str(text), "-o", out], str(text)
    if case == "2D image":
        flat = save(image[:, :, :1], folder / "flat.nii.gz")
        return ["register", flat, moving, "-o", out], flat
    if case == "4D image without channel":
        four = save(np.stack([image, image], axis=-1), folder / "four.nii.gz")
        return ["register", fixed, four, "-o", out], four
    if case == "channel out of range":
        four = save(np.stack([image, image], axis=-1), folder / "four.nii.gz")
        return ["register", four, moving, "-o", out, "--fixed-channel", "2"], four
    if case == "constant image":
        constant = save(np.full_like(image, 7.0), folder / "constant.nii.gz")
        return ["register", fixed, constant, "-o", out], constant
    if case == "NaN":
        bad = image.copy()
        bad[3, 4, 5] = np.nan
        return ["register", save(bad, folder / "nan.nii.gz"), moving, "-o", out], str(folder / "nan.nii.gz")
    if case == "inf":
        bad = image.copy()
        bad[3, 4, 5] = np.inf
        return ["register", fixed, save(bad, folder / "inf.nii.gz"), "-o", out], str(folder / "inf.nii.gz")
    if case == "mask on another grid":
        mask = save((image > 10).astype(np.uint8)[:-2], folder / "mask.nii.gz")
        return [*register, "--fixed-mask", mask], mask
    if case == "mask with other geometry":
        shifted = affine_matrix()
        shifted[0, 3] += 5.0
        mask = save((image > 10).astype(np.uint8), folder / "mask.nii.gz", shifted)
        return [*register, "--moving-mask", mask], mask
    if case == "labels on another grid":
        small = save(labels[:, :-1], folder / "labels.nii.gz")
        return [*register, "--fixed-labels", small, "--moving-labels", pair["moving_labels"]], small
    if case == "float labels":
        floats = save(labels.astype(np.float32) + 0.25, folder / "labels.nii.gz")
        return [*register, "--fixed-labels", pair["fixed_labels"], "--moving-labels", floats], floats
    if case == "image as init transform":
        return [*register, "--init", fixed], fixed
    if case == "unwritable output folder":
        blocker = folder / "a_file"
        blocker.write_text("not a folder")
        target = str(blocker / "out")
        return ["register", fixed, moving, "-o", target], target
    if case == "output would overwrite an input":
        inputs = folder / "inputs"
        inputs.mkdir()
        warped_named = inputs / "warped.nii.gz"
        warped_named.write_bytes(Path(moving).read_bytes())
        return ["register", fixed, str(warped_named), "-o", str(inputs)], str(inputs / "warped.nii.gz")
    if case == "apply with an image as transform":
        return ["apply", fixed, moving, "--reference", fixed, "-o", str(folder / "out.nii.gz")], fixed
    if case == "apply over its input":
        return ["apply", str(folder / "t.tfm"), moving, "--reference", fixed, "-o", moving], moving
    if case == "evaluate float labels":
        floats = save(labels.astype(np.float32) + 0.5, folder / "labels.nii.gz")
        return ["evaluate", "--fixed-labels", pair["fixed_labels"], "--warped-labels", floats], floats
    raise AssertionError(case)


BAD_CASES = [
    "missing file", "corrupt file", "unsupported format", "2D image", "4D image without channel",
    "channel out of range", "constant image", "NaN", "inf", "mask on another grid", "mask with other geometry",
    "labels on another grid", "float labels", "image as init transform", "unwritable output folder",
    "output would overwrite an input", "apply with an image as transform", "apply over its input",
    "evaluate float labels",
]  # fmt: skip


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_gives_one_line_and_exit_code_2(case, pair, tmp_path, capsys):
    write_transform(AffineTransform.identity(), tmp_path / "t.tfm")
    argv, named = _make_case(case, pair, tmp_path)
    before = {p: _digest(p) for p in tmp_path.rglob("*") if p.is_file()}
    capsys.readouterr()
    code = cli.main(argv)
    stderr = capsys.readouterr().err
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"regseg: error: {named}: "), lines[0]
    after = {p: _digest(p) for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before, "an input changed or an output was written"
    assert not (tmp_path / "out").exists()
    assert {name: _digest(pair[name]) for name in pair["digests"]} == pair["digests"]


def test_float_labels_message_says_non_integer(pair, tmp_path, capsys):
    argv, _ = _make_case("float labels", pair, tmp_path)
    assert cli.main(argv) == 2
    assert "contains non-integer values" in capsys.readouterr().err


def test_4d_message_names_the_channel_option(pair, tmp_path, capsys):
    argv, _ = _make_case("4D image without channel", pair, tmp_path)
    assert cli.main(argv) == 2
    assert "--moving-channel" in capsys.readouterr().err


def test_usage_errors_exit_2(pair, capsys):
    assert cli.main(["register", pair["fixed"], pair["moving"]]) == 2
    assert cli.main(["register", pair["fixed"], pair["moving"], "-o", "x", "--fixed-labels", pair["fixed_labels"]]) == 2
    assert cli.main(["register", pair["fixed"], pair["moving"], "-o", "x", "--labels", "1,2"]) == 2
    assert cli.main(["evaluate", "--fixed-labels", pair["fixed_labels"], "--warped-labels", "w", "--labels", "a"]) == 2
    assert cli.main(["evaluate"]) == 2
    assert cli.main(["frobnicate"]) == 2
    assert "usage" in capsys.readouterr().err


def test_unexpected_error_exits_1_without_traceback_or_output(pair, tmp_path, capsys, monkeypatch):
    import RegSegLib.registration.pipeline as pipeline

    def broken(*args, **kwargs):
        raise RuntimeError("engine exploded")

    monkeypatch.setattr(pipeline, "register", broken)
    code = cli.main(["register", pair["fixed"], pair["moving"], "-o", str(tmp_path / "out"), "--device", "cpu"])
    stderr = capsys.readouterr().err
    assert code == 1
    assert stderr.strip().splitlines() == [
        "regseg: internal error: RuntimeError: engine exploded (run with --verbose for the traceback)"
    ]
    assert list(tmp_path.iterdir()) == []
    assert cli.main(["register", pair["fixed"], pair["moving"], "-o", str(tmp_path / "out"), "--verbose"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_python_dash_m_regseglib_runs_the_cli():
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-m", "RegSegLib", "--help"], capture_output=True, text=True, env=env)
    assert result.returncode == 0
    assert "register" in result.stdout and "evaluate" in result.stdout


# ----------------------------------------------------------------------------------------------
# evaluate
# ----------------------------------------------------------------------------------------------


def test_evaluate_cubes_and_landmarks(tmp_path, capsys):
    matrix = np.diag([1.5, 1.0, 2.0, 1.0])
    fixed = np.zeros((30, 30, 30), np.int16)
    warped = np.zeros_like(fixed)
    fixed[5:15, 5:15, 5:15] = 3
    warped[7:17, 5:15, 5:15] = 3
    fixed_path = save(fixed, tmp_path / "fixed.nii.gz", matrix)
    warped_path = save(warped, tmp_path / "warped.nii.gz", matrix)
    rng = np.random.default_rng(1)
    points = rng.uniform(-50, 50, size=(20, 3))
    translation = np.array([3.0, 4.0, 0.0])
    csv = tmp_path / "landmarks.csv"
    rows = ["fixed_R,fixed_A,fixed_S,moving_R,moving_A,moving_S"]
    rows += [",".join(f"{v:.6f}" for v in (*p, *(p + translation))) for p in points]
    csv.write_text("\n".join(rows) + "\n")
    matrix_t = np.eye(4)
    matrix_t[:3, 3] = translation
    write_transform(AffineTransform(matrix_t), tmp_path / "t.tfm")
    out = tmp_path / "eval.json"
    code = cli.main(
        ["evaluate", "--fixed-labels", fixed_path, "--warped-labels", warped_path, "--transform",
         str(tmp_path / "t.tfm"), "--landmarks", str(csv), "--json", str(out)]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "0.8000" in printed
    results = json.loads(out.read_text())
    assert results["dice"] == {"3": pytest.approx(0.8)}
    assert results["hd95"]["3"] == pytest.approx(3.0)
    assert results["landmarks_before"]["mean"] == pytest.approx(5.0, abs=1e-5)
    assert results["landmarks"]["max"] == pytest.approx(0.0, abs=1e-4)
    assert results["landmarks"]["count"] == 20


def test_a_new_command_is_one_file(tmp_path, monkeypatch, capsys):
    """``regseg`` finds its commands by file: a module with COMMAND, add_arguments and run becomes a command."""
    import RegSegLib.cli

    (tmp_path / "greet.py").write_text(
        "COMMAND = 'greet'\nORDER = 99\nHELP = 'say hello'\nDESCRIPTION = 'Says hello.'\n"
        "def add_arguments(parser):\n    parser.add_argument('--name', default='world')\n"
        "def run(args, report):\n    report(1.0, 'done')\n    print('hello', args.name)\n    return 0\n"
    )
    from RegSegLib.cli.main import commands

    monkeypatch.setattr(RegSegLib.cli, "__path__", [*RegSegLib.cli.__path__, str(tmp_path)])
    # the imported command is removed again when the test ends
    monkeypatch.delitem(sys.modules, "RegSegLib.cli.greet", raising=False)
    monkeypatch.delattr(RegSegLib.cli, "greet", raising=False)
    assert cli.main(["greet", "--name", "Slicer", "--progress", "none"]) == 0
    assert capsys.readouterr().out == "hello Slicer\n"
    assert [module.COMMAND for module in commands()] == ["register", "segment", "apply", "evaluate", "models", "train", "greet"]


def test_cli_choices_and_defaults_come_from_the_settings():
    """The parser offers exactly the settings' vocabulary and its help shows the engines' defaults."""
    from RegSegLib.registration import settings

    register = next(action for action in cli.build_parser()._actions if action.dest == "command").choices["register"]
    options = {action.dest: action for action in register._actions}
    assert tuple(options["method"].choices) == settings.METHODS
    assert tuple(options["transform"].choices) == settings.FAMILIES
    assert tuple(options["metric"].choices) == settings.METRIC_CHOICES and options["metric"].default == "auto"
    assert tuple(options["preset"].choices) == tuple(settings.PRESETS)
    assert options["levels"].metavar == "4,2,1" and options["iterations"].metavar == "60,20,10"
    assert options["deformable_iterations"].metavar == "12,6"


def test_advanced_settings_reach_the_engines(pair, tmp_path):
    """A two-level affine pyramid still recovers the shift; deformable settings are recorded and used.

    With zero Adam iterations and the regularisation irrelevant, the deformable stage keeps only the
    discrete search, so its field differs from the default run's (which refines it).
    """
    out = tmp_path / "result"
    code = cli.main(
        ["register", pair["fixed"], pair["moving"], "-o", str(out), "--method", "deformable", "--progress", "none",
         "--levels", "2,1", "--iterations", "40,10", "--deformable-iterations", "0,0", "--regularisation", "2",
         "--preset", "large-motion", *FAST_RIGID]
    )  # fmt: skip
    assert code == 0
    settings = json.loads((out / "metrics.json").read_text())["settings"]
    assert (settings["method"], settings["preset"]) == ("deformable", "large-motion")
    assert (settings["affine"]["levels"], settings["affine"]["iterations"]) == ([2.0, 1.0], [40, 10])
    deformable = settings["deformable"]
    assert (deformable["adam_iterations"], deformable["fine_iterations"], deformable["regularisation"]) == (0, 0, 2.0)
    assert len(deformable["coarse_levels"]) == 2 and deformable["presmooth_vox"] == 0.7
    np.testing.assert_allclose(read_transform(out / "affine.tfm").matrix[:3, 3], SHIFT, atol=1.0)


@pytest.mark.parametrize(
    "options",
    [["--levels", "4,2,1", "--iterations", "5,5"], ["--deformable-iterations", "1,2,3"], ["--regularisation", "-1"],
     ["--levels", "2,x"], ["--preset", "huge"]],
)  # fmt: skip
def test_bad_advanced_settings_exit_2(pair, tmp_path, options, capsys):
    assert cli.main(["register", pair["fixed"], pair["moving"], "-o", str(tmp_path / "out"), *options]) == 2
    assert "usage: regseg register" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
