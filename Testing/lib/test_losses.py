"""Similarity measures: optimum at identity, invariances, masks, shapes (RegSegLib.losses)."""

from __future__ import annotations

import pytest
import torch

from RegSegLib import losses
from RegSegLib.ops.mind import MIND_PAIRS, mind_ssc
from RegSegLib.ops.filters import gaussian_smooth


def textured(shape=(20, 22, 24), seed: int = 0) -> torch.Tensor:
    """A smooth random image ``[1, 1, K, J, I]`` scaled to [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    image = gaussian_smooth(torch.rand(1, 1, *shape, generator=generator), 1.5)
    image = image - image.min()
    return image / image.max()


def shifted(image: torch.Tensor, voxels: int = 2) -> torch.Tensor:
    return torch.roll(image, shifts=voxels, dims=4)


@pytest.mark.parametrize("metric", ["mse", "ncc", "lncc", "mi", "mind"])
def test_identical_images_are_the_optimum(metric):
    image = textured()
    loss = losses.make_loss(metric)
    at_identity = float(loss(image, image))
    assert at_identity < float(loss(image, shifted(image)))
    if metric in ("mse", "mind"):
        assert at_identity == pytest.approx(0.0, abs=1e-6)
    if metric == "ncc":
        assert at_identity == pytest.approx(0.0, abs=1e-3)
    if metric == "lncc":
        # windows whose variance is far below LNCC_EPS count as uncorrelated (MONAI's smooth_dr): a smooth image
        # scores below 1 against itself, the same image with ten times the contrast scores 1
        assert 0.0 < at_identity < 0.5
        assert float(loss(10.0 * image, 10.0 * image)) == pytest.approx(0.0, abs=1e-3)


def test_reported_similarity_directions():
    image = textured()
    for metric, (name, higher_is_better) in losses.METRICS.items():
        if metric == "dice":
            continue
        same = losses.similarity(image, image, metric)
        other = losses.similarity(image, shifted(image, 3), metric)
        assert (same > other) == higher_is_better, name
    assert losses.similarity(image, image, "ncc") == pytest.approx(1.0, abs=1e-5)
    assert losses.similarity(image, 1.0 - image, "ncc") == pytest.approx(-1.0, abs=1e-5)


def test_mutual_information_is_invariant_to_inversion_and_close_under_monotone_maps():
    image = textured()
    reference = float(losses.mutual_information(image, image))
    assert float(losses.mutual_information(image, 1.0 - image)) == pytest.approx(reference, rel=1e-4)
    assert float(losses.mutual_information(image, image**2)) == pytest.approx(reference, rel=0.15)
    assert float(losses.mutual_information(image, shifted(image, 3))) < 0.6 * reference


def test_mutual_information_is_differentiable():
    image = textured()
    warped = shifted(image, 1).clone().requires_grad_(True)
    (-losses.mutual_information(image, warped)).backward()
    assert warped.grad is not None and float(warped.grad.abs().sum()) > 0


def test_mind_features_shape_range_and_intensity_invariance():
    image = textured()
    features = mind_ssc(image)
    assert features.shape == (1, 12, 20, 22, 24)
    assert float(features.min()) > 0.0 and float(features.max()) <= 1.0 + 1e-6
    assert torch.allclose(features.max(dim=1).values, torch.ones(1, 20, 22, 24), atol=1e-5)
    assert torch.allclose(mind_ssc(3.0 * image + 7.0), features, atol=1e-4)
    remapped = (features - mind_ssc(image**1.5)).abs().mean()
    moved = (features - mind_ssc(shifted(image, 2))).abs().mean()
    assert float(remapped) < 0.3 * float(moved)
    two_channels = mind_ssc(torch.cat([image, 1.0 - image], dim=1))
    assert two_channels.shape == (1, 24, 20, 22, 24)
    assert torch.allclose(two_channels[:, :12], features)
    assert len(MIND_PAIRS) == 12


def test_masks_exclude_regions():
    image = textured()
    corrupted = image.clone()
    corrupted[..., 2:8, 3:9, 4:10] = torch.rand(6, 6, 6, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(1, 1, 20, 22, 24)
    mask[..., 2:8, 3:9, 4:10] = 0.0
    assert float(losses.mse(image, corrupted, mask)) == pytest.approx(0.0, abs=1e-7)
    assert float(losses.global_ncc(image, corrupted, mask)) == pytest.approx(1.0, abs=1e-5)
    # local NCC: masked voxels do not count, but they still enter the windows of their neighbours, so the
    # corruption reaches half a window (3 voxels) beyond it and no further
    assert float(losses.local_ncc(image, corrupted, mask)) < float(losses.local_ncc(image, image, mask)) - 1e-3
    dilated = torch.ones(1, 1, 20, 22, 24)
    dilated[..., 0:11, 0:12, 1:13] = 0.0
    assert float(losses.local_ncc(image, corrupted, dilated)) == pytest.approx(
        float(losses.local_ncc(image, image, dilated)), abs=1e-5
    )
    assert float(losses.mutual_information(image, corrupted, mask)) == pytest.approx(
        float(losses.mutual_information(image, image, mask)), rel=1e-5
    )
    assert float(losses.mse(image, corrupted)) > 1e-3


def test_dice_on_one_hot_label_maps():
    labels = torch.zeros(1, 1, 10, 10, 10, dtype=torch.long)
    labels[..., 2:6, 2:6, 2:6] = 1
    labels[..., 6:9, 6:9, 6:9] = 2
    onehot = losses.one_hot(labels, 3)
    assert onehot.shape == (1, 3, 10, 10, 10)
    assert float(losses.DiceLoss()(onehot, onehot)) == pytest.approx(0.0, abs=1e-6)
    moved = losses.one_hot(torch.roll(labels, 2, dims=4), 3)
    # label 1: 4x4x4 cubes overlapping by 4x4x2; label 2: 3x3x3 cubes overlapping by 3x3x1
    expected = (2 * 32 / 128 + 2 * 9 / 54) / 2
    assert losses.similarity(onehot, moved, "dice") == pytest.approx(expected, abs=1e-4)


def test_shape_errors_are_explicit():
    image = textured()
    with pytest.raises(ValueError, match="differ in shape"):
        losses.mse(image, image[..., :-1])
    with pytest.raises(ValueError, match="mask must be"):
        losses.mse(image, image, torch.ones(1, 2, 20, 22, 24))
    with pytest.raises(ValueError, match="odd"):
        losses.local_ncc(image, image, window=4)
    with pytest.raises(ValueError, match="unknown similarity metric"):
        losses.make_loss("cc")


def test_the_registry_holds_exactly_the_shared_metric_names():
    from RegSegLib import vocabulary

    assert list(losses.REGISTRY) == list(vocabulary.METRICS)
    assert vocabulary.IMAGE_METRICS == ("lncc", "ncc", "mse", "mi", "mind")
