"""Mask R-CNN: mask targets and loss, torchvision parity (v1, v2, training), empty images,
the RoIAlign / RoIPool switch, and overfitting one batch."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.detection import roi_heads as tv_roi_heads

from structvision.convert import from_torchvision
from structvision.data.synthetic import ShapesDataset
from structvision.models.detection import (
    MaskRCNN,
    mask_rcnn_loss,
    mask_rcnn_small_fpn,
    mask_targets,
)
from structvision.models.detection.mask_rcnn import select_class_masks
from structvision.ops import MultiScaleRoIAlign, MultiScaleRoIPool

TV = torchvision.models.detection


# --------------------------------------------------------------------------- targets and loss


def test_mask_targets_hand_case_proposal_covering_half_the_object():
    # a 28 x 28 square object in the top-left corner of a 48 x 64 image
    gt_masks = torch.zeros(2, 48, 64, dtype=torch.uint8)
    gt_masks[0, :28, :28] = 1  # mask 1 stays empty
    # the proposal spans x 14..42: its left half covers the object's right half
    proposals = torch.tensor([[14.0, 0.0, 42.0, 28.0], [14.0, 0.0, 42.0, 28.0]])
    targets = mask_targets(gt_masks, proposals, torch.tensor([0, 1]), 28)
    # 1-px bins, one sample each at (14 + j + 0.5, i + 0.5); aligned=False reads pixel x at
    # position x, so the sample at 27.5 is halfway between the last object pixel and background
    cols = torch.tensor([1.0] * 13 + [0.5] + [0.0] * 14)
    rows = torch.tensor([1.0] * 27 + [0.5])
    assert targets.shape == (2, 28, 28)
    assert torch.allclose(targets[0], rows[:, None] * cols[None, :], atol=1e-6, rtol=0)
    assert torch.equal(targets[1], torch.zeros(28, 28))  # the matched index picks the mask


def test_mask_targets_equal_torchvision_project_masks_on_boxes():
    gen = torch.Generator().manual_seed(0)
    gt_masks = (torch.rand(3, 50, 70, generator=gen) > 0.5).to(torch.uint8)
    corners = torch.rand(20, 2, generator=gen) * 40
    proposals = torch.cat((corners, corners + 1 + torch.rand(20, 2, generator=gen) * 40), dim=1)
    matched = torch.randint(0, 3, (20,), generator=gen)
    expected = tv_roi_heads.project_masks_on_boxes(gt_masks, proposals, matched, 28)
    assert torch.equal(mask_targets(gt_masks, proposals, matched, 28), expected)


def test_mask_loss_uses_only_the_matched_class():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 4, 6, 6, generator=gen, requires_grad=True)
    targets = torch.rand(3, 6, 6, generator=gen)
    labels = torch.tensor([2, 1, 3])
    loss = mask_rcnn_loss(logits, targets, labels)
    own = logits[torch.arange(3), labels]  # (3, 6, 6)
    expected = -(targets * F.logsigmoid(own) + (1 - targets) * F.logsigmoid(-own)).mean()
    assert torch.allclose(loss, expected, atol=1e-6)
    loss.backward()
    gradient_used = logits.grad.abs().sum(dim=(2, 3)) > 0  # (3, 4)
    assert torch.equal(gradient_used, F.one_hot(labels, 4).bool())
    # other classes' maps do not matter at all
    changed = logits.detach().clone()
    changed[torch.arange(3), (labels + 1) % 4] += 100.0
    assert torch.equal(mask_rcnn_loss(changed, targets, labels), loss.detach())


def test_mask_loss_without_positives_is_zero_and_differentiable():
    logits = torch.randn(0, 4, 28, 28, requires_grad=True)
    loss = mask_rcnn_loss(logits, torch.zeros(0, 28, 28), torch.zeros(0, dtype=torch.int64))
    assert loss.item() == 0.0 and loss.requires_grad
    with pytest.raises(ValueError, match="targets and labels must have shapes"):
        mask_rcnn_loss(torch.zeros(2, 4, 28, 28), torch.zeros(2, 14, 14), torch.zeros(2).long())


def test_select_class_masks_picks_each_detections_class():
    logits = torch.randn(3, 5, 28, 28, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([4, 0, 2])
    probabilities = select_class_masks(logits, labels)
    assert probabilities.shape == (3, 1, 28, 28)
    for k, label in enumerate(labels.tolist()):
        expected = 1 / (1 + torch.exp(-logits[k, label]))
        assert torch.allclose(probabilities[k, 0], expected, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- torchvision parity


def _decisive(model: torch.nn.Module) -> torch.nn.Module:
    """Re-draw the random heads so that proposals are anchors with spread-out objectness and
    detections are proposal-sized boxes with spread-out scores (not slivers all at ~1/C)."""
    with torch.no_grad():
        model.rpn.head.cls_logits.weight.normal_(0, 0.05)
        model.rpn.head.bbox_pred.weight.normal_(0, 0.002)
        model.roi_heads.box_predictor.cls_score.weight.normal_(0, 0.004)
        model.roi_heads.box_predictor.bbox_pred.weight.normal_(0, 0.002)
    model.roi_heads.score_thresh = 0.0  # keep detections to compare
    return model


def _tv_model(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    settings = {"min_size": 96, "max_size": 128, "rpn_post_nms_top_n_test": 200}
    model = getattr(TV, name)(weights=None, weights_backbone=None, **{**settings, **kwargs})
    return _decisive(model.eval())


def _assert_same_instances(ours: list[dict], theirs: list[dict]) -> None:
    for a, b in zip(ours, theirs, strict=True):
        assert len(a["boxes"]) == len(b["boxes"]) > 0
        assert torch.equal(a["labels"], b["labels"])
        assert torch.allclose(a["boxes"], b["boxes"], atol=1e-3, rtol=0)
        assert torch.allclose(a["scores"], b["scores"], atol=1e-4, rtol=0)
        assert a["masks"].shape == b["masks"].shape
        assert torch.allclose(a["masks"], b["masks"], atol=1e-4, rtol=0)


IMAGES = [(96, 128), (120, 100)]


@pytest.mark.parametrize("name", ["maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2"])
def test_converted_mask_rcnn_gives_equal_detections_and_masks(name):
    tv_model = _tv_model(name, box_detections_per_img=10)
    ours = from_torchvision(tv_model)
    assert isinstance(ours, MaskRCNN) and not ours.training
    torch.manual_seed(1)
    images = [torch.rand(3, h, w) for h, w in IMAGES]
    with torch.no_grad():
        mine, theirs = ours(images), tv_model(images)
    _assert_same_instances(mine, theirs)
    for detection, (h, w) in zip(mine, IMAGES, strict=True):
        masks = detection["masks"]
        assert masks.shape == (10, 1, h, w) and masks.dtype == torch.float32
        assert 0.0 < (masks > 0.5).float().mean() < 0.5  # real masks, not empty or full


def test_converted_mask_rcnn_from_a_state_dict_file(tmp_path):
    original = _tv_model("maskrcnn_resnet50_fpn", num_classes=5, box_detections_per_img=8)
    torch.save(original.state_dict(), tmp_path / "mask_rcnn.pth")
    rebuilt = _tv_model("maskrcnn_resnet50_fpn", num_classes=5, box_detections_per_img=8)
    rebuilt.load_state_dict(torch.load(tmp_path / "mask_rcnn.pth", weights_only=True))
    ours = from_torchvision(rebuilt)
    assert ours.mask_branch.predictor.mask_fcn_logits.out_channels == 5
    images = [torch.rand(3, 100, 90)]
    with torch.no_grad():
        _assert_same_instances(ours(images), original(images))


def _mask_targets_for(images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """One image with two objects (boxes from their masks), one image with none."""
    masks = torch.zeros(2, *images[0].shape[-2:], dtype=torch.uint8)
    masks[0, 10:70, 20:90] = 1
    masks[1, 40:95, 60:120] = 1
    masks[1, 60:80, 80:100] = 0  # a hole
    height, width = images[1].shape[-2:]
    return [
        {
            "boxes": torch.tensor([[20.0, 10.0, 90.0, 70.0], [60.0, 40.0, 120.0, 95.0]]),
            "labels": torch.tensor([1, 3]),
            "masks": masks,
        },
        {
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "masks": torch.zeros(0, height, width, dtype=torch.uint8),
        },
    ]


def test_training_losses_equal_torchvision_with_the_same_seed():
    tv_model = _tv_model(
        "maskrcnn_resnet50_fpn",
        num_classes=4,
        rpn_post_nms_top_n_train=100,
        box_batch_size_per_image=32,
    ).train()
    ours = from_torchvision(tv_model)
    assert ours.training
    images = [torch.rand(3, 100, 128), torch.rand(3, 90, 110)]
    targets = _mask_targets_for(images)
    torch.manual_seed(7)
    theirs = tv_model(images, targets)
    torch.manual_seed(7)
    mine = ours(images, targets)
    assert mine.keys() == theirs.keys()
    assert mine["loss_mask"] > 0
    for key in mine:
        assert torch.allclose(mine[key], theirs[key], atol=1e-5), key


# --------------------------------------------------------------------------- small models


def test_images_without_objects_train():
    torch.manual_seed(0)
    model = mask_rcnn_small_fpn(num_classes=4, width=8, min_size=96, max_size=128).train()
    images = [torch.rand(3, 100, 128), torch.rand(3, 90, 110)]
    losses = model(images, _mask_targets_for(images))
    assert set(losses) == {
        "loss_objectness",
        "loss_rpn_box_reg",
        "loss_classifier",
        "loss_box_reg",
        "loss_mask",
    }
    assert losses["loss_mask"] > 0
    sum(losses.values()).backward()
    assert model.mask_branch.predictor.mask_fcn_logits.weight.grad.abs().sum() > 0

    model.zero_grad()
    empty_only = model(images[1:], _mask_targets_for(images)[1:])  # no positives at all
    assert empty_only["loss_mask"].item() == 0.0
    sum(empty_only.values()).backward()
    assert all(torch.isfinite(v) for v in empty_only.values())


def test_eval_without_detections_gives_empty_masks():
    model = mask_rcnn_small_fpn(num_classes=3, width=8, box_score_thresh=1.0).eval()
    with torch.no_grad():
        (detection,) = model([torch.rand(3, 64, 80)])
    assert detection["boxes"].shape == (0, 4)
    assert detection["masks"].shape == (0, 1, 64, 80)


def test_training_targets_need_masks_of_the_image_size():
    model = mask_rcnn_small_fpn(num_classes=3, width=8).train()
    target = {"boxes": torch.tensor([[1.0, 1.0, 20.0, 20.0]]), "labels": torch.tensor([1])}
    with pytest.raises(ValueError, match=r"targets\[0\]\['masks'\] must have shape \(1, 64, 64\)"):
        model([torch.rand(3, 64, 64)], [target])
    target["masks"] = torch.zeros(1, 32, 32, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"got \(1, 32, 32\)"):
        model([torch.rand(3, 64, 64)], [target])


def test_mask_pooler_switches_box_and_mask_pooling():
    align = mask_rcnn_small_fpn(num_classes=3, width=8)
    pool = mask_rcnn_small_fpn(num_classes=3, width=8, mask_pooler="pool")
    assert type(align.roi_heads.box_roi_pool) is MultiScaleRoIAlign
    assert type(align.mask_branch.roi_pool) is MultiScaleRoIAlign
    assert isinstance(pool.roi_heads.box_roi_pool, MultiScaleRoIPool)
    assert isinstance(pool.mask_branch.roi_pool, MultiScaleRoIPool)
    assert pool.mask_branch.roi_pool.output_size == (14, 14)
    with pytest.raises(ValueError, match="mask_pooler must be one of"):
        mask_rcnn_small_fpn(num_classes=3, mask_pooler="warp")


@pytest.mark.parametrize("mask_pooler", ["align", "pool"])
def test_overfits_one_batch(mask_pooler):
    torch.manual_seed(0)
    dataset = ShapesDataset(
        split="train",
        num_images=2,
        seed=3,
        image_size=64,
        max_objects=2,
        min_object_size=0.4,  # large objects: little of the loss is the soft targets' edges
        max_object_size=0.7,
        clutter=0,
    )
    images, targets = zip(*(dataset[i] for i in range(2)), strict=True)
    targets = [{key: t[key] for key in ("boxes", "labels", "masks")} for t in targets]
    model = mask_rcnn_small_fpn(
        num_classes=7,
        width=8,
        min_size=64,
        max_size=64,
        mask_pooler=mask_pooler,
        box_batch_size_per_image=32,
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9)
    mask_losses = []
    for _ in range(60):
        losses = model(list(images), targets)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        mask_losses.append(float(losses["loss_mask"].detach()))
    assert all(torch.isfinite(torch.tensor(mask_losses)))
    assert min(mask_losses[-5:]) < mask_losses[0] / 4  # about 0.9 -> 0.12
    assert min(mask_losses[-5:]) < 0.2  # far below the 0.69 of predicting 0.5 everywhere


def test_mask_rescoring_ranks_by_box_score_times_maskness():
    from structvision.models.detection.mask_rcnn import paste_detection_masks

    # two boxes covering a whole 8 x 8 image, so each 28 x 28 mask pastes onto all its pixels
    vague = torch.full((1, 28, 28), 0.6)  # claims every pixel at 0.6: maskness 0.6
    crisp = torch.zeros(1, 28, 28)
    crisp[:, :, :14] = 0.9  # claims the left half at 0.9: maskness 0.9
    detections = [
        {
            "boxes": torch.tensor([[0.0, 0.0, 8.0, 8.0], [0.0, 0.0, 8.0, 8.0]]),
            "labels": torch.tensor([1, 2]),
            "scores": torch.tensor([0.8, 0.7]),
            "masks": torch.stack([vague, crisp]),
        }
    ]
    plain = paste_detection_masks([dict(detections[0])], [(8, 8)])[0]
    assert torch.equal(plain["scores"], detections[0]["scores"]) and "box_scores" not in plain
    ranked = paste_detection_masks([dict(detections[0])], [(8, 8)], rescore=True)[0]
    torch.testing.assert_close(ranked["scores"], torch.tensor([0.7 * 0.9, 0.8 * 0.6]))
    torch.testing.assert_close(ranked["box_scores"], torch.tensor([0.7, 0.8]))
    assert torch.equal(ranked["labels"], torch.tensor([2, 1]))
    assert torch.equal(ranked["masks"], plain["masks"].flip(0))
    empty = {k: v[:0] for k, v in detections[0].items()}
    nothing = paste_detection_masks([empty], [(8, 8)], rescore=True)[0]
    assert nothing["scores"].shape == (0,) and nothing["masks"].shape == (0, 1, 8, 8)


def test_small_mask_model_rescores_torchvision_layout_does_not():
    from structvision.models.detection import mask_rcnn_resnet50_fpn

    small = mask_rcnn_small_fpn(num_classes=3, width=8, fpn_channels=16)
    torchvision_layout = mask_rcnn_resnet50_fpn(num_classes=3)
    assert small.mask_branch.rescore and not torchvision_layout.mask_branch.rescore
    # and places masks where its targets were sampled; torchvision's layout as torchvision
    assert small.mask_branch.paste == "where_sampled"
    assert torchvision_layout.mask_branch.paste == "torchvision"
    with pytest.raises(ValueError, match="mask paste must be one of"):
        mask_rcnn_small_fpn(num_classes=3, width=8, fpn_channels=16, mask_paste="nearest")


def test_model_pastes_masks_where_sampled_at_its_input_scale(monkeypatch):
    # the model resizes a 64-pixel image to 128 pixels: its masks are pasted with that scale
    mask_rcnn_module = importlib.import_module("structvision.models.detection.mask_rcnn")
    seen = []

    def paste(masks, boxes, size, *, scale):
        seen.append((size, scale))
        return masks.new_zeros((len(masks), *size))

    monkeypatch.setattr(mask_rcnn_module, "paste_masks_where_sampled", paste)
    model = mask_rcnn_small_fpn(num_classes=3, width=8, fpn_channels=16).eval()
    model.roi_heads.score_thresh = 0.0
    with torch.no_grad():
        [result] = model([torch.rand(3, 64, 64)])
    assert seen == [((64, 64), (2.0, 2.0))] and result["masks"].shape[-2:] == (64, 64)
    with pytest.raises(ValueError, match="input_sizes"):
        mask_rcnn_module.paste_detection_masks([result], [(64, 64)], paste="where_sampled")
