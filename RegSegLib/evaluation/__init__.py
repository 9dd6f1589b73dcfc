"""Evaluation of results: label overlap, point errors, field regularity, the before/after report, QC pictures."""

from RegSegLib._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "dice_per_label": "overlap",
        "hd95_per_label": "overlap",
        "mean_ignoring_nan": "overlap",
        "landmark_errors": "points",
        "mapping_error_mm": "points",
        "jacobian_statistics": "fields",
        "similarity_report": "report",
        "dice_report": "report",
        "evaluate_registration": "report",
        "RegistrationOutcome": "report",
        "json_ready": "report",
        "qc_figure": "qc",
    },
)
