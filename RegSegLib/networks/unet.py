"""The segmentation network of nnU-Net's plans (seed 001): PlainConvUNet, built as MONAI's DynUNet without
residual blocks (two convolution-normalisation-activation blocks per stage, strided convolutions for the
downsampling, transposed convolutions for the upsampling, instance normalisation, leaky ReLU).

The topology (stages, strides, kernel sizes, features) comes from the plan
(:func:`RegSegLib.segmentation.plan.plan_experiment`) and is never chosen by hand. DynUNet's basic block has
two convolutions in the encoder and in the decoder, the plans' ``n_conv_per_stage`` and
``n_conv_per_stage_decoder``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

def plain_conv_unet(
    in_channels: int,
    num_classes: int,
    features_per_stage: Sequence[int],
    strides: Sequence[Sequence[int]],
    kernel_sizes: Sequence[Sequence[int]],
    deep_supervision: bool = False,
) -> nn.Module:
    """A PlainConvUNet (MONAI ``DynUNet``, ``res_block=False``).

    Args:
        in_channels: input channels (image sequences).
        num_classes: output channels (foreground labels + background).
        features_per_stage: channels of each stage ``[n_stages]``.
        strides: per stage ``[n_stages][3]``; the first is ``(1, 1, 1)``.
        kernel_sizes: per stage ``[n_stages][3]``.
        deep_supervision: also return the logits of the lower decoder stages while training.

    ``forward(x [B, C, D, H, W])`` returns the logits ``[B, num_classes, D, H, W]``; with deep supervision in
    training mode, ``[B, 1 + n_stages - 2, num_classes, D, H, W]`` (the lower outputs upsampled, MONAI's
    convention).
    """
    from monai.networks.nets import DynUNet

    stages = len(features_per_stage)
    if not (len(strides) == len(kernel_sizes) == stages) or stages < 2:
        raise ValueError(f"a plan needs one stride and one kernel size per stage ({stages} stages), and two stages at least")
    return DynUNet(
        spatial_dims=3, in_channels=in_channels, out_channels=num_classes,
        kernel_size=[list(k) for k in kernel_sizes], strides=[list(s) for s in strides],
        upsample_kernel_size=[list(s) for s in strides[1:]], filters=list(features_per_stage),
        norm_name=("INSTANCE", {"affine": True}), act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
        deep_supervision=deep_supervision, deep_supr_num=max(stages - 2, 1), res_block=False,
    )


def logits(output: torch.Tensor) -> torch.Tensor:
    """The full-resolution logits of a PlainConvUNet's output (the first of the deep-supervision stack)."""
    return output[:, 0] if output.dim() == 6 else output
