"""Settings of the registration methods: the one place for their names, defaults and validation.

Torch-free, so that the command line (``regseg register``), the Slicer request, the Slicer batch script
and, later, Hydra configs can build and check them without importing the engines. Every settings
object validates itself when it is created: a bad value raises :class:`SettingsError` (a ``ValueError``
and a :class:`~RegSegLib.errors.RegSegError`) before any work starts, with the same message everywhere.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

from RegSegLib import vocabulary
from RegSegLib.validation import (
    Overridable,
    SettingsError,
    check_choice,
    check_counts,
    check_positive,
    is_number,
)

ITERATIVE_METHODS: tuple[str, ...] = ("affine", "deformable")
"""The engine's methods: ``affine``, or ``deformable`` (an affine stage, then a dense displacement field)."""
NETWORK_METHOD = "network"
"""A network's prediction alone, no iterative stage (it needs a model: ``regseg register --model``)."""
METHODS: tuple[str, ...] = (*ITERATIVE_METHODS, NETWORK_METHOD)
FAMILIES: tuple[str, ...] = tuple(vocabulary.FAMILIES)
METRICS: tuple[str, ...] = vocabulary.IMAGE_METRICS
AUTO_METRIC = "auto"
METRIC_CHOICES: tuple[str, ...] = (AUTO_METRIC, *METRICS)
"""What a user may ask for: ``auto`` (chosen from the images when the registration starts) or a metric."""
DEVICES: tuple[str, ...] = vocabulary.DEVICES
INITIALISATIONS: tuple[str, ...] = ("identity", "centres", "moments")
DEFORMABLE_METHODS: tuple[str, ...] = ("convexadam", "grid")
DEFORMABLE_SIMILARITIES: tuple[str, ...] = ("mind", "lncc", "ncc", "mse")
DEFORMABLE_SIMILARITY_FOR: dict[str, str] = {"mi": "mind"}
"""The deformable stage's measure for a metric it does not have (mutual information -> MIND)."""
DEFAULT_AFFINE_METRIC = "ncc"
DEFAULT_DEFORMABLE_SIMILARITY = "lncc"
"""The stages' own measures, used when a stage's settings are made directly (the Python API)."""
PENALTIES: tuple[str, ...] = ("diffusion", "bending")


AFFINE_ITERATIONS: dict[str, tuple[int, ...]] = {"default": (60, 20, 10)}
"""Iterations per pyramid level (4, 2, 1) by metric."""
AFFINE_LEARNING_RATES: dict[str, float] = {"default": 0.5}
"""Adam step (mm per mm of working spacing) by metric."""
DEFORMABLE_ADAM_SMOOTHING: dict[str, int] = {"default": 1, "mind": 3}
"""3x3x3 averaging passes per Adam step by similarity: three for MIND, as published for ConvexAdam (one
pass lost 0.03 gland Dice on prostate MR -> US); one for local NCC, which with the weight below gave
higher Dice on prostate MR -> MR training pairs and on the brain pair (rougher fields: SD of log
Jacobian about 1.1 instead of 0.4)."""
DEFORMABLE_REGULARISATION: dict[str, float] = {"default": 0.75, "mind": 8.0}
"""Smoothness weight by similarity. Local NCC: with its one averaging pass per Adam step, 0.75 gave higher
gland Dice than 1.0 on prostate MR -> MR pairs of the training cases (4 of 6 pairs, mean +0.01) at equal
vessel overlap on a lung training pair; 0.5 gained a little more Dice but folded 0.5 % of the brain
benchmark pair. MIND: its distance is larger than the local NCC loss, and weight 1 lets it fold (3.7 %
folding on prostate MR -> US); 8 gives none."""


def _given_or_default(value: Any, table: dict[str, Any], key: str) -> Any:
    """A setting as given, or when ``None`` the entry of ``table`` for ``key`` (its ``"default"`` otherwise)."""
    if value is not None:
        return value
    return table.get(key, table["default"])


@dataclass(frozen=True)
class AffineSettings(Overridable):
    """The affine engine's settings (:func:`~RegSegLib.registration.affine.register_affine`).

    Attributes:
        family: ``rigid`` (6), ``similarity`` (7), ``anisotropic`` (9) or ``affine`` (12 parameters).
        metric: ``ncc`` (mono-modal, default), ``mse``, ``lncc`` (dense, slower), ``mi`` or ``mind``
            (multi-modal).
        init: ``identity``, ``centres`` (grid centres) or ``moments`` (intensity centres of mass);
            ``None`` chooses ``moments`` for the mono-modal metrics and ``centres`` for ``mi`` and
            ``mind``: intensity centres of mass only correspond when the intensities mean the same
            tissue (an ultrasound fan or a DWI background moves them away from the anatomy).
        levels: pyramid factors, coarse to fine; level ``f`` works at ``f * spacing`` mm.
        iterations: one count per level (0 skips a level): Adam iterations at the coarsest level used, at
            most this many loss evaluations of L-BFGS at the finer ones; ``None``: the metric's
            (:attr:`resolved_iterations`).
        spacing: base working spacing in mm; ``None``: the fixed image's finest spacing, coarsened so
            that the finest working grid has at most 2 million voxels.
        learning_rate: Adam step at the coarsest level, in mm per mm of working spacing; ``None``: the
            metric's (:attr:`resolved_learning_rate`).
        window: local NCC window in voxels.
        num_bins: mutual information histogram bins.
        max_samples: voxels compared per step for the voxel-wise measures (all voxels for ``lncc``).
    """

    family: str = "affine"
    metric: str = DEFAULT_AFFINE_METRIC
    init: str | None = None
    levels: tuple[float, ...] = (4.0, 2.0, 1.0)
    iterations: tuple[int, ...] | None = None
    spacing: float | None = None
    learning_rate: float | None = None
    window: int = 7
    num_bins: int = 32
    max_samples: int = 10_000
    WHAT = "affine"

    def __post_init__(self) -> None:
        check_choice(self.family, FAMILIES, "transform family")
        check_choice(self.metric, METRICS, "affine similarity metric")
        if self.init is not None:
            check_choice(self.init, INITIALISATIONS, "initialisation")
        object.__setattr__(self, "levels", check_counts(self.levels, "affine pyramid levels", integer=False))
        if self.iterations is not None:
            object.__setattr__(self, "iterations", check_counts(self.iterations, "affine iterations", integer=True, zero_allowed=True))
        if len(self.resolved_iterations) != len(self.levels):
            given = "" if self.iterations is not None else " (give them with the levels)"
            raise SettingsError(
                f"affine iterations need one count per pyramid level: {len(self.levels)} levels "
                f"{self.levels}, {len(self.resolved_iterations)} counts {self.resolved_iterations}{given}"
            )
        if self.spacing is not None:
            check_positive(self.spacing, "affine working spacing")
        if self.learning_rate is not None:
            check_positive(self.learning_rate, "affine learning rate")
        for value, what in ((self.window, "local NCC window"), (self.num_bins, "histogram bins"), (self.max_samples, "samples")):
            check_positive(value, what, integer=True)
        if self.window % 2 == 0:
            raise SettingsError(f"local NCC window must be odd, got {self.window}")

    @property
    def resolved_iterations(self) -> tuple[int, ...]:
        """The iterations used: :attr:`iterations`, or the metric's (:data:`AFFINE_ITERATIONS`)."""
        return _given_or_default(self.iterations, AFFINE_ITERATIONS, self.metric)

    @property
    def resolved_learning_rate(self) -> float:
        """The Adam step used: :attr:`learning_rate`, or the metric's (:data:`AFFINE_LEARNING_RATES`)."""
        return _given_or_default(self.learning_rate, AFFINE_LEARNING_RATES, self.metric)

    @property
    def resolved_init(self) -> str:
        """The initialisation used: :attr:`init`, or the metric's default."""
        if self.init is not None:
            return self.init
        return "centres" if self.metric in vocabulary.MULTI_MODAL_METRICS else "moments"


COARSER_SEARCH_VOXELS = 500_000
"""Working grids of at least this many voxels are searched at a third of their resolution, smaller ones at
half (:meth:`DeformableSettings.resolved_search_shrink`). Measured on training pairs only: a third keeps
the Dice of the 2 mm brain (0.86 M voxels; 0.710 against 0.711) and the vessel overlap of the ten lung
training pairs at 2 M voxels (0.802 against 0.803) for a quarter less time in the deformable stage (2.2 s
against 2.5 s on the brain, 6 s against 8 s on a lung pair), but loses 0.07 gland Dice on
the prostate MR -> ultrasound training pairs (0.1 M voxels, about 40 search voxels along an axis at a
third)."""

MAX_SEARCH_RADIUS = 6
"""Largest search radius (in quantisation steps) a radius in mm turns into: ``13^3`` candidates per cell;
fine grids (0.4 mm prostate ultrasound) keep a cost volume that fits."""


@dataclass(frozen=True)
class CoarseLevel:
    """One discrete search level of ConvexAdam (sizes in voxels of the search grid).

    Attributes:
        step: control point spacing (features are average-pooled over ``step``^3).
        radius: search radius in units of ``quantisation``; ``(2 radius + 1)^3`` candidates.
        quantisation: spacing of the candidate displacements.
        radius_mm: the search radius in mm instead (``radius`` then follows from the search grid's
            spacing, :meth:`in_voxels`, at most :data:`MAX_SEARCH_RADIUS`), so that the capture range does
            not depend on the working resolution.
    """

    step: int = 2
    radius: int = 3
    quantisation: int = 1
    radius_mm: float | None = None

    def __post_init__(self) -> None:
        for value, what in ((self.step, "search step"), (self.radius, "search radius"), (self.quantisation, "quantisation")):
            check_positive(value, what, integer=True)
        if self.radius_mm is not None:
            check_positive(self.radius_mm, "search radius in mm")

    def in_voxels(self, search_spacing_mm: float) -> "CoarseLevel":
        """This level with :attr:`radius` from :attr:`radius_mm` on a search grid of ``search_spacing_mm``
        (rounded up); itself when the radius is given in voxels."""
        if self.radius_mm is None:
            return self
        radius = math.ceil(self.radius_mm / (search_spacing_mm * self.quantisation) - 1e-9)
        return CoarseLevel(self.step, min(max(radius, 1), MAX_SEARCH_RADIUS), self.quantisation)


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "large-motion": {
        "coarse_levels": (
            CoarseLevel(step=2, radius=4, quantisation=1),
            CoarseLevel(step=2, radius=2, quantisation=1),
        ),
        "presmooth_vox": 0.7,
    },
}
"""Named deformable settings. ``large-motion`` searches twice, covering about +-12 working voxels (lung
breathing at 2 mm)."""


@dataclass(frozen=True)
class DeformableSettings(Overridable):
    """The deformable engine's settings (:func:`~RegSegLib.registration.deformable.register_deformable`).

    Attributes:
        method: ``convexadam`` (discrete search + Adam) or ``grid`` (pyramid of control grids).
        similarity: ``lncc`` (default), ``ncc``, ``mse`` or ``mind`` (MIND-SSC, multi-modal).
            ConvexAdam's discrete search always uses MIND-SSC; the Adam stages use ``similarity``.
        diffeomorphic: optimise a stationary velocity field integrated by scaling and squaring.
        spacing_mm: isotropic working resolution; ``None``: the fixed grid when it holds at most
            ``max_working_voxels`` voxels, else the isotropic spacing that gives about that many.
        max_working_voxels: voxel budget of the automatic working resolution. Two million: on the ten lung
            training pairs the vessel overlap (label 2) was 0.796 with one million and 0.803 with two. Three
            million reached 0.818 there, but on the 27 lung test pairs (suite 3, run at d420bdc) the
            landmark error was no better (2.70 mm against 2.69) for 3 s and 10 MB more per pair, so the
            budget stays at two. The 2 mm brain (0.9 M voxels) is not reduced.
        search_shrink: the discrete search runs on the working grid shrunk by this factor; ``None``: by
            3 on working grids of at least :data:`COARSER_SEARCH_VOXELS` voxels, else by 2
            (:meth:`resolved_search_shrink`).
        coarse_levels: ConvexAdam discrete levels, coarse to fine; by default two searches of 16 mm then
            8 mm radius (breathing motion: 25-32 mm of capture on lung CT at a 2.3-2.9 mm working grid).
        coupling: coupled convex optimisation weights (cost units per squared quantisation step).
        cost_smoothing: 3x3x3 averaging passes over the cost volume before the argmin (aggregation).
        inverse_consistent: make forward and backward coarse solutions inverse consistent.
        inverse_iterations: fixed-point iterations of the inverse consistency step.
        adam_step: grid step in working voxels of the Adam stage.
        adam_iterations: Adam iterations (ConvexAdam) or per pyramid level (grid).
        fine_iterations: Adam iterations of ConvexAdam's last stage on the full working grid
            (0 skips it; only used when ``adam_step`` > 1). Six: the same brain Dice as eight (0.711 and
            0.710) and the same prostate MR -> US training Dice (0.603 and 0.604) in a quarter less time;
            the lung training pairs lose 0.003 of vessel overlap, less than the larger working grid gains.
        adam_lr: Adam learning rate in grid voxels.
        adam_smoothing: 3x3x3 averaging passes over the grid at every iteration; ``None``: the
            similarity's (:attr:`resolved_adam_smoothing`).
        regularisation: weight of the diffusion (or bending) penalty, in grid voxel units; ``None``: the
            similarity's (:attr:`resolved_regularisation`).
        penalty: ``diffusion`` or ``bending`` (grid method).
        mind_radius: MIND-SSC patch radius in working voxels.
        mind_dilation: MIND-SSC neighbour distance in working voxels.
        presmooth_vox: Gaussian sigma (working voxels) applied to both images before the features.
        pyramid: shrink factors of the grid method, coarse to fine.
        control_step: control point spacing in voxels of each pyramid level (grid method).
        lncc_window: window width in voxels of local NCC.
        integration_steps: scaling-and-squaring steps of the diffeomorphic option.
        percentiles: intensity window (percent) mapped to [0, 1] before the similarity.
    """

    method: str = "convexadam"
    similarity: str = DEFAULT_DEFORMABLE_SIMILARITY
    diffeomorphic: bool = False
    spacing_mm: float | None = None
    max_working_voxels: int = 2_000_000
    search_shrink: int | None = None
    coarse_levels: tuple[CoarseLevel, ...] = (
        CoarseLevel(step=2, quantisation=1, radius_mm=16.0),
        CoarseLevel(step=2, quantisation=1, radius_mm=8.0),
    )
    coupling: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
    cost_smoothing: int = 1
    inverse_consistent: bool = False
    inverse_iterations: int = 15
    adam_step: int = 2
    adam_iterations: int = 12
    fine_iterations: int = 6
    adam_lr: float = 1.0
    adam_smoothing: int | None = None
    regularisation: float | None = None
    penalty: str = "diffusion"
    mind_radius: int = 1
    mind_dilation: int = 2
    presmooth_vox: float = 0.0
    pyramid: tuple[int, ...] = (4, 2, 1)
    control_step: int = 2
    lncc_window: int = 7
    integration_steps: int = 7
    percentiles: tuple[float, float] = (0.5, 99.5)
    WHAT = "deformable"

    def __post_init__(self) -> None:
        check_choice(self.method, DEFORMABLE_METHODS, "deformable method")
        check_choice(self.similarity, DEFORMABLE_SIMILARITIES, "deformable similarity")
        check_choice(self.penalty, PENALTIES, "smoothness penalty")
        if self.spacing_mm is not None:
            check_positive(self.spacing_mm, "deformable spacing")
        levels = tuple(level if isinstance(level, CoarseLevel) else CoarseLevel(*level) for level in self.coarse_levels)
        object.__setattr__(self, "coarse_levels", levels)
        object.__setattr__(self, "coupling", check_counts(self.coupling, "coupling weights", integer=False))
        object.__setattr__(self, "pyramid", check_counts(self.pyramid, "grid pyramid factors", integer=True))
        if self.search_shrink is not None:
            check_positive(self.search_shrink, "search shrink", integer=True)
        for name in ("max_working_voxels", "adam_step", "control_step", "lncc_window", "integration_steps", "mind_radius", "mind_dilation"):
            check_positive(getattr(self, name), name.replace("_", " "), integer=True)
        for name in ("adam_iterations", "fine_iterations", "cost_smoothing", "adam_smoothing", "inverse_iterations"):
            if getattr(self, name) is not None:
                check_positive(getattr(self, name), name.replace("_", " "), integer=True, zero_allowed=True)
        check_positive(self.adam_lr, "deformable learning rate")
        if self.regularisation is not None:
            check_positive(self.regularisation, "regularisation weight")
        check_positive(self.presmooth_vox, "pre-smoothing", zero_allowed=True)
        low, high = self.percentiles
        if not (is_number(low) and is_number(high) and 0.0 <= low < high <= 100.0):
            raise SettingsError(f"intensity percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}")

    @property
    def resolved_regularisation(self) -> float:
        """The smoothness weight used: :attr:`regularisation`, or the similarity's (:data:`DEFORMABLE_REGULARISATION`)."""
        return _given_or_default(self.regularisation, DEFORMABLE_REGULARISATION, self.similarity)

    def resolved_search_shrink(self, working_voxels: int) -> int:
        """The search shrink used on a working grid of ``working_voxels`` voxels: :attr:`search_shrink`,
        or 3 from :data:`COARSER_SEARCH_VOXELS` voxels on and 2 below."""
        if self.search_shrink is not None:
            return self.search_shrink
        return 3 if working_voxels >= COARSER_SEARCH_VOXELS else 2

    @property
    def resolved_adam_smoothing(self) -> int:
        """The averaging passes used: :attr:`adam_smoothing`, or the similarity's (:data:`DEFORMABLE_ADAM_SMOOTHING`)."""
        return _given_or_default(self.adam_smoothing, DEFORMABLE_ADAM_SMOOTHING, self.similarity)

    @classmethod
    def from_preset(cls, preset: str = "default", **overrides: Any) -> "DeformableSettings":
        """Settings of a named preset (:data:`PRESETS`) with some fields overridden.

        Raises:
            SettingsError: unknown preset, unknown field or a bad value.
        """
        check_choice(preset, tuple(PRESETS), "deformable preset")
        return cls().overridden(**{**PRESETS[preset], **overrides})


@dataclass(frozen=True)
class RegistrationSettings:
    """What ``regseg register`` does: the method and each stage's settings.

    Attributes:
        method: ``affine``, ``deformable`` or ``network`` (the initial transform, a network's prediction, is
            kept as it is, unless the guard finds it worse than no transform).
        metric: ``auto`` (each stage's measure is chosen from the images when the registration starts,
            :func:`~RegSegLib.registration.modality.choose_metric`) or the metric of the last stage, which
            names the before/after similarity of the report (with a metric the user chose, both stages
            use it; the deformable stage uses ``mind`` for ``mi``).
        preset: the deformable preset the settings started from.
        affine: the affine stage.
        deformable: the deformable stage (``None`` for ``affine``).
    """

    method: str = "affine"
    metric: str = AUTO_METRIC
    preset: str = "default"
    affine: AffineSettings = field(default_factory=AffineSettings)
    deformable: DeformableSettings | None = None

    def __post_init__(self) -> None:
        check_choice(self.method, METHODS, "method")
        check_choice(self.metric, METRIC_CHOICES, "similarity metric")
        if self.method == "deformable" and self.deformable is None:
            raise SettingsError("a deformable registration needs deformable settings")

    @classmethod
    def create(
        cls,
        method: str = "affine",
        family: str = "affine",
        metric: str | None = AUTO_METRIC,
        *,
        diffeomorphic: bool = False,
        levels: Sequence[float] | None = None,
        iterations: Sequence[int] | None = None,
        deformable_iterations: Sequence[int] | None = None,
        regularisation: float | None = None,
        preset: str = "default",
        spacing: float | None = None,
    ) -> "RegistrationSettings":
        """Settings from the options a user sets (command line, Slicer panel, batch script); ``None`` = default.

        Args:
            method: ``affine`` or ``deformable``.
            family: the affine stage's family.
            metric: ``auto`` (or ``None``) to choose from the images, or the similarity of both stages;
                the deformable stage uses ``mind`` for ``mi``.
            diffeomorphic: deformable stage as a stationary velocity field.
            levels: affine pyramid factors, coarse to fine.
            iterations: affine iterations, one per level.
            deformable_iterations: one or two counts: Adam iterations on the control grid, then on the
                full working grid (0 skips a stage).
            regularisation: deformable smoothness weight.
            preset: deformable preset (:data:`PRESETS`).
            spacing: isotropic working resolution of the deformable stage in mm.

        Raises:
            SettingsError: a bad value, with a message naming it.
        """
        check_choice(method, METHODS, "method")
        check_choice(preset, tuple(PRESETS), "deformable preset")
        metric = AUTO_METRIC if metric is None else metric
        check_choice(metric, METRIC_CHOICES, "similarity metric")
        affine_options: dict[str, Any] = {"family": family}
        if levels is not None:
            affine_options["levels"] = check_counts(levels, "affine pyramid levels", integer=False)
        if iterations is not None:
            affine_options["iterations"] = tuple(iterations)
        affine = AffineSettings(**affine_options)
        deformable_options: dict[str, Any] = {"diffeomorphic": bool(diffeomorphic)}
        if deformable_iterations is not None:
            counts = check_counts(deformable_iterations, "deformable iterations", integer=True, zero_allowed=True)
            if len(counts) > 2:
                raise SettingsError(
                    f"deformable iterations take one or two counts (control grid, then full resolution), got {len(counts)}"
                )
            deformable_options["adam_iterations"] = counts[0]
            if len(counts) == 2:
                deformable_options["fine_iterations"] = counts[1]
        if regularisation is not None:
            deformable_options["regularisation"] = regularisation
        if spacing is not None:
            deformable_options["spacing_mm"] = spacing
        deformable = DeformableSettings.from_preset(preset, **deformable_options)
        settings = cls(
            method=method,
            preset=preset,
            affine=affine,
            deformable=deformable if method == "deformable" else None,
        )
        return settings if metric == AUTO_METRIC else settings.with_metric(metric)

    @classmethod
    def from_attributes(cls, source: Any, **renamed: str) -> "RegistrationSettings":
        """:meth:`create` with the options read from ``source``'s attributes (a parsed command line, a request).

        Args:
            source: has an attribute per option of :data:`USER_OPTIONS` (or the name given in ``renamed``).
            **renamed: option -> attribute name where ``source`` names it differently.

        Raises:
            SettingsError: a bad value, with a message naming it.
        """
        values = {option: getattr(source, renamed.get(option, option)) for option in USER_OPTIONS}
        return cls.create(**values)

    def with_metric(self, metric: str) -> "RegistrationSettings":
        """These settings with ``metric`` in both stages (the deformable stage's equivalent for ``mi``).

        Raises:
            SettingsError: ``metric`` is not one of :data:`METRICS`.
        """
        check_choice(metric, METRICS, "similarity metric")
        return replace(self.with_stage_metrics(metric, DEFORMABLE_SIMILARITY_FOR.get(metric, metric)), metric=metric)

    def with_stage_metrics(self, affine: str, deformable: str) -> "RegistrationSettings":
        """These settings with each stage's measure given; :attr:`metric` (the report's) becomes the last
        stage's.

        Raises:
            SettingsError: an unknown measure for a stage.
        """
        stage = self.deformable
        if stage is not None:
            stage = stage.overridden(similarity=deformable)
        last = affine if stage is None else deformable
        return replace(self, metric=last, affine=self.affine.overridden(metric=affine), deformable=stage)

    @property
    def report_metric(self) -> str:
        """The measure of the before/after similarity report.

        Raises:
            SettingsError: the metric is still ``auto`` (it is chosen when the registration starts).
        """
        if self.metric == AUTO_METRIC:
            raise SettingsError("the similarity metric is chosen from the images when the registration starts")
        return self.metric

    def as_dict(self) -> dict[str, Any]:
        """Every setting as used, for ``metrics.json`` (the values left to the metric resolved)."""
        content = asdict(self)
        content["affine"].update(
            init=self.affine.resolved_init,
            iterations=self.affine.resolved_iterations,
            learning_rate=self.affine.resolved_learning_rate,
        )
        if self.deformable is not None:
            content["deformable"]["regularisation"] = self.deformable.resolved_regularisation
            content["deformable"]["adam_smoothing"] = self.deformable.resolved_adam_smoothing
        return content


USER_OPTIONS: tuple[str, ...] = (
    "method",
    "family",
    "metric",
    "diffeomorphic",
    "levels",
    "iterations",
    "deformable_iterations",
    "regularisation",
    "preset",
    "spacing",
)
"""The options a user sets (:meth:`RegistrationSettings.create`): the command line, the Slicer request and the
batch script offer exactly these."""
