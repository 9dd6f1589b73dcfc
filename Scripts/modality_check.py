"""Prints the coarse correlations ``--metric auto`` decides with, for pairs of ../shared/data.

    python Scripts/modality_check.py [--data ../shared/data]

Same-modality pairs (brain T1, lung vessel masks, prostate MR-MR and US-US of different patients) and
different-modality pairs (prostate MR-US, T2-DWI, abdominal CT-MR), and a prostate T2 against copies of
itself moved as in benchmark suite 4; the thresholds are
:data:`RegSegLib.registration.modality.SAME_MODALITY_NCC` (centred) and
:data:`~RegSegLib.registration.modality.ALIGNED_SAME_MODALITY_NCC` (after the quick rigid alignment).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from RegSegLib.io.checks import read_image
from RegSegLib.registration.modality import choose_metric
from RegSegLib.testing.known_transforms import synthetic_affine_pair
from RegSegLib.volume import Volume

MOVED_COPIES = 4
"""Moved copies of the prostate T2 (random affines of up to 15 degrees, 15 mm and 10 % scale)."""


def pairs(data: Path) -> list[tuple[str, bool, Path, Path]]:
    """(name, same modality, fixed, moving) for the pairs of files checked."""
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


def moved_copies(data: Path) -> list[tuple[str, bool, Volume, Volume]]:
    """(name, True, fixed, moving): the prostate T2 (moving) against copies of itself moved by random affines."""
    t2 = read_image(str(data / "prostate-t2-dwi/test_0000_t2_tse_tra_4.nii.gz"))
    found = []
    for trial in range(MOVED_COPIES):
        moved, _ = synthetic_affine_pair(t2, "affine", np.random.default_rng(trial), max_rot_deg=15.0, max_shift_mm=15.0, max_scale=0.1)
        found.append((f"prostate T2, moved copy {trial}", True, moved, t2))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared/data")
    args = parser.parse_args()
    print("| pair | modalities | centred correlation | after quick rigid alignment | auto decides |\n|---|---|---|---|---|")
    read = [(name, same, read_image(str(fixed)), read_image(str(moving))) for name, same, fixed, moving in pairs(args.data)]
    for name, same, fixed, moving in read + moved_copies(args.data):
        choice = choose_metric(fixed, moving)
        aligned = "–" if choice.aligned_correlation is None else f"{choice.aligned_correlation:.3f}"
        decided = "same" if choice.same_modality else "different"
        print(f"| {name} | {'same' if same else 'different'} | {choice.correlation:.3f} | {aligned} | {decided} |", flush=True)


if __name__ == "__main__":
    main()
