"""Builds the training and test data of the shipped prostate gland models in the nnU-Net layout.

    python Scripts/prepare_segmentation_data.py OUT [--data ../shared/data]

From ../shared/data/prostate-mr-us (27 MR and transrectal ultrasound volumes of the same patients; the gland
is channel 0 of ``mr_labels``/``us_labels``) it writes, per modality (``OUT/prostate-mr``,
``OUT/prostate-us``):

- ``images_tr/caseNNNNNN_0000.nii.gz`` and ``labelsTr/caseNNNNNN.nii.gz``: cases 000000-000021, the only ones
  trained on and selected on;
- ``images_ts/caseNNNNNN_0000.nii.gz`` and ``labelsTs/caseNNNNNN.nii.gz``: cases 000022-000026, the test set
  of the issues, reported separately and never used by training.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from Scripts.prepare_affine_data import TRAINING_PROSTATE_CASES, gland  # noqa: E402

TEST_PROSTATE_CASES = range(22, 27)
"""prostate-mr-us cases of the test set."""


def main() -> None:
    from RegSegLib.io.checks import read_image
    from RegSegLib.io.volumes import write_volume

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    source = args.data / "prostate-mr-us"
    for modality in ("mr", "us"):
        dataset = args.out / f"prostate-{modality}"
        for cases, images, labels in ((TRAINING_PROSTATE_CASES, "images_tr", "labelsTr"), (TEST_PROSTATE_CASES, "images_ts", "labelsTs")):
            (dataset / images).mkdir(parents=True, exist_ok=True)
            (dataset / labels).mkdir(parents=True, exist_ok=True)
            for case in cases:
                name = f"case{case:06d}"
                write_volume(read_image(str(source / modality / f"{name}.nii.gz")), dataset / images / f"{name}_0000.nii.gz")
                write_volume(gland(source / f"{modality}_labels" / f"{name}.nii.gz"), dataset / labels / f"{name}.nii.gz")
    print(f"prepare_segmentation_data: prostate-mr and prostate-us in {args.out}")


if __name__ == "__main__":
    main()
