"""Prints the coarse correlation ``--metric auto`` decides with, for pairs of ../shared/data.

    python Scripts/modality_check.py [--data ../shared/data]

Same-modality pairs (brain T1, lung vessel masks, prostate MR-MR and US-US of different patients) and
different-modality pairs (prostate MR-US, T2-DWI, abdominal CT-MR); the threshold is
:data:`RegSegLib.registration.modality.SAME_MODALITY_NCC`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from RegSegLib.io.checks import read_image
from RegSegLib.registration.modality import SAME_MODALITY_NCC, centred_correlation


def pairs(data: Path) -> list[tuple[str, bool, Path, Path]]:
    """(name, same modality, fixed, moving) for the pairs checked."""
    prostate = data / "prostate-mr-us"
    found = [("brain T1-T1", True, data / "brain-mr/subject_a_t1.nii.gz", data / "brain-mr/subject_b_t1.nii.gz")]
    for case in range(27):
        found.append((f"prostate US-MR {case}", False, prostate / f"us/case{case:06d}.nii.gz", prostate / f"mr/case{case:06d}.nii.gz"))
    for case in range(0, 27, 3):
        other = (case + 5) % 27
        found.append((f"prostate MR-MR {case}-{other}", True, prostate / f"mr/case{case:06d}.nii.gz", prostate / f"mr/case{other:06d}.nii.gz"))
        found.append((f"prostate US-US {case}-{other}", True, prostate / f"us/case{case:06d}.nii.gz", prostate / f"us/case{other:06d}.nii.gz"))
    t2dwi = data / "prostate-t2-dwi"
    found.append(("prostate T2-DWI", False, t2dwi / "test_0000_t2_tse_tra_4.nii.gz", t2dwi / "test_0000_ep2d_diff_tra_7.nii.gz"))
    for fixed in sorted((data / "lung-vessels/test").glob("*_1.nii.gz"))[:6]:
        found.append((f"lung {fixed.name[:8]}", True, fixed, fixed.with_name(fixed.name.replace("_1.nii", "_2.nii"))))
    abdomen = data / "abdomen-ct"
    found.append(("abdomen CT-CT", True, abdomen / "example_ct.nii.gz", abdomen / "example_ct_sm.nii.gz"))
    found.append(("abdomen CT-MR", False, abdomen / "example_ct_sm.nii.gz", abdomen / "example_mr_sm.nii.gz"))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared/data")
    args = parser.parse_args()
    print(f"| pair | modalities | correlation | auto decides |\n|---|---|---|---|")
    for name, same, fixed, moving in pairs(args.data):
        value = centred_correlation(read_image(str(fixed)), read_image(str(moving)))
        decided = "same" if value >= SAME_MODALITY_NCC else "different"
        print(f"| {name} | {'same' if same else 'different'} | {value:.3f} | {decided} |", flush=True)


if __name__ == "__main__":
    main()
