"""Builds the training data of the shipped affine model in the registration layout, from ../shared/data.

    python Scripts/prepare_affine_data.py OUT [--data ../shared/data]

Writes one cohort folder per source (``OUT/COHORT/images/PATIENT_WHAT.nii.gz`` and, where labels exist,
``OUT/COHORT/masks/seg_PATIENT_WHAT.nii.gz``) and ``OUT/cohorts.tsv`` listing them, for
``data.cohorts_tsv=OUT/cohorts.tsv``. Only volumes kept for training are used; the evaluation volumes of the
affine benchmark are left out, so the model never sees them:

    ===================  ==========================================  ======================================
    cohort               training                                    held out (benchmark)
    ===================  ==========================================  ======================================
    brain                brain-mr subject_a (T1, aseg)               subject_b
    prostate-mr          prostate-mr-us mr case000000-021 (gland)    case000022-026 (the issue's test set)
    prostate-us          prostate-mr-us us case000000-021 (gland)    case000022-026
    abdomen              abdomen-ct example_ct (CT, organs)          example_mr_sm (MR)
    prostatex            ProstateX-0001 T2 axial (DICOM)             ProstateX-0000 (prostate-t2-dwi)
    ===================  ==========================================  ======================================
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TRAINING_PROSTATE_CASES = range(0, 22)
"""prostate-mr-us cases used for training; 22-26 are the test set of the issues."""


def gland(path: Path):
    """Channel 0 of a prostate-mr-us label file (float, 4D; ../shared/data/README.md: threshold at 0.5) as a
    0/1 label map :class:`~RegSegLib.volume.Volume`."""
    import torch

    from RegSegLib.io.checks import read_image
    from RegSegLib.volume import Volume

    volume = read_image(str(path), channel=0)
    return Volume((volume.data > 0.5).to(torch.int16), volume.ijk_to_ras, kind="labels")


def main() -> None:
    from RegSegLib.io.checks import read_image, read_labels
    from RegSegLib.io.itk_images import read_dicom_series
    from RegSegLib.io.volumes import write_volume
    from RegSegLib.volume import Volume

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    data, out = args.data, args.out

    def put(cohort: str, name: str, image: Volume, labels: Volume | None) -> None:
        folder = out / cohort
        (folder / "images").mkdir(parents=True, exist_ok=True)
        write_volume(image, folder / "images" / f"{name}.nii.gz")
        if labels is not None:
            (folder / "masks").mkdir(exist_ok=True)
            write_volume(labels, folder / "masks" / f"seg_{name}.nii.gz")

    brain = data / "brain-mr"
    put("brain", "subjecta_t1", read_image(str(brain / "subject_a_t1.nii.gz")), read_labels(str(brain / "subject_a_aseg.nii.gz")))
    for case in TRAINING_PROSTATE_CASES:
        name = f"case{case:06d}"
        for modality in ("mr", "us"):
            source = data / "prostate-mr-us"
            put(f"prostate-{modality}", f"{name}_{modality}", read_image(str(source / modality / f"{name}.nii.gz")),
                gland(source / f"{modality}_labels" / f"{name}.nii.gz"))
    abdomen = data / "abdomen-ct"
    put("abdomen", "ct_example", read_image(str(abdomen / "example_ct.nii.gz")), read_labels(str(abdomen / "example_seg.nii.gz")))
    series = next((data / "prostatex" / "ProstateX-0001").glob("*/6.000000-t2tsetra-*"))
    put("prostatex", "prostatex0001_t2", read_dicom_series(series), None)
    rows = ["cohort\tpath"] + [f"{folder.name}\t{folder.name}" for folder in sorted(out.iterdir()) if folder.is_dir()]
    (out / "cohorts.tsv").write_text("\n".join(rows) + "\n")
    print(f"prepare_affine_data: {len(rows) - 1} cohorts in {out}")


if __name__ == "__main__":
    main()
