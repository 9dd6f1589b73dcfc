"""Losses: image similarity (one registry, masks everywhere), smoothness penalties, label overlap."""

from RegSegLib._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **{
            name: "image"
            for name in (
                "METRICS",
                "REGISTRY",
                "mse",
                "descriptor_distance",
                "global_ncc",
                "local_ncc_map",
                "local_ncc",
                "mutual_information",
                "mind_loss",
                "MSELoss",
                "NCCLoss",
                "LocalNCCLoss",
                "MutualInformationLoss",
                "MINDLoss",
                "make_loss",
                "similarity",
            )
        },
        "weighted_mean": "reduction",
        "diffusion": "regularisers",
        "bending": "regularisers",
        "penalty": "regularisers",
        "one_hot": "segmentation",
        "dice": "segmentation",
        "DiceLoss": "segmentation",
    },
)
