"""Files in and out: volumes, transforms, landmarks, atomic writes and the checks of what was read."""

from RegSegLib._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "read_volume": "volumes",
        "check_exists": "files",
        "write_volume": "volumes",
        "read_transform": "transforms",
        "write_transform": "transforms",
        "read_landmarks": "landmarks",
        "write_landmarks_json": "landmarks",
        "atomic_output": "files",
        "refuse_overwriting_inputs": "files",
        "check_image": "checks",
        "check_same_grid": "checks",
        "as_label_map": "checks",
        "as_mask": "checks",
        "select_channel": "checks",
        "read_image": "checks",
        "read_mask": "checks",
        "read_labels": "checks",
    },
)
