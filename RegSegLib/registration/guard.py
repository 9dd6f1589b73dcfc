"""The guard against silent failure: a stage that made the alignment worse is rolled back.

After each stage of :func:`~RegSegLib.registration.pipeline.register` the alignment is scored with a
measure that does not depend on the modality and that no stage optimises as such: the MIND-SSC
descriptor distance (Heinrich et al. 2013) of the fixed image and the moving image read through the
transform, on a coarse copy of the fixed grid, over the fixed image's foreground (inside the fixed
mask when one is given). Where the moving image is read outside its field of view it counts as
empty, so a transform that pushes the anatomy out of view scores badly. When both masks are given,
the overlap (Dice) of the fixed mask and the moving mask read through the transform is checked too.

A stage whose result scores worse than what it started from (no tolerance) is rolled back: the run keeps
the previous result and says so in words (:attr:`Verdict.warning`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from RegSegLib.geometry import Grid
from RegSegLib.losses import descriptor_distance
from RegSegLib.ops.intensity import robust_scale
from RegSegLib.ops.mind import mind_ssc
from RegSegLib.ops.pyramid import downsample
from RegSegLib.transforms import Transform, resample
from RegSegLib.volume import Volume

MAX_GUARD_VOXELS = 150_000
"""Voxels of the coarse grid the guard scores on (the fixed grid when it is smaller). Half the 300 000 used
before: every decision stayed the same on the brain pair, four lung training pairs and the 22 MR -> US
training pairs, in half the time (0.3 s of a 2 mm brain run)."""

FOREGROUND = 0.05
"""Fixed voxels brighter than this (after robust scaling to [0, 1]) are scored when no fixed mask is given."""


def scoring_grid(fixed: Grid) -> Grid:
    """The grid the guard scores on: the fixed grid coarsened to :data:`MAX_GUARD_VOXELS` voxels."""
    return fixed.within_voxels(MAX_GUARD_VOXELS)


@dataclass(frozen=True)
class Score:
    """How well a transform aligns the pair.

    Attributes:
        mind: MIND-SSC distance over the scored region (lower is better).
        mask_dice: Dice of the fixed mask and the warped moving mask (``None`` without both masks).
    """

    mind: float
    mask_dice: float | None = None

    def worse_than(self, previous: "Score") -> bool:
        """Whether this score is worse than ``previous``: a larger MIND distance, or a lower mask Dice.

        No tolerance: a run never reports success on a result worse than its start on this measure (a 1 %
        tolerance kept MR -> US affine stages that had moved the gland away while the speckle-dominated
        distance rose by 0.1-0.7 %)."""
        if self.mind > previous.mind:
            return True
        if self.mask_dice is not None and previous.mask_dice is not None:
            return self.mask_dice < previous.mask_dice
        return False

    def as_dict(self) -> dict[str, float | None]:
        return {"mind_distance": self.mind, "mask_dice": self.mask_dice}


@dataclass(frozen=True)
class Verdict:
    """What the guard decided about one stage.

    Attributes:
        stage: ``"affine"``, ``"deformable"`` or ``"network"`` (a network's prediction kept alone).
        before: the score of what the stage started from.
        after: the score of the stage's result.
        rolled_back: whether the stage's result was discarded.
    """

    stage: str
    before: Score
    after: Score
    rolled_back: bool

    @property
    def warning(self) -> str | None:
        """The sentence for the summary and ``metrics.json``, ``None`` when the stage was kept."""
        if not self.rolled_back:
            return None
        kept = {"affine": "the starting alignment", "network": "no transform"}.get(self.stage, "the affine result")
        return (
            f"the {self.stage} stage made the alignment worse (MIND distance {self.before.mind:.4g} -> "
            f"{self.after.mind:.4g}{self._dice_text()}), so it was undone and {kept} was kept: check the "
            f"result before using it"
        )

    def _dice_text(self) -> str:
        if self.before.mask_dice is None or self.after.mask_dice is None:
            return ""
        return f", mask overlap {self.before.mask_dice:.3f} -> {self.after.mask_dice:.3f}"

    def as_dict(self) -> dict[str, object]:
        return {"before": self.before.as_dict(), "after": self.after.as_dict(), "rolled_back": self.rolled_back}


class Guard:
    """Scores transforms of one pair on a fixed coarse grid (the fixed image's MIND descriptors computed once).

    Args:
        fixed: the fixed image (first channel used).
        moving: the moving image (first channel used).
        fixed_mask: optional mask on the fixed grid: the scored region, and the overlap check.
        moving_mask: optional mask on the moving grid (the overlap check, with ``fixed_mask``).
        device: where the scoring runs.
    """

    def __init__(
        self,
        fixed: Volume,
        moving: Volume,
        fixed_mask: Volume | None = None,
        moving_mask: Volume | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        grid = scoring_grid(fixed.grid)
        self.grid: Grid = grid
        self.moving = self._first_channel(moving)
        fixed_image = resample(self._first_channel(fixed), grid).data[None]
        self.fixed_features = mind_ssc(fixed_image)
        if fixed_mask is not None:
            region = resample(self._binary(fixed_mask), grid).data[None] > 0.5
        else:
            region = fixed_image > FOREGROUND
        self.region = region.float()
        self.fixed_mask = None if fixed_mask is None or moving_mask is None else region.float()
        self.moving_mask = None if moving_mask is None else self._binary(moving_mask)

    def _first_channel(self, volume: Volume) -> Volume:
        """The first channel robustly scaled to [0, 1] and smoothed for the coarse grid."""
        first = Volume(robust_scale(volume.data[:1].to(self.device)), volume.ijk_to_ras)
        return downsample(first, self.grid.spacing)

    def _binary(self, mask: Volume) -> Volume:
        return Volume((mask.data[:1] != 0).float().to(self.device), mask.ijk_to_ras)

    @torch.no_grad()
    def score(self, transform: Transform | None) -> Score:
        """The score of a fixed-to-moving transform (``None`` is identity)."""
        warped = resample(self.moving, self.grid, transform).data[None]
        distance = float(descriptor_distance(self.fixed_features, mind_ssc(warped), self.region))
        dice = None
        if self.fixed_mask is not None and self.moving_mask is not None:
            moving = resample(self.moving_mask, self.grid, transform).data[None] > 0.5
            fixed = self.fixed_mask > 0.5
            total = float(fixed.sum() + moving.sum())
            dice = 2.0 * float((fixed & moving).sum()) / total if total > 0 else 1.0
        return Score(distance, dice)

    def judge(self, stage: str, before: Score, transform: Transform) -> tuple[Verdict, Score]:
        """Scores a stage's result against what it started from.

        Returns:
            ``(verdict, score to carry on from)``: the stage's score when kept, ``before`` when rolled back.
        """
        after = self.score(transform)
        worse = after.worse_than(before)
        return Verdict(stage, before, after, worse), (before if worse else after)
