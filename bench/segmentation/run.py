"""Segmentation benchmark: the shipped prostate gland models on the held-out cases, and the MR -> US
registration they guide.

Every job is one fresh process started as a user would start it (``regseg segment ...``,
``regseg register ...``), timed and measured as a whole (:func:`bench.common.run_process`).

Usage (from the repository root)::

    python bench/segmentation/run.py --out bench/results

Tables (cases case000022-case000026 of prostate-mr-us, which no training or model selection saw):

1. Segmentation: gland Dice and HD95 of ``regseg segment IMAGE --model MODEL`` (defaults: mirroring test-time
   augmentation) against the reference gland (channel 0 of ``mr_labels``/``us_labels``), per modality, with
   the whole-process time; ``--no-mirroring`` as a second row.
2. Segmentation-guided registration: gland Dice of the MR (moving) warped onto the US (fixed) by
   ``regseg register US MR --method deformable`` (the engine alone, defaults) and with
   ``--segment-with US_MODEL,MR_MODEL``; the warped reference MR gland against the reference US gland.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import SHARED_DATA, WORK, machine_info, markdown_table, run_process, thread_environment, write_results  # noqa: E402
from bench.registration.harness import regseg_executable  # noqa: E402

DATA = SHARED_DATA / "prostate-mr-us"
CASES = [f"case{n:06d}" for n in range(22, 27)]
MODELS = {"mr": "regseg-prostate-gland-mr", "us": "regseg-prostate-gland-us"}
"""The shipped models (``regseg models list --task segmentation``)."""
TIMEOUT_S = 600.0


def gland(path: Path):
    """The reference gland (channel 0, thresholded at 0.5) as a boolean ``[K, J, I]`` tensor and its volume."""
    from RegSegLib.io.checks import read_image

    volume = read_image(str(path), channel=0)
    return volume.data[0] > 0.5, volume


def scores(truth, found, spacing) -> dict[str, float]:
    """Dice and HD95 (mm) of two boolean masks on one grid."""
    from RegSegLib.evaluation.overlap import dice_per_label, hd95_per_label

    a, b = truth.long(), found.long()
    return {"dice": dice_per_label(a, b, [1])[1], "hd95_mm": hd95_per_label(a, b, spacing, [1])[1]}


def job(argv: list[str], folder: Path, threads: int) -> dict:
    result = run_process(argv, folder, folder.with_suffix(".log"), thread_environment(threads), TIMEOUT_S)
    return {"exit_code": result.exit_code, "seconds": result.wall_s, "peak_rss_mb": result.peak_rss_mb}


def mean(rows: list[dict], key: str) -> float:
    values = [row[key] for row in rows if row.get(key) is not None]
    return sum(values) / len(values) if values else float("nan")


def segmentation_rows(work: Path, threads: int) -> list[dict]:
    from RegSegLib.io.checks import read_labels

    rows = []
    for modality, model in MODELS.items():
        for run, extra in (("defaults", []), ("tuned: --no-mirroring", ["--no-mirroring"])):
            for case in CASES:
                folder = work / "segment" / modality / run.split(" ")[-1].lstrip("-") / case
                image = DATA / modality / f"{case}.nii.gz"
                measured = job([*regseg_executable(), "segment", str(image), "--model", model, "-o", str(folder), "--device", "cpu", *extra], folder, threads)
                row = {"modality": modality, "run": run, "case": case, **measured}
                if measured["exit_code"] == 0:
                    truth, reference = gland(DATA / f"{modality}_labels" / f"{case}.nii.gz")
                    found = read_labels(str(folder / "labels.nii.gz")).data[0] > 0
                    row.update(scores(truth, found, reference.spacing))
                rows.append(row)
                print(f"segment {modality} {run} {case}: {row.get('dice')}", flush=True)
    return rows


def registration_rows(work: Path, threads: int) -> list[dict]:
    from RegSegLib.io import read_transform
    from RegSegLib.transforms import resample

    rows = []
    runs = (("engine alone (defaults)", []), ("--segment-with", ["--segment-with", f"{MODELS['us']},{MODELS['mr']}"]))
    for case in CASES:
        truth, fixed = gland(DATA / "us_labels" / f"{case}.nii.gz")
        _, moving = gland(DATA / "mr_labels" / f"{case}.nii.gz")
        moving_gland = moving.with_data(moving.data[:1].float(), kind="image")
        initial = resample(moving_gland, fixed, None, mode="linear").data[0] > 0.5
        rows.append({"run": "initial", "case": case, **scores(truth, initial, fixed.spacing)})
        for run, extra in runs:
            folder = work / "register" / ("guided" if extra else "engine") / case
            argv = [*regseg_executable(), "register", str(DATA / "us" / f"{case}.nii.gz"), str(DATA / "mr" / f"{case}.nii.gz"), "-o", str(folder),
                    "--method", "deformable", "--device", "cpu", *extra]
            measured = job(argv, folder, threads)
            row = {"run": run, "case": case, **measured}
            if measured["exit_code"] == 0:
                warped = resample(moving_gland, fixed, read_transform(folder / "transform.h5"), mode="linear").data[0] > 0.5
                row.update(scores(truth, warped, fixed.spacing))
            rows.append(row)
            print(f"register {run} {case}: {row.get('dice')}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--work", type=Path, default=WORK / "segmentation")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    machine = machine_info(args.threads)
    segmentation = segmentation_rows(args.work, args.threads)
    registration = registration_rows(args.work, args.threads)
    table_1 = []
    for modality in MODELS:
        for run in ("defaults", "tuned: --no-mirroring"):
            chosen = [r for r in segmentation if r["modality"] == modality and r["run"] == run]
            failed = sum(1 for r in chosen if r["exit_code"] != 0)
            table_1.append([modality.upper(), MODELS[modality], run, len(chosen), failed, mean(chosen, "dice"), mean(chosen, "hd95_mm"),
                            mean(chosen, "seconds"), mean(chosen, "peak_rss_mb")])
    table_2 = []
    for run in ("initial", "engine alone (defaults)", "--segment-with"):
        chosen = [r for r in registration if r["run"] == run]
        failed = sum(1 for r in chosen if r.get("exit_code", 0) != 0)
        table_2.append([run, len(chosen), failed, mean(chosen, "dice"), mean(chosen, "hd95_mm"), mean(chosen, "seconds") if run != "initial" else None])
    per_case = [[r["modality"].upper(), r["run"], r["case"], r.get("dice"), r.get("hd95_mm"), r["seconds"]] for r in segmentation]
    body = "\n".join([
        "## Prostate gland segmentation, held-out cases case000022-case000026",
        "",
        "`regseg segment IMAGE --model MODEL -o OUT --device cpu`, one fresh process per case (start-up, model "
        "loading, reading, inference and writing included). Reference: channel 0 of `mr_labels`/`us_labels` "
        "thresholded at 0.5. No training or model selection saw these cases.",
        "",
        markdown_table(["modality", "model", "run", "cases", "failed", "mean Dice", "mean HD95 mm", "mean time s", "mean peak RSS MB"],
                       table_1, digits=[0, 0, 0, 0, 0, 3, 2, 1, 0]),
        "",
        "Per case:",
        "",
        markdown_table(["modality", "run", "case", "Dice", "HD95 mm", "time s"], per_case, digits=[0, 0, 0, 3, 2, 1]),
        "",
        "## Segmentation-guided MR -> US registration, the same cases",
        "",
        "`regseg register US MR -o OUT --method deformable --device cpu` (the engine alone, defaults) and with "
        f"`--segment-with {MODELS['us']},{MODELS['mr']}` (both images segmented by the shipped models; their "
        "smoothed glands drive the registration). Dice and HD95 of the reference MR gland warped by the written "
        "`transform.h5` (linear, thresholded at 0.5) against the reference US gland.",
        "",
        markdown_table(["run", "pairs", "failed", "mean gland Dice", "mean HD95 mm", "mean time s"], table_2, digits=[0, 0, 0, 3, 2, 1]),
        "",
    ])
    paths = write_results(args.out, "segmentation_prostate", "Segmentation benchmark: prostate gland", machine, body,
                          {"segmentation": segmentation, "registration": registration})
    print(f"wrote {', '.join(str(p) for p in paths)}")


if __name__ == "__main__":
    main()
