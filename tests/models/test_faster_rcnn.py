"""Faster R-CNN and Fast R-CNN assembled: parity with torchvision, training, input checks."""

from __future__ import annotations

import functools

import pytest
import torch
import torchvision

from structvision.convert import from_torchvision
from structvision.data.synthetic import ShapesDataset
from structvision.models.detection import (
    ConvFCHead,
    FastRCNN,
    SelectiveSearchProposer,
    TwoMLPHead,
    fast_rcnn_small,
    faster_rcnn_small_c4,
    faster_rcnn_small_fpn,
    keypoint_rcnn_small_fpn,
    mask_rcnn_small_fpn,
)
from structvision.structures import box_iou

TV = torchvision.models.detection


def _assert_same_detections(ours: list[dict], theirs: list[dict]) -> None:
    for a, b in zip(ours, theirs, strict=True):
        assert len(a["boxes"]) == len(b["boxes"]) > 0
        assert torch.equal(a["labels"], b["labels"])
        assert torch.allclose(a["boxes"], b["boxes"], atol=1e-3, rtol=0)
        assert torch.allclose(a["scores"], b["scores"], atol=1e-4, rtol=0)


def _tv_model(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    model = getattr(TV, name)(weights=None, weights_backbone=None, **kwargs).eval()
    model.roi_heads.score_thresh = 0.0  # random weights score low: keep detections to compare
    return model


@pytest.mark.parametrize(
    "name",
    [
        "fasterrcnn_resnet50_fpn",
        "fasterrcnn_resnet50_fpn_v2",
        "fasterrcnn_mobilenet_v3_large_fpn",
        "fasterrcnn_mobilenet_v3_large_320_fpn",
    ],
)
def test_converted_torchvision_model_gives_equal_detections(name):
    tv_model = _tv_model(name, min_size=128, max_size=160)  # non-default sizes carry over too
    ours = from_torchvision(tv_model)
    assert not ours.training
    images = [torch.rand(3, 120, 160), torch.rand(3, 90, 72)]
    with torch.no_grad():
        _assert_same_detections(ours(images), tv_model(images))


def test_converted_from_a_state_dict_file(tmp_path):
    original = _tv_model("fasterrcnn_resnet50_fpn", min_size=160, max_size=256, num_classes=5)
    torch.save(original.state_dict(), tmp_path / "detector.pth")
    rebuilt = _tv_model("fasterrcnn_resnet50_fpn", min_size=160, max_size=256, num_classes=5)
    rebuilt.load_state_dict(torch.load(tmp_path / "detector.pth", weights_only=True))
    ours = from_torchvision(rebuilt)
    assert ours.roi_heads.box_predictor.cls_score.out_features == 5
    images = [torch.rand(3, 128, 170)]
    with torch.no_grad():
        _assert_same_detections(ours(images), original(images))


def test_training_losses_equal_torchvision_with_the_same_seed():
    tv_model = _tv_model("fasterrcnn_mobilenet_v3_large_320_fpn", num_classes=4).train()
    ours = from_torchvision(tv_model)
    assert ours.training
    images = [torch.rand(3, 160, 200), torch.rand(3, 120, 150)]
    targets = [
        {
            "boxes": torch.tensor([[10.0, 20.0, 90.0, 110.0], [100.0, 30.0, 180.0, 100.0]]),
            "labels": torch.tensor([1, 3]),
        },
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    torch.manual_seed(7)
    theirs = tv_model(images, targets)
    torch.manual_seed(7)
    mine = ours(images, targets)
    assert mine.keys() == theirs.keys()
    for key in mine:
        assert torch.allclose(mine[key], theirs[key], atol=1e-5), key


def test_unsupported_models_are_named():
    with pytest.raises(ValueError, match="RetinaNet"):
        from_torchvision(TV.retinanet_resnet50_fpn(weights=None, weights_backbone=None))
    with pytest.raises(ValueError, match="ResNet"):
        from_torchvision(torchvision.models.resnet18())


def test_bad_targets_name_the_image_and_box():
    model = faster_rcnn_small_fpn(num_classes=3, width=8).train()
    images = [torch.rand(3, 64, 64)] * 2
    targets = [
        {"boxes": torch.tensor([[1.0, 1.0, 10.0, 10.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[5.0, 5.0, 5.0, 9.0]]), "labels": torch.tensor([2])},
    ]
    with pytest.raises(ValueError, match=r"targets\[1\]\['boxes'\]\[0\]"):
        model(images, targets)
    with pytest.raises(ValueError, match=r"images\[0\] must be \(3, H, W\)"):
        model.eval()([torch.rand(1, 64, 64)])


def _shapes_batch(num: int, size: int = 96):
    dataset = ShapesDataset(split="train", num_images=num, seed=5, image_size=size, max_objects=3)
    images, targets = zip(*(dataset[i] for i in range(num)), strict=True)
    return list(images), [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]


@pytest.mark.slow
@pytest.mark.parametrize("builder", [faster_rcnn_small_fpn, faster_rcnn_small_c4])
def test_overfits_one_batch_with_an_empty_image(builder):
    torch.manual_seed(0)
    images, targets = _shapes_batch(2, size=64)
    images.append(torch.rand(3, 64, 64))  # an image with no objects trains like any other
    targets.append({"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)})
    model = builder(num_classes=7, width=8, min_size=64, max_size=64)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    losses = []
    for _ in range(60):
        loss_dict = model(images, targets)
        loss = sum(loss_dict.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    with torch.no_grad():
        detections = model(images[:1])[0]
    gt = targets[0]
    iou = box_iou(gt["boxes"], detections["boxes"])  # (G, D)
    same_label = gt["labels"][:, None] == detections["labels"][None, :]
    assert ((iou > 0.5) & same_label).any(dim=1).float().mean() >= 0.5  # most objects found


@pytest.mark.parametrize(
    "builder",
    [
        faster_rcnn_small_fpn,
        mask_rcnn_small_fpn,
        functools.partial(keypoint_rcnn_small_fpn, num_keypoints=5),
    ],
)
def test_small_models_take_a_conv_box_head(builder):
    torch.manual_seed(0)
    assert isinstance(builder(num_classes=4, width=8).roi_heads.box_head, TwoMLPHead)
    model = builder(num_classes=4, width=8, fpn_channels=16, box_head="conv")
    head = model.roi_heads.box_head
    assert isinstance(head, ConvFCHead)
    convs = [m for m in head.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in head.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(16, 16, (3, 3))] * 4
    assert len(norms) == 4
    assert head(torch.rand(3, 16, 7, 7)).shape == (3, 256)  # the small models' representation
    with pytest.raises(ValueError, match="box_head must be one of"):
        builder(num_classes=4, width=8, box_head="transformer")
    own = TwoMLPHead(16 * 7 * 7, 256)  # a module of the caller's is used as given
    assert builder(num_classes=4, width=8, fpn_channels=16, box_head=own).roi_heads.box_head is own


def test_conv_box_head_trains_end_to_end():
    torch.manual_seed(0)
    images, targets = _shapes_batch(2, size=64)
    model = faster_rcnn_small_fpn(num_classes=7, width=8, min_size=64, max_size=64, box_head="conv")
    losses = model(images, targets)
    sum(losses.values()).backward()
    first_conv = model.roi_heads.box_head[0][0]
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0
    with torch.no_grad():
        detections = model.eval()(images)
    assert [set(d) for d in detections] == [{"boxes", "labels", "scores"}] * 2


def test_fast_rcnn_scales_external_proposals_with_the_image():
    model = fast_rcnn_small(num_classes=4, width=8, min_size=192, max_size=192, pooler="roi_align")
    seen = {}

    def capture(features, proposals, image_sizes, targets=None):
        seen["proposals"], seen["image_sizes"] = proposals, image_sizes
        return [], {}

    model.roi_heads.forward = capture
    proposals = torch.tensor([[10.0, 20.0, 50.0, 60.0]])
    model.train()(
        [torch.rand(3, 96, 96)],
        [{"boxes": proposals.clone(), "labels": torch.tensor([1]), "proposals": proposals}],
    )
    assert seen["image_sizes"] == [(192, 192)]
    assert torch.allclose(seen["proposals"][0], proposals * 2)


@pytest.mark.parametrize("pooler", ["roi_pool", "spp", "roi_align"])
def test_fast_rcnn_trains_and_predicts_with_each_pooler(pooler, tmp_path):
    torch.manual_seed(0)
    images, targets = _shapes_batch(2, size=64)
    model = fast_rcnn_small(
        num_classes=7, width=8, pooler=pooler, min_size=64, max_size=64, cache_dir=tmp_path
    )
    assert isinstance(model, FastRCNN) and isinstance(model.proposer, SelectiveSearchProposer)
    losses = model.train()(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg"}
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.roi_heads.parameters())
    assert len(list(tmp_path.rglob("*.safetensors"))) == 2  # proposals cached per image
    with torch.no_grad():
        detections = model.eval()(images)
    assert len(detections) == 2 and detections[0]["boxes"].shape[-1] == 4
