"""Tests for structvision.models.segmentation.fcn."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from structvision.models.segmentation.fcn import (
    FCN,
    BilinearUpsample,
    bilinear_upsampling_weights,
    fcn_resnet,
    fcn_small,
    fcn_vgg,
)

VARIANTS = ("32s", "16s", "8s")


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _images(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------
# Bilinear upsampling
# --------------------------------------------------------------------------------------------


def test_bilinear_weights_hand_case_factor_2() -> None:
    weights = bilinear_upsampling_weights(2, 2)  # k = 4, tent (0.25, 0.75, 0.75, 0.25)
    tent = torch.tensor([0.25, 0.75, 0.75, 0.25])
    assert weights.shape == (2, 2, 4, 4)
    torch.testing.assert_close(weights[0, 0], torch.outer(tent, tent))
    torch.testing.assert_close(weights[1, 1], torch.outer(tent, tent))
    assert weights[0, 1].abs().sum() == 0 and weights[1, 0].abs().sum() == 0


@pytest.mark.parametrize("factor", [2, 3, 8, 32])
def test_bilinear_upsample_equals_interpolate_in_interior(factor: int) -> None:
    x = torch.randn(1, 2, 5, 4, generator=torch.Generator().manual_seed(factor))
    upsample = BilinearUpsample(2, factor)
    assert upsample.weight.shape[-1] == 2 * factor - factor % 2
    with torch.no_grad():
        ours = upsample(x)
    reference = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert ours.shape == reference.shape == (1, 2, 5 * factor, 4 * factor)
    border = factor  # F.interpolate clamps at the edge, the transposed conv sees zeros
    interior = (..., slice(border, -border), slice(border, -border))
    torch.testing.assert_close(ours[interior], reference[interior])
    # and it really differs at the border, so the interior check is not vacuous
    assert not torch.allclose(ours, reference)


def test_bilinear_upsample_trainable_flag() -> None:
    assert BilinearUpsample(3, 2).weight.requires_grad
    frozen = BilinearUpsample(3, 2, trainable=False)
    assert not frozen.weight.requires_grad
    assert frozen.bias is None
    model = fcn_small(num_classes=3, variant="8s", width=4, trainable_upsampling=False)
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith("upscore"))


# --------------------------------------------------------------------------------------------
# Shapes and alignment
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_output_shape_for_odd_sizes(variant: str) -> None:
    model = fcn_small(num_classes=5, variant=variant, width=4).eval()
    with torch.no_grad():
        predictions = model(_images(2, 67, 93))
    assert len(predictions) == 2
    for prediction in predictions:
        assert prediction["semantic_logits"].shape == (5, 67, 93)
        assert prediction["semantic"].shape == (67, 93)
        assert prediction["semantic"].dtype == torch.int64
        torch.testing.assert_close(prediction["semantic"], prediction["semantic_logits"].argmax(0))


def test_list_of_different_sizes_equals_batch_of_each() -> None:
    """An image padded next to a larger one gives the same scores as when alone, as long as
    the padded size is the same (both pad to 64 x 96 here)."""
    model = fcn_small(num_classes=3, variant="8s", width=4, norm="group").eval()
    small, large = _images(1, 40, 70, seed=1)[0], _images(1, 61, 90, seed=2)[0]
    with torch.no_grad():
        together = model([small, large])
        alone = model([small])
        padded_alone = model([F.pad(small, (0, 20, 0, 21))])
    assert together[0]["semantic_logits"].shape == (3, 40, 70)
    assert together[1]["semantic_logits"].shape == (3, 61, 90)
    # same padded size (64 x 96): identical; alone it is padded to 64 x 96 as well
    torch.testing.assert_close(together[0]["semantic_logits"], alone[0]["semantic_logits"])
    # padding with normalised zeros == padding the [0, 1] image with the mean colour, not 0
    assert not torch.allclose(
        padded_alone[0]["semantic_logits"][:, :40, :70], alone[0]["semantic_logits"]
    )


def test_fcn_resnet18_shapes() -> None:
    model = fcn_resnet(depth=18, num_classes=4, variant="8s").eval()
    assert model.backbone.out_channels == {"c3": 128, "c4": 256, "c5": 512}
    with torch.no_grad():
        predictions = model([_images(1, 35, 49)[0]])
    assert predictions[0]["semantic_logits"].shape == (4, 35, 49)


def test_fcn_vgg_shapes() -> None:
    model = fcn_vgg(depth=11, num_classes=3, variant="8s", fc_channels=16).eval()
    assert model.backbone.out_channels == {"c3": 256, "c4": 512, "c5": 16}
    with torch.no_grad():
        predictions = model(_images(1, 37, 45))
    assert predictions[0]["semantic_logits"].shape == (3, 37, 45)


def test_vgg_weights_make_fc6_fc7_convolutional(tmp_path) -> None:
    """A torchvision VGG state dict loads, and on a 224 x 224 input the convolutional fc7 at
    the centre of the 7 x 7 pool5 grid equals torchvision's fully connected fc7 (fc6 is a 7x7
    conv with padding 3, so its centre sees the whole pool5 map, as the Linear does)."""
    torch.manual_seed(0)
    fc = 8
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["A"])  # vgg11
    classifier = torch.nn.Sequential(
        torch.nn.Linear(512 * 7 * 7, fc), torch.nn.ReLU(), torch.nn.Linear(fc, fc)
    )
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state.update(
        {"classifier.0.weight": classifier[0].weight, "classifier.0.bias": classifier[0].bias}
    )
    state.update(
        {"classifier.3.weight": classifier[2].weight, "classifier.3.bias": classifier[2].bias}
    )
    path = tmp_path / "vgg11.pth"
    torch.save({k: v.detach() for k, v in state.items()}, path)
    model = fcn_vgg(depth=11, num_classes=3, variant="32s", fc_channels=fc, weights_path=path)
    trunk = model.backbone.eval()
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ours = trunk(images)["c5"][0, :, 3, 3]
        reference = torch.relu(classifier(features(images).flatten(1)))[0]
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"classifier\.0\.weight"):
        fcn_vgg(depth=11, num_classes=3, fc_channels=fc + 1, weights_path=path)


def test_rejects_bad_arguments() -> None:
    backbone = fcn_small(num_classes=3, variant="8s", width=4).backbone
    with pytest.raises(ValueError, match="variant"):
        FCN(backbone=backbone, variant="4s", num_classes=3, in_channels=backbone.out_channels)
    with pytest.raises(ValueError, match="c3"):
        FCN(backbone=backbone, variant="8s", num_classes=3, in_channels={"c4": 8, "c5": 16})
    model = fcn_small(num_classes=3, variant="32s", width=4)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        model([torch.rand(1, 32, 32)])
    with pytest.raises(ValueError, match="shape"):
        model(_images(1, 32, 32), [{"semantic": torch.zeros(16, 32, dtype=torch.int64)}])
    with pytest.raises(ValueError, match=r"0\.\.2"):
        model(_images(1, 32, 32), [{"semantic": torch.full((32, 32), 7)}])


# --------------------------------------------------------------------------------------------
# Skip branches
# --------------------------------------------------------------------------------------------


def test_variants_differ_only_in_skip_branches() -> None:
    keys = {
        v: {k for k in fcn_small(num_classes=3, variant=v, width=4).state_dict()} for v in VARIANTS
    }
    shared = keys["32s"] - {"upscore32.weight"}
    assert shared <= keys["16s"] and shared <= keys["8s"]
    assert keys["16s"] - shared == {
        "upscore2.weight",
        "score_pool4.weight",
        "score_pool4.bias",
        "upscore16.weight",
    }
    assert keys["8s"] - keys["16s"] == {
        "upscore_pool4.weight",
        "score_pool3.weight",
        "score_pool3.bias",
        "upscore8.weight",
    }


@pytest.mark.parametrize("variant", ["16s", "8s"])
def test_zero_skip_scores_at_init_give_the_coarse_path(variant: str) -> None:
    """At init the skips contribute nothing: the output is the c5 scores pushed through the
    same transposed convolutions, so it does not depend on c3/c4. After one step the skips
    have learned something and it does."""
    torch.manual_seed(0)
    model = fcn_small(num_classes=3, variant=variant, width=4, norm="group").eval()
    images = _images(1, 64, 64)
    batch = model._normalise_and_pad(list(images))
    with torch.no_grad():
        features = model.backbone(batch)
        coarse = model.upscore2(model.score_fr(features["c5"]))
        if variant == "16s":
            expected = model.upscore16(coarse)
        else:
            expected = model.upscore8(model.upscore_pool4(coarse))
        ours = model(images)[0]["semantic_logits"]
    torch.testing.assert_close(ours, expected[0])

    model.train()
    loss = model(images, [{"semantic": torch.randint(0, 3, (64, 64))}])["loss_semantic"]
    loss.backward()
    assert model.score_pool4.weight.grad.abs().sum() > 0
    assert model.score_pool4.bias.grad.abs().sum() > 0


def test_staged_training_loads_coarser_weights() -> None:
    fcn32 = fcn_small(num_classes=3, variant="32s", width=4)
    fcn16 = fcn_small(num_classes=3, variant="16s", width=4)
    result = fcn16.load_state_dict(fcn32.state_dict(), strict=False)
    assert result.unexpected_keys == ["upscore32.weight"]
    torch.testing.assert_close(fcn16.score_fr.weight, fcn32.score_fr.weight)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def _two_tiny_samples() -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    images = torch.zeros(2, 3, 32, 32)
    gt_maps = torch.zeros(2, 32, 32, dtype=torch.int64)
    images[0, 0, 4:20, 6:24] = 1.0  # a red box, class 1
    gt_maps[0, 4:20, 6:24] = 1
    images[1, 2, 10:30, 2:16] = 1.0  # a blue box, class 2
    gt_maps[1, 10:30, 2:16] = 2
    return images, [{"semantic": m} for m in gt_maps]


def test_overfits_one_batch() -> None:
    torch.manual_seed(0)
    model = fcn_small(num_classes=3, variant="8s", width=8, norm="group").train()
    images, targets = _two_tiny_samples()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        loss = model(images, targets)["loss_semantic"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses


def test_batched_dict_targets_equal_list_targets() -> None:
    model = fcn_small(num_classes=3, variant="16s", width=4, norm="group").train()
    images, targets = _two_tiny_samples()
    from_list = model(images, targets)["loss_semantic"]
    from_dict = model(images, {"semantic": torch.stack([t["semantic"] for t in targets])})
    torch.testing.assert_close(from_list, from_dict["loss_semantic"])


def test_ignored_pixels_do_not_count() -> None:
    """The training loss is the mean cross-entropy over the non-255 pixels only (checked
    against eval-mode logits, equal in train mode with GroupNorm); all-ignore gives a zero
    loss with zero gradients, not NaN."""
    torch.manual_seed(0)
    model = fcn_small(num_classes=3, variant="8s", width=4, norm="group")
    images, targets = _two_tiny_samples()
    targets[0]["semantic"][:, :10] = 255
    targets[1]["semantic"][20:, :] = 255
    model.eval()
    with torch.no_grad():
        logits = torch.stack([p["semantic_logits"] for p in model(images)])  # (2, 3, 32, 32)
    gt = torch.stack([t["semantic"] for t in targets])
    valid = gt != 255
    per_pixel = F.cross_entropy(logits, gt.clamp(max=2), reduction="none")
    reference = per_pixel[valid].mean()
    model.train()
    torch.testing.assert_close(model(images, targets)["loss_semantic"], reference)

    ignored = [{"semantic": torch.full((32, 32), 255)} for _ in range(2)]
    loss = model(images, ignored)["loss_semantic"]
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.parameters())
