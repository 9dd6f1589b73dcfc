"""How close a start the engine needs on suite 7's large-rotation cases, and what a classical search over the 24
cube rotations gives (the evidence behind issue 11's "learned initialisation" and its accuracy needs).

    python Scripts/rotation_capture_check.py start      # the engine from truth o R(30|45|60 degrees)
    python Scripts/rotation_capture_check.py cube       # best of the 24 cube rotations by the guard's MIND score

The cases are exactly suite 7's (``bench/registration/suite_rotations.py``: the same volumes, seeds and
transforms); each line gives the mean error (mm) over the fixed image's foreground, as the suite measures it.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

START_ANGLES_DEG = (30.0, 45.0, 60.0)


def cube_rotations():
    """The 24 proper rotations that map the coordinate axes onto themselves (``[3, 3]`` arrays)."""
    import numpy as np

    rotations = []
    for permutation in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            matrix = np.zeros((3, 3))
            for row, column in enumerate(permutation):
                matrix[row, column] = signs[row]
            if np.linalg.det(matrix) > 0:
                rotations.append(matrix)
    return rotations


def main() -> None:
    import numpy as np
    import torch

    from bench.registration.suite_known import transform_error
    from bench.registration.suite_rotations import TRIALS, large_rotation, volumes
    from RegSegLib import geometry
    from RegSegLib.registration.guard import Guard
    from RegSegLib.registration.pipeline import register
    from RegSegLib.testing.known_transforms import foreground_points
    from RegSegLib.transforms import AffineTransform, resample

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("start", "cube"))
    args = parser.parse_args()

    class Context:
        quick = False

    for index, (name, moving) in enumerate(volumes(Context()).items()):
        for trial in range(TRIALS):
            rng = np.random.default_rng(7000 + 100 * index + trial)
            centre = geometry.grid_centre_ras(moving.ijk_to_ras, moving.shape)
            truth = AffineTransform(large_rotation(rng, centre))
            fixed = resample(moving, moving, truth, padding_value=float(moving.data.min()))
            points = foreground_points(fixed, max_points=20_000)
            target = truth.transform_points(torch.from_numpy(points)).double().numpy()

            def error(transform: AffineTransform) -> float:
                return transform_error(transform.transform_points(torch.from_numpy(points)).double().numpy(), target)["mean_mm"]

            if args.mode == "start":
                results = []
                for degrees in START_ANGLES_DEG:
                    rotation = geometry.axis_angle_rotation(np.random.default_rng(1).normal(size=3), math.radians(degrees))
                    offset = np.eye(4)
                    offset[:3, :3] = rotation
                    offset[:3, 3] = fixed.grid.centre_ras - rotation @ fixed.grid.centre_ras
                    start = AffineTransform(truth.matrix @ offset)
                    result = register(fixed, moving, method="affine", family="rigid", initial=start)
                    results.append(f"{degrees:g} deg: {error(start):.1f} -> {error(result.transform):.2f} mm")
                print(f"{name} trial {trial}: " + "; ".join(results), flush=True)
                continue
            guard = Guard(fixed, moving)
            candidates = []
            for rotation in cube_rotations():
                matrix = np.eye(4)
                matrix[:3, :3] = rotation
                matrix[:3, 3] = moving.grid.centre_ras - rotation @ fixed.grid.centre_ras
                candidates.append((guard.score(AffineTransform(matrix)).mind, AffineTransform(matrix)))
            best = min(candidates, key=lambda item: item[0])[1]
            result = register(fixed, moving, method="affine", family="rigid", initial=best)
            nearest = min(error(candidate) for _, candidate in candidates)
            print(
                f"{name} trial {trial}: best-scored cube rotation {error(best):.1f} mm -> engine {error(result.transform):.2f} mm "
                f"(nearest cube rotation {nearest:.1f} mm)", flush=True,
            )


if __name__ == "__main__":
    main()
