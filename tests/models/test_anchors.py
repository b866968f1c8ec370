import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList

from structvision.models.detection.anchors import AnchorGenerator, make_base_anchors
from structvision.models.detection.image_batch import ImageBatch

FPN_SIZES = ((32,), (64,), (128,), (256,), (512,))
FPN_RATIOS = ((0.5, 1.0, 2.0),) * 5


def run_both(sizes, ratios, padded_hw, feature_hws, *, dtype=torch.float32, num_images=2):
    tensors = torch.zeros(num_images, 3, *padded_hw)
    image_sizes = [padded_hw] * num_images
    features = [torch.zeros(num_images, 4, h, w, dtype=dtype) for h, w in feature_hws]
    ours = AnchorGenerator(sizes=sizes, aspect_ratios=ratios)(
        ImageBatch(tensors=tensors, image_sizes=image_sizes), features
    )
    theirs = TVAnchorGenerator(sizes, ratios)(ImageList(tensors, image_sizes), features)
    return ours, theirs


@pytest.mark.parametrize(
    ("sizes", "ratios", "padded_hw", "feature_hws"),
    [
        (FPN_SIZES, FPN_RATIOS, (96, 128), [(25, 33), (13, 17), (7, 9), (4, 5), (2, 3)]),
        (((32, 64, 128, 256, 512),), ((0.5, 1.0, 2.0),), (64, 96), [(5, 7)]),
        (((16, 40), (48,)), ((0.7, 1.3), (1.0, 3.0, 0.25)), (33, 47), [(11, 9), (3, 5)]),
    ],
)
def test_matches_torchvision(sizes, ratios, padded_hw, feature_hws):
    ours, theirs = run_both(sizes, ratios, padded_hw, feature_hws)
    assert len(ours) == len(theirs) == 2
    for our_anchors, tv_anchors in zip(ours, theirs, strict=True):
        assert our_anchors.dtype == tv_anchors.dtype
        assert torch.equal(our_anchors, tv_anchors)


def test_matches_torchvision_in_float64_and_half_and_caches_per_dtype():
    args = (FPN_SIZES[:2], FPN_RATIOS[:2], (64, 64), [(8, 8), (3, 3)])
    for dtype in (torch.float64, torch.float16):
        ours, theirs = run_both(*args, dtype=dtype)
        assert ours[0].dtype == dtype
        assert torch.equal(ours[0], theirs[0])
    generator = AnchorGenerator(sizes=((32,),), aspect_ratios=((1.0,),))
    first = generator.base_anchors(dtype=torch.float32, device=torch.device("cpu"))
    again = generator.base_anchors(dtype=torch.float32, device=torch.device("cpu"))
    assert first is again


def test_hand_computed_base_anchors_and_order():
    base = make_base_anchors(sizes=(32, 64), aspect_ratios=(0.5, 1.0))
    # ratio 0.5: w = s * sqrt(2), h = s / sqrt(2); 32*sqrt(2)/2 = 22.63 -> 23, 32/sqrt(2)/2 -> 11
    expected = torch.tensor(
        [
            [-23.0, -11.0, 23.0, 11.0],
            [-45.0, -23.0, 45.0, 23.0],
            [-16.0, -16.0, 16.0, 16.0],
            [-32.0, -32.0, 32.0, 32.0],
        ]
    )
    assert torch.equal(base, expected)

    generator = AnchorGenerator(sizes=((8,),), aspect_ratios=((1.0,),))
    batch = ImageBatch(tensors=torch.zeros(1, 3, 32, 48), image_sizes=[(30, 45)])
    (anchors,) = generator(batch, [torch.zeros(1, 1, 2, 3)])  # stride (16, 16)
    centres = [(x, y) for y in (0, 16) for x in (0, 16, 32)]  # row-major over (y, x)
    expected = torch.tensor([[x - 4.0, y - 4.0, x + 4.0, y + 4.0] for x, y in centres])
    assert torch.equal(anchors, expected)


def test_num_anchors_per_location_and_errors():
    generator = AnchorGenerator(sizes=((16, 32), (64,)), aspect_ratios=((1.0,), (0.5, 1.0, 2.0)))
    assert generator.num_anchors_per_location() == [2, 3]
    batch = ImageBatch(tensors=torch.zeros(1, 3, 32, 32), image_sizes=[(32, 32)])
    with pytest.raises(ValueError, match="one tensor per anchor level"):
        generator(batch, [torch.zeros(1, 1, 4, 4)])
    with pytest.raises(ValueError, match="one tuple per feature level"):
        AnchorGenerator(sizes=((16,),), aspect_ratios=((1.0,), (2.0,)))
    with pytest.raises(ValueError, match="image_sizes must have one"):
        ImageBatch(tensors=torch.zeros(2, 3, 8, 8), image_sizes=[(8, 8)])
