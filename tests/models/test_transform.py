import pytest
import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from structvision.models.detection.image_batch import ImageBatch
from structvision.models.detection.transform import DetectionTransform

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def make_sample(height: int, width: int, *, seed: int) -> tuple[torch.Tensor, dict]:
    """Random image with 3 boxes, masks and 2 keypoints per object."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(3, height, width, generator=gen)
    xy = torch.rand(3, 2, generator=gen) * torch.tensor([width / 2, height / 2])
    wh = 1 + torch.rand(3, 2, generator=gen) * torch.tensor([width / 2, height / 2])
    boxes = torch.cat([xy, xy + wh], dim=1)
    masks = (torch.rand(3, height, width, generator=gen) > 0.5).to(torch.uint8)
    keypoints = torch.rand(3, 2, 3, generator=gen) * torch.tensor([width, height, 2.0])
    labels = torch.tensor([1, 2, 3])
    return image, {"boxes": boxes, "masks": masks, "keypoints": keypoints, "labels": labels}


def make_pair(**kwargs) -> tuple[DetectionTransform, GeneralizedRCNNTransform]:
    ours = DetectionTransform(image_mean=MEAN, image_std=STD, **kwargs)
    theirs = GeneralizedRCNNTransform(
        kwargs["min_size"], kwargs["max_size"], MEAN, STD, kwargs.get("size_divisible", 32),
        fixed_size=kwargs.get("fixed_size"),
    )  # fmt: skip
    return ours, theirs


SIZES = [(50, 70), (63, 41), (40, 40), (17, 90)]


def assert_same(ours_out, theirs_out) -> None:
    (batch, our_targets), (image_list, tv_targets) = ours_out, theirs_out
    assert isinstance(batch, ImageBatch)
    assert torch.equal(batch.tensors, image_list.tensors)
    assert batch.image_sizes == [tuple(s) for s in image_list.image_sizes]
    assert all(isinstance(v, int) for size in batch.image_sizes for v in size)
    for ours_t, tv_t in zip(our_targets, tv_targets, strict=True):
        assert set(ours_t) == set(tv_t)
        for key in tv_t:
            assert ours_t[key].dtype == tv_t[key].dtype, key
            assert torch.equal(ours_t[key], tv_t[key]), key


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_size": 64, "max_size": 100},
        {"min_size": 37, "max_size": 1000, "size_divisible": 16},
        {"min_size": 64, "max_size": 100, "fixed_size": (48, 40)},
    ],
)
def test_eval_matches_torchvision(kwargs):
    ours, theirs = make_pair(**kwargs)
    ours.eval(), theirs.eval()
    samples = [make_sample(h, w, seed=i) for i, (h, w) in enumerate(SIZES)]
    images = [s[0] for s in samples]
    targets = [s[1] for s in samples]
    assert_same(ours(images, targets), theirs(images, targets))
    batch, none_targets = ours(images)
    assert none_targets is None
    assert torch.equal(batch.tensors, theirs(images)[0].tensors)


def test_train_random_size_matches_torchvision_under_same_seed():
    ours, theirs = make_pair(min_size=(24, 33, 48, 61), max_size=90, size_divisible=8)
    ours.train(), theirs.train()
    samples = [make_sample(h, w, seed=10 + i) for i, (h, w) in enumerate(SIZES)]
    images = [s[0] for s in samples]
    targets = [s[1] for s in samples]
    for seed in range(3):
        torch.manual_seed(seed)
        ours_out = ours(images, targets)
        torch.manual_seed(seed)
        assert_same(ours_out, theirs(images, targets))
    # The RNG is consumed the same way: the next draw after each call agrees too.
    torch.manual_seed(5)
    ours(images, targets)
    after_ours = torch.rand(1)
    torch.manual_seed(5)
    theirs(images, targets)
    assert torch.equal(after_ours, torch.rand(1))


def test_postprocess_matches_torchvision():
    ours, theirs = make_pair(min_size=64, max_size=100)
    ours.eval(), theirs.eval()
    gen = torch.Generator().manual_seed(0)
    detections = [
        {
            "boxes": torch.rand(5, 4, generator=gen) * 60,
            "keypoints": torch.rand(5, 3, 3, generator=gen) * 60,
            "scores": torch.rand(5, generator=gen),
        }
        for _ in range(2)
    ]
    image_sizes = [(64, 89), (64, 64)]
    original_sizes = [(50, 70), (33, 33)]
    expected = theirs.postprocess([dict(d) for d in detections], image_sizes, original_sizes)
    result = ours.postprocess(detections, image_sizes, original_sizes)
    for res, exp, det in zip(result, expected, detections, strict=True):
        assert torch.equal(res["boxes"], exp["boxes"])
        assert torch.equal(res["keypoints"], exp["keypoints"])
        assert res["scores"] is det["scores"]
    assert not torch.equal(result[0]["boxes"], detections[0]["boxes"])  # input left alone


def test_hand_computed_resize_and_padding():
    transform = DetectionTransform(
        min_size=50, max_size=1000, image_mean=[0.5] * 3, image_std=[0.25] * 3
    ).eval()
    image = torch.full((3, 100, 200), 0.75)
    target = {"boxes": torch.tensor([[10.0, 20.0, 110.0, 60.0]])}
    batch, (resized,) = transform([image], [target])
    assert batch.image_sizes == [(50, 100)]
    assert batch.tensors.shape == (1, 3, 64, 128)  # padded up to multiples of 32
    assert torch.allclose(batch.tensors[0, :, :50, :100], torch.ones(3, 50, 100))
    assert batch.tensors[0, :, 50:, :].abs().sum() == 0
    assert batch.tensors[0, :, :, 100:].abs().sum() == 0
    assert torch.equal(resized["boxes"], torch.tensor([[5.0, 10.0, 55.0, 30.0]]))
    assert torch.equal(target["boxes"], torch.tensor([[10.0, 20.0, 110.0, 60.0]]))  # untouched


def test_max_size_caps_long_side_and_empty_targets_work():
    transform = DetectionTransform(min_size=100, max_size=120, image_mean=MEAN, image_std=STD)
    transform.eval()
    image = torch.rand(3, 30, 90)
    empty = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "masks": torch.zeros(0, 30, 90, dtype=torch.uint8),
    }
    batch, (resized,) = transform([image], [empty])
    assert batch.image_sizes == [(40, 120)]
    assert resized["boxes"].shape == (0, 4) and resized["masks"].shape == (0, 40, 120)


def test_bad_inputs_raise_clear_errors():
    transform = DetectionTransform(min_size=32, max_size=64, image_mean=MEAN, image_std=STD)
    with pytest.raises(ValueError, match=r"images\[1\] must have shape \(C, H, W\)"):
        transform([torch.rand(3, 8, 8), torch.rand(8, 8)])
    with pytest.raises(TypeError, match=r"images\[0\]"):
        transform([torch.zeros(3, 8, 8, dtype=torch.uint8)])
    with pytest.raises(ValueError, match=r"targets\[0\]\['boxes'\] must have shape \(N, 4\)"):
        transform([torch.rand(3, 8, 8)], [{"boxes": torch.zeros(4)}])
    with pytest.raises(ValueError, match="one dict per image"):
        transform([torch.rand(3, 8, 8)], [])
    with pytest.raises(ValueError, match="image_mean and image_std"):
        DetectionTransform(min_size=32, max_size=64, image_mean=MEAN, image_std=STD[:2])
