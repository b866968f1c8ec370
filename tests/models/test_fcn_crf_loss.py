"""FCN trained from scribbles with the dense-CRF regularised loss (Tang et al. 2018)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from structvision.models.segmentation.fcn import crf_regularized_loss, fcn_small
from structvision.ops.crf import dense_crf_loss


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _scribbled_samples() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Two 32 x 32 images with a coloured box each; labels only on a few scribbled pixels."""
    generator = torch.Generator().manual_seed(0)
    images = 0.1 * torch.rand(2, 3, 32, 32, generator=generator)
    images[0, 0, 4:20, 6:26] = 1.0  # a red box, class 1
    images[1, 2, 10:30, 2:16] = 1.0  # a blue box, class 2
    scribbles = torch.full((2, 32, 32), 255, dtype=torch.int64)
    scribbles[0, 12, 10:22] = 1
    scribbles[1, 14:26, 8] = 2
    scribbles[:, 1, 2:30] = 0
    return list(images), [{"semantic": s} for s in scribbles]


def _model(**crf) -> torch.nn.Module:
    torch.manual_seed(0)
    # GroupNorm: train-mode logits equal eval-mode logits, so eval predictions give references
    return fcn_small(num_classes=3, variant="8s", width=4, norm="group", **crf)


def test_loss_dict_has_partial_ce_and_the_crf_term_on_unnormalised_images() -> None:
    images, targets = _scribbled_samples()
    model = _model(crf_loss_weight=0.7, crf_sxy=10.0, crf_srgb=20.0, crf_scale=1.0).eval()
    with torch.no_grad():
        logits = torch.stack([p["semantic_logits"] for p in model(images)])  # (2, 3, 32, 32)
    gt = torch.stack([t["semantic"] for t in targets])
    expected_ce = F.cross_entropy(logits, gt, ignore_index=255)
    expected_crf = 0.7 * dense_crf_loss(torch.stack(images), logits.softmax(1), sxy=10, srgb=20)
    losses = model.train()(images, targets)
    assert set(losses) == {"loss_semantic", "loss_crf"}
    torch.testing.assert_close(losses["loss_semantic"], expected_ce)
    torch.testing.assert_close(losses["loss_crf"], expected_crf)
    losses["loss_crf"].backward()
    assert model.score_fr.weight.grad.abs().sum() > 0
    # without the weight the loss dict is as before: partial cross-entropy only
    assert set(_model().train()(images, targets)) == {"loss_semantic"}


def test_half_scale_is_nearest_image_and_averaged_probabilities() -> None:
    """Hand reference for ``scale=0.5``: nearest downsampling keeps pixels ``(2i, 2j)``; the
    bilinear (align_corners=False) halving of the probabilities is a 2 x 2 average; ``sxy``
    halves with the grid."""
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 12, 16, generator=generator)
    logits = torch.randn(2, 4, 12, 16, generator=generator)
    loss = crf_regularized_loss(images, logits, weight=2.0, sxy=8.0, srgb=30.0, scale=0.5)
    reference = dense_crf_loss(
        images[:, :, ::2, ::2], F.avg_pool2d(logits.softmax(1), 2), sxy=4.0, srgb=30.0, weight=2.0
    )
    torch.testing.assert_close(loss, reference)


def test_padding_takes_no_part() -> None:
    """Images of different sizes are padded to 64 x 64 for the network; the CRF term of the
    batch equals the mean of each image's term on its own pixels (up to the lattice's
    approximation, which sees the extra, zero-valued points)."""
    generator = torch.Generator().manual_seed(2)
    images = [
        torch.rand(3, 40, 36, generator=generator),
        torch.rand(3, 32, 32, generator=generator),
    ]
    targets = [{"semantic": torch.zeros(i.shape[-2:], dtype=torch.int64)} for i in images]
    model = _model(crf_loss_weight=1.0, crf_sxy=6.0, crf_scale=1.0).eval()
    with torch.no_grad():
        per_image = [
            dense_crf_loss(image[None], p["semantic_logits"][None].softmax(1), sxy=6.0, srgb=15.0)
            for image, p in zip(images, model(images), strict=True)
        ]
        batch = model.train()(images, targets)["loss_crf"]
    torch.testing.assert_close(batch, torch.stack(per_image).mean(), rtol=1e-3, atol=0.0)


def test_crf_term_gradients_are_exact_in_float64() -> None:
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(1, 3, 6, 8, dtype=torch.float64, generator=generator)
    logits = torch.randn(1, 3, 6, 8, dtype=torch.float64, generator=generator, requires_grad=True)
    roi = torch.ones(1, 6, 8, dtype=torch.float64)
    roi[:, :, 6:] = 0
    for scale, roi_mask in ((1.0, None), (0.5, roi), (1.0, roi)):
        assert torch.autograd.gradcheck(
            lambda x, s=scale, r=roi_mask: crf_regularized_loss(
                images, x, roi_mask=r, weight=1.5, sxy=3.0, srgb=40.0, scale=s
            ),
            (logits,),
        )


@settings(max_examples=25, deadline=None)
@given(
    height=st.integers(6, 20),
    width=st.integers(6, 20),
    edge=st.floats(0.2, 0.8),
    colours=st.lists(st.integers(0, 255), min_size=6, max_size=6),
    seed=st.integers(0, 2**16),
)
def test_piecewise_constant_prediction_on_piecewise_constant_image_costs_almost_nothing(
    height, width, edge, colours, seed
) -> None:
    left, right = torch.tensor(colours[:3]) / 255.0, torch.tensor(colours[3:]) / 255.0
    assume(float(torch.dist(left, right)) * 255 >= 80)  # a real colour edge
    edge_col = max(1, min(width - 1, round(edge * width)))
    regions = torch.zeros(height, width, dtype=torch.int64)
    regions[:, edge_col:] = 1
    image = torch.where(regions.bool(), right[:, None, None], left[:, None, None])[None]
    perfect = 30.0 * F.one_hot(regions, 3).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
    noise = torch.randn(perfect.shape, generator=torch.Generator().manual_seed(seed))
    options = {"weight": 1.0, "sxy": 4.0, "srgb": 15.0}
    loss_perfect = crf_regularized_loss(image, perfect, **options)
    loss_noisy = crf_regularized_loss(image, perfect / 10 + 2.0 * noise, **options)
    assert 0.0 <= float(loss_perfect) < 1e-2
    assert float(loss_noisy) > 10 * float(loss_perfect) + 0.1


def test_bad_crf_options_raise() -> None:
    for bad in (
        {"crf_loss_weight": -1.0},
        {"crf_sxy": 0.0},
        {"crf_srgb": -2.0},
        {"crf_scale": 0.0},
        {"crf_scale": 1.5},
    ):
        with pytest.raises(ValueError, match="crf_"):
            fcn_small(num_classes=3, width=4, **bad)
