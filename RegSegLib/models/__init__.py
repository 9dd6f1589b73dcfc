"""Trained models: the manifest (what a model is), the store (shipped and installed models) and the download.

Torch-free: only :meth:`~RegSegLib.models.store.ModelStore.load_weights` imports torch, when called.
"""

from RegSegLib._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "TASKS": "manifest",
        "InputContract": "manifest",
        "ModelEntry": "manifest",
        "ManifestError": "manifest",
        "read_manifest": "manifest",
        "read_entry": "manifest",
        "write_manifest": "manifest",
        "file_sha256": "manifest",
        "metrics_text": "manifest",
        "ModelStore": "store",
        "StoredModel": "store",
        "ModelCheck": "store",
        "regseg_home": "store",
        "download": "remote",
    },
)
