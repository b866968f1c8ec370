"""Tests for structvision.models.segmentation.deeplab, the dilated ResNet backbone and the
conversion of torchvision's FCN-ResNet / DeepLabV3 models by ``from_torchvision``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import segmentation as tv_segmentation

from structvision.convert import from_torchvision
from structvision.models.backbones import dilated_resnet_backbone, small_backbone
from structvision.models.segmentation import (
    ASPP,
    DeepLabHead,
    DilatedSegmenter,
    FCNHead,
    deeplabv3_resnet,
    fcn_resnet_dilated,
)

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).reshape(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).reshape(3, 1, 1)


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _images(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _normalise(images: torch.Tensor) -> torch.Tensor:
    """What torchvision's segmentation models expect: ImageNet-normalised images."""
    return (images - IMAGENET_MEAN) / IMAGENET_STD


def _randomise_batchnorm(model: nn.Module, seed: int = 1) -> None:
    """Non-trivial BatchNorm statistics and affine parameters (fresh models have mean 0,
    var 1, weight 1, bias 0, which would let a wrong BN mapping go unnoticed)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                channels = module.num_features
                module.running_mean.copy_(0.1 * torch.randn(channels, generator=generator))
                module.running_var.copy_(0.75 + 0.5 * torch.rand(channels, generator=generator))
                module.weight.copy_(0.75 + 0.5 * torch.rand(channels, generator=generator))
                module.bias.copy_(0.1 * torch.randn(channels, generator=generator))


def _torchvision_model(name: str, *, num_classes: int, aux: bool, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    builder = getattr(tv_segmentation, name)
    model = builder(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=aux)
    _randomise_batchnorm(model, seed=seed + 1)
    return model.eval()


def _stacked_logits(predictions: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    return torch.stack([p["semantic_logits"] for p in predictions])


# --------------------------------------------------------------------------------------------
# Dilated backbone
# --------------------------------------------------------------------------------------------


def test_dilated_backbone_keeps_stride_8_with_ceil_sizes() -> None:
    backbone = dilated_resnet_backbone(50, returned_layers=(2, 3, 4)).eval()
    assert backbone.strides == {"c3": 8, "c4": 8, "c5": 8}
    assert backbone.out_channels == {"c3": 512, "c4": 1024, "c5": 2048}
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 61, 83))
    for name, channels in backbone.out_channels.items():
        assert tuple(features[name].shape) == (1, channels, 8, 11), name  # ceil(61/8), ceil(83/8)
    # layer3 dilates its 3x3 convs by 2 and layer4 by 4 (after their first block), no stride
    assert backbone.layer3[1].conv2.dilation == (2, 2)
    assert backbone.layer4[1].conv2.dilation == (4, 4)
    assert backbone.layer4[0].conv2.stride == (1, 1)


def test_dilated_backbone_output_stride_16_and_errors() -> None:
    backbone = dilated_resnet_backbone(50, replace_stride_with_dilation=(False, False, True))
    assert backbone.strides == {"c4": 16, "c5": 16}
    with pytest.raises(ValueError, match="depth"):
        dilated_resnet_backbone(18)  # BasicBlock cannot dilate
    with pytest.raises(ValueError, match="replace_stride_with_dilation"):
        dilated_resnet_backbone(50, replace_stride_with_dilation=(True, True))


# --------------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------------


def test_aspp_output_shape_and_branches() -> None:
    aspp = ASPP(16, atrous_rates=(1, 2, 3), out_channels=8).eval()
    with torch.no_grad():
        out = aspp(torch.randn(2, 16, 7, 9))
    assert tuple(out.shape) == (2, 8, 7, 9)
    assert [branch.conv.dilation for branch in aspp.atrous] == [(1, 1), (2, 2), (3, 3)]
    assert aspp.project.conv.in_channels == 5 * 8  # 1x1 + 3 rates + image pooling


def test_aspp_rate_beyond_the_map_is_a_1x1_conv_of_the_centre_tap() -> None:
    """On a map no larger than the rate, every off-centre tap of a dilated 3x3 conv falls in
    the zero padding: the branch equals a 1x1 conv with the kernel's centre weights."""
    torch.manual_seed(0)
    aspp = ASPP(4, atrous_rates=(12,), out_channels=3).eval()
    features = torch.randn(2, 4, 10, 12)
    branch = aspp.atrous[0]
    with torch.no_grad():
        centre = branch.conv.weight[:, :, 1:2, 1:2]  # (3, 4, 1, 1)
        expected = branch.relu(branch.bn(F.conv2d(features, centre)))
        torch.testing.assert_close(branch(features), expected)


def test_aspp_image_pooling_branch_adds_a_spatially_constant_term() -> None:
    """The pooling branch is conv-BN-ReLU of the global mean, broadcast over the map: through
    the (linear, bias-free) project conv it adds one constant vector at every position."""
    torch.manual_seed(0)
    aspp = ASPP(4, atrous_rates=(2,), out_channels=3).eval()
    features = torch.randn(1, 4, 6, 5)
    with torch.no_grad():
        local = [aspp.conv1x1(features), aspp.atrous[0](features), torch.zeros(1, 3, 6, 5)]
        pooled = aspp.pooling(features.mean(dim=(2, 3), keepdim=True))  # (1, 3, 1, 1)
        weight = aspp.project.conv.weight  # (3, 9, 1, 1): [1x1, atrous, pooling] inputs
        projected = F.conv2d(torch.cat(local, 1), weight) + F.conv2d(pooled, weight[:, 6:])
        expected = aspp.project.relu(aspp.project.bn(projected))
        torch.testing.assert_close(aspp(features), expected, atol=1e-6, rtol=1e-5)


def test_heads_shapes_and_bad_arguments() -> None:
    fcn_head = FCNHead(64, 5).eval()
    assert fcn_head.block.conv.out_channels == 16  # in_channels // 4
    deeplab_head = DeepLabHead(64, 5, aspp_channels=8).eval()
    features = torch.randn(2, 64, 5, 6)
    with torch.no_grad():
        assert tuple(fcn_head(features).shape) == (2, 5, 5, 6)
        assert tuple(deeplab_head(features).shape) == (2, 5, 5, 6)
    with pytest.raises(ValueError, match="atrous_rates"):
        ASPP(8, atrous_rates=())
    with pytest.raises(ValueError, match="num_classes"):
        FCNHead(8, 0)
    with pytest.raises(ValueError, match="num_classes"):
        DilatedSegmenter(backbone=nn.Identity(), classifier=nn.Identity(), num_classes=1)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


def _small_segmenter(num_classes: int = 3) -> DilatedSegmenter:
    """A DeepLabV3 over the small backbone (c4: 32 ch at stride 16, c5: 64 ch at 32)."""
    torch.manual_seed(0)
    backbone = small_backbone(width=8, returned_layers=(3, 4))
    return DilatedSegmenter(
        backbone=backbone,
        classifier=DeepLabHead(64, num_classes, atrous_rates=(1, 2), aspp_channels=16),
        aux_classifier=FCNHead(32, num_classes),
        num_classes=num_classes,
    )


def _two_samples() -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    images = torch.zeros(2, 3, 32, 32)
    gt_maps = torch.zeros(2, 32, 32, dtype=torch.int64)
    images[0, 0, 4:20, 6:22] = 1.0
    gt_maps[0, 4:20, 6:22] = 1
    images[1, 2, 10:30, 2:16] = 1.0
    gt_maps[1, 10:30, 2:16] = 2
    gt_maps[1, :2] = 255
    return images, [{"semantic": m} for m in gt_maps]


def test_training_losses_are_weighted_cross_entropies_with_gradients() -> None:
    model = _small_segmenter().train()
    images, targets = _two_samples()
    torch.manual_seed(1)  # equal dropout masks in both forward passes
    losses = model(images, targets)
    assert set(losses) == {"loss_semantic", "loss_aux"}
    torch.manual_seed(1)
    logits, aux_logits = model.scores(_normalise(images), with_aux=True)
    gt = torch.stack([t["semantic"] for t in targets])
    torch.testing.assert_close(
        losses["loss_semantic"], F.cross_entropy(logits, gt, ignore_index=255)
    )
    expected_aux = 0.5 * F.cross_entropy(aux_logits, gt, ignore_index=255)
    torch.testing.assert_close(losses["loss_aux"], expected_aux)
    sum(losses.values()).backward()
    for name in (
        "classifier.score.weight",
        "aux_classifier.score.weight",
        "backbone.stem.0.weight",
    ):
        gradient = dict(model.named_parameters())[name].grad
        assert gradient is not None and torch.isfinite(gradient).all() and gradient.abs().sum() > 0


def test_resnet50_builders_train_step_and_eval_shapes() -> None:
    torch.manual_seed(0)
    model = deeplabv3_resnet(num_classes=4, aux=True).train()
    images = _images(2, 40, 48)
    targets = [{"semantic": torch.randint(0, 4, (40, 48))} for _ in range(2)]
    losses = model(images, targets)
    assert set(losses) == {"loss_semantic", "loss_aux"}
    sum(losses.values()).backward()
    assert all(torch.isfinite(loss) for loss in losses.values())
    assert model.backbone.conv1.weight.grad is not None
    fcn = fcn_resnet_dilated(num_classes=4).eval()
    assert fcn.aux_classifier is None and fcn.classifier.block.conv.out_channels == 512
    with torch.no_grad():
        prediction = fcn([_images(1, 33, 45)[0]])[0]
    assert tuple(prediction["semantic_logits"].shape) == (4, 33, 45)
    assert prediction["semantic"].dtype == torch.int64 and prediction["semantic"].shape == (33, 45)


def test_mixed_sizes_train_with_padding_and_predict_each_image_alone() -> None:
    model = _small_segmenter()
    images = [_images(1, 32, 40, seed=1)[0], _images(1, 24, 56, seed=2)[0]]
    targets = [{"semantic": torch.randint(0, 3, image.shape[-2:])} for image in images]
    losses = model.train()(images, targets)
    assert all(torch.isfinite(loss) for loss in losses.values())
    model.eval()
    with torch.no_grad():
        together = model(images)
        alone = [model([image])[0] for image in images]
    for joint, single, image in zip(together, alone, images, strict=True):
        assert joint["semantic_logits"].shape[-2:] == image.shape[-2:]
        assert torch.equal(joint["semantic_logits"], single["semantic_logits"])


def test_training_reduces_the_loss_on_one_batch() -> None:
    """The small backbone's c5 is only 1x1 on 32x32 images, so the loss plateaus near 0.8
    (object boundaries cannot be resolved); it must still fall well below its start."""
    model = _small_segmenter().train()
    images, targets = _two_samples()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.6 * losses[0], losses


def test_model_rejects_bad_inputs() -> None:
    model = _small_segmenter().train()
    images, _ = _two_samples()
    with pytest.raises(ValueError, match="targets"):
        model(images)
    with pytest.raises(ValueError, match="labels"):
        model(images, [{"semantic": torch.full((32, 32), 7)} for _ in range(2)])
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model.scores(torch.rand(3, 32, 32))


# --------------------------------------------------------------------------------------------
# Conversion from torchvision
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("aux", [False, True])
@pytest.mark.parametrize(("name", "num_classes"), [("fcn_resnet50", 3), ("deeplabv3_resnet50", 21)])
def test_converted_model_equals_torchvision(name: str, num_classes: int, aux: bool) -> None:
    tv_model = _torchvision_model(name, num_classes=num_classes, aux=aux)
    model = from_torchvision(tv_model)
    assert isinstance(model, DilatedSegmenter) and not model.training
    assert (model.aux_classifier is not None) == aux
    batch = _images(2, 64, 80)
    odd = [_images(1, 97, 130, seed=1)[0], _images(1, 64, 80, seed=2)[0]]  # sizes differ
    with torch.no_grad():
        expected = tv_model(_normalise(batch))["out"]  # (2, C, 64, 80)
        predictions = model(batch)
        expected_odd = [tv_model(_normalise(image)[None])["out"][0] for image in odd]
        predictions_odd = model(odd)
    torch.testing.assert_close(_stacked_logits(predictions), expected, atol=1e-4, rtol=0)
    assert len(expected.argmax(1).unique()) > 1  # not a trivial constant prediction
    for prediction, logits in zip(predictions, expected, strict=True):
        assert torch.equal(prediction["semantic"], logits.argmax(0))
    for prediction, logits in zip(predictions_odd, expected_odd, strict=True):
        torch.testing.assert_close(prediction["semantic_logits"], logits, atol=1e-4, rtol=0)
        assert torch.equal(prediction["semantic"], logits.argmax(0))
    if aux:  # the auxiliary head converts too (torchvision evaluates it; we only train it)
        with torch.no_grad():
            _, aux_logits = model.scores(_normalise(batch), with_aux=True)
            torch.testing.assert_close(aux_logits, tv_model(_normalise(batch))["aux"])


def test_converts_a_state_dict_loaded_from_a_file(tmp_path) -> None:
    source = _torchvision_model("deeplabv3_resnet50", num_classes=5, aux=True, seed=0)
    path = tmp_path / "deeplab.pth"
    torch.save(source.state_dict(), path)
    loaded = _torchvision_model("deeplabv3_resnet50", num_classes=5, aux=True, seed=7)
    loaded.load_state_dict(torch.load(path, weights_only=True))
    model = from_torchvision(loaded)
    images = _images(2, 48, 56, seed=3)
    with torch.no_grad():
        expected = source(_normalise(images))["out"]
        actual = _stacked_logits(model(images))
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=0)


def test_resnet101_converts_with_its_layout() -> None:
    tv_model = _torchvision_model("fcn_resnet101", num_classes=2, aux=False)
    model = from_torchvision(tv_model)
    assert len(model.backbone.layer3) == 23
    image = _images(1, 33, 41)
    with torch.no_grad():
        expected = tv_model(_normalise(image))["out"]
        actual = _stacked_logits(model(image))
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=0)


def test_conversion_keeps_mode_and_frozen_parameters() -> None:
    tv_model = _torchvision_model("fcn_resnet50", num_classes=3, aux=True).train()
    for parameter in tv_model.backbone.layer1.parameters():
        parameter.requires_grad_(False)
    model = from_torchvision(tv_model)
    assert model.training
    assert not any(p.requires_grad for p in model.backbone.layer1.parameters())
    assert all(p.requires_grad for p in model.backbone.layer2.parameters())
    images, targets = _two_samples()
    assert set(model(images, targets)) == {"loss_semantic", "loss_aux"}


def test_rejects_segmentation_models_without_a_resnet() -> None:
    tv_model = tv_segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None)
    with pytest.raises(ValueError, match="ResNet"):
        from_torchvision(tv_model)
    lraspp = tv_segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None)
    with pytest.raises(ValueError, match="cannot convert LRASPP"):
        from_torchvision(lraspp)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_conversion_keeps_the_device() -> None:
    tv_model = _torchvision_model("deeplabv3_resnet50", num_classes=4, aux=True).cuda()
    model = from_torchvision(tv_model)
    assert all(p.device.type == "cuda" for p in model.parameters())
    images = _images(2, 64, 80).cuda()
    with torch.no_grad():
        expected = tv_model(_normalise(images.cpu()).cuda())["out"]
        actual = _stacked_logits(model(images))
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=0)
