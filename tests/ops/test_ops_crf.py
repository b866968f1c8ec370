"""Dense CRF: mean field against brute-force dense kernels, properties, layer and losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from structvision.ops.crf import (
    DenseCRF,
    bilateral_features,
    dense_crf,
    dense_crf_loss,
    exact_gaussian_filter,
    gaussian_features,
    mean_field,
    partial_cross_entropy,
    symmetric_normalized,
)


def _two_colour_image(*, height: int, width: int, edge_x: int) -> torch.Tensor:
    """(3, H, W) float image: dark red left of column ``edge_x``, light blue from it on."""
    image = torch.empty(3, height, width)
    image[:, :, :edge_x] = torch.tensor([0.6, 0.1, 0.1])[:, None, None]
    image[:, :, edge_x:] = torch.tensor([0.2, 0.5, 0.9])[:, None, None]
    return image


def _noisy_probs(*, image: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    """(C, H, W) probabilities: weakly favour label 0 left / 1 right, with strong noise."""
    generator = torch.Generator().manual_seed(seed)
    _, height, width = image.shape
    truth = (image[2] > 0.5).long()  # (H, W)
    logits = torch.randn(num_classes, height, width, generator=generator) * 1.2
    logits += 0.8 * F.one_hot(truth, num_classes).permute(2, 0, 1).float()
    return logits.softmax(dim=0)


def _reference_kernels(image: torch.Tensor, **params: float) -> list[torch.Tensor]:
    """Explicit (N, N) Gaussian and bilateral kernels, pixel loops, pydensecrf's features."""
    _, height, width = image.shape
    rows = []
    for y in range(height):
        for x in range(width):
            r, g, b = (image[:, y, x].double() * 255.0).tolist()
            rows.append([x, y, r, g, b])
    pix = torch.tensor(rows, dtype=torch.float64)  # (N, 5)
    pos_sq = torch.cdist(pix[:, :2], pix[:, :2]).square()
    col_sq = torch.cdist(pix[:, 2:], pix[:, 2:]).square()
    gaussian = torch.exp(-pos_sq / (2 * params["gaussian_sxy"] ** 2))
    bilateral = torch.exp(
        -pos_sq / (2 * params["bilateral_sxy"] ** 2) - col_sq / (2 * params["bilateral_srgb"] ** 2)
    )
    return [gaussian, bilateral]


def _reference_mean_field(
    unary: torch.Tensor, kernels: list[torch.Tensor], weights: list[float], iterations: int
) -> torch.Tensor:
    """Krähenbühl-Koltun Algorithm 1 written out: (N, C) unary, Potts, symmetric normalisation."""
    q = torch.softmax(-unary, dim=1)
    normalised = []
    for kernel in kernels:
        inv_sqrt_degree = 1.0 / torch.sqrt(kernel.sum(1))  # (N,)
        normalised.append(inv_sqrt_degree[:, None] * kernel * inv_sqrt_degree[None, :])
    for _ in range(iterations):
        energy = unary.clone()
        for kernel, weight in zip(normalised, weights, strict=True):
            for label in range(unary.shape[1]):
                others = [k for k in range(unary.shape[1]) if k != label]
                # Potts: penalty w * k(i, j) for every neighbour j with a different label
                energy[:, label] += weight * (kernel @ q[:, others].sum(1))
        q = torch.softmax(-energy, dim=1)
    return q


PARAMS = {
    "gaussian_sxy": 3.0,
    "gaussian_weight": 3.0,
    "bilateral_sxy": 6.0,
    "bilateral_srgb": 13.0,
    "bilateral_weight": 10.0,
}


def test_mean_field_update_is_exact_with_brute_force_filters() -> None:
    image = _two_colour_image(height=6, width=7, edge_x=3)
    probs = _noisy_probs(image=image, num_classes=3, seed=0).double()
    unary = -probs.clamp_min(1e-5).log().flatten(1).T.contiguous()  # (N, C)
    kernels = _reference_kernels(image, **PARAMS)
    expected = _reference_mean_field(unary, kernels, [3.0, 10.0], iterations=4)
    filters = [symmetric_normalized(lambda v, k=k: k @ v) for k in kernels]
    logits = mean_field(unary[None], filters=filters, weights=[3.0, 10.0], iterations=4)
    assert torch.allclose(logits[0].softmax(dim=1), expected, atol=1e-10)
    # a Potts compatibility matrix w * (1 - I) gives the same marginals as the default -I
    potts = 1.0 - torch.eye(3, dtype=torch.float64)
    with_matrix = mean_field(
        unary[None], filters=filters, weights=[3.0, 10.0], compatibility=potts, iterations=4
    )
    assert torch.allclose(with_matrix[0].softmax(dim=1), expected, atol=1e-10)


def test_dense_crf_matches_brute_force_dense_mean_field() -> None:
    # Lattice vs exact Gaussians (12x12 image, 3 labels, 10 iterations; the CRF changes 52% of
    # the unary's argmax). Measured: argmax agreement 100%, max |dQ| 3e-4, mean 3e-6; the
    # bounds leave room for the lattice approximation.
    image = _two_colour_image(height=12, width=12, edge_x=5)
    image = image + 0.05 * torch.rand(image.shape, generator=torch.Generator().manual_seed(0))
    image = image.clamp(0, 1)
    probs = _noisy_probs(image=image, num_classes=3, seed=1).double()
    ours = dense_crf(image, probs, iterations=10, **PARAMS)  # (C, H, W)
    unary = -probs.clamp_min(1e-5).log().flatten(1).T  # (N, C)
    kernels = _reference_kernels(image, **PARAMS)
    expected = _reference_mean_field(unary, kernels, [3.0, 10.0], iterations=10)
    expected = expected.T.reshape(probs.shape)
    agreement = (ours.argmax(0) == expected.argmax(0)).double().mean()
    assert agreement >= 0.95
    assert (ours - expected).abs().max() < 0.02
    assert (ours - expected).abs().mean() < 1e-3
    assert torch.allclose(ours.sum(0), torch.ones(12, 12, dtype=torch.float64))


def test_kernel_features_have_pydensecrf_meaning() -> None:
    # (x / sxy, y / sxy[, rgb / srgb]) with x the column, colours in 0-255: the exact Gaussian
    # over our features equals the kernels written out pixel by pixel.
    image = _two_colour_image(height=5, width=7, edge_x=3)
    image[1, 2, 4] = 0.25  # one odd pixel so that colour and position orders differ
    gaussian, bilateral = _reference_kernels(image, **PARAMS)
    values = torch.rand(1, 35, 2, dtype=torch.float64)
    pos = gaussian_features(batch_size=1, height=5, width=7, sxy=3.0, device="cpu")
    rgb255 = image.permute(1, 2, 0)[None] * 255.0
    col = bilateral_features(rgb255, sxy=6.0, srgb=13.0)
    assert torch.allclose(exact_gaussian_filter(pos.double())(values)[0], gaussian @ values[0])
    assert torch.allclose(exact_gaussian_filter(col.double())(values)[0], bilateral @ values[0])


def test_uniform_unary_is_segmented_along_the_colour_edge() -> None:
    # Uniform unary except one seed column per label at the image borders; the colour edge is
    # off-centre (column 9 of 24), and the CRF must put the label boundary exactly there.
    height, width, edge_x = 10, 24, 9
    image = _two_colour_image(height=height, width=width, edge_x=edge_x)
    probs = torch.full((2, height, width), 0.5)
    probs[:, :, 0] = torch.tensor([0.7, 0.3])[:, None]
    probs[:, :, -1] = torch.tensor([0.3, 0.7])[:, None]
    marginals = dense_crf(image, probs, iterations=10, bilateral_sxy=20.0)
    expected = torch.zeros(height, width, dtype=torch.long)
    expected[:, edge_x:] = 1
    assert torch.equal(marginals.argmax(0), expected)


def test_batched_and_uint8_inputs_agree_with_single_float_inputs() -> None:
    images = [
        _two_colour_image(height=8, width=9, edge_x=e) for e in (3, 6)
    ]  # float (3, H, W), exact multiples of 1/255 after rounding below
    images = [(img * 255).round() / 255 for img in images]
    probs = [_noisy_probs(image=img, num_classes=4, seed=s) for s, img in enumerate(images)]
    batched = dense_crf(torch.stack(images), torch.stack(probs), **PARAMS)  # (2, C, H, W)
    for img, prob, out in zip(images, probs, batched, strict=True):
        single = dense_crf(img, prob, **PARAMS)
        assert torch.allclose(out, single, atol=1e-5)
        uint8_hwc = (img * 255).round().to(torch.uint8).permute(1, 2, 0)
        assert torch.allclose(dense_crf(uint8_hwc, prob, **PARAMS), single, atol=1e-5)


def test_dense_crf_bad_inputs_raise() -> None:
    image = _two_colour_image(height=4, width=5, edge_x=2)
    with pytest.raises(ValueError, match="probs"):
        dense_crf(image, torch.rand(2, 4, 4))
    with pytest.raises(ValueError, match="image"):
        dense_crf(torch.zeros(4, 5, 3), torch.rand(2, 4, 5))  # float must be (3, H, W)
    with pytest.raises(ValueError, match="compatibility"):
        dense_crf(image, torch.rand(2, 4, 5), compatibility=torch.eye(3))


def test_dense_crf_layer_matches_inference_and_gradients_flow() -> None:
    torch.manual_seed(0)
    image = _two_colour_image(height=8, width=10, edge_x=4)[None]  # (1, 3, H, W)
    logits = torch.randn(1, 3, 8, 10, requires_grad=True)
    layer = DenseCRF(num_classes=3, iterations=5, bilateral_sxy=6.0)
    refined = layer(image, logits)  # (1, 3, H, W)
    # Potts initialisation = pydensecrf-style inference on softmax(logits)
    expected = dense_crf(
        image[0], logits.detach()[0].softmax(0), iterations=5, bilateral_sxy=6.0, min_prob=0.0
    )
    assert torch.allclose(refined[0].softmax(0), expected, atol=1e-5)
    target = torch.zeros(1, 8, 10, dtype=torch.long)
    target[:, :, 4:] = 1
    F.cross_entropy(refined, target).backward()
    for name, grad in [
        ("logits", logits.grad),
        ("log_gaussian_weight", layer.log_gaussian_weight.grad),
        ("log_bilateral_weight", layer.log_bilateral_weight.grad),
        ("compatibility", layer.compatibility.grad),
    ]:
        assert grad is not None and torch.isfinite(grad).all(), name
        assert grad.abs().sum() > 0, name
    # zero iterations: the layer returns log_softmax(logits)
    layer.iterations = 0
    assert torch.allclose(layer(image, logits), logits.log_softmax(1), atol=1e-6)


def test_dense_crf_loss_prefers_segmentations_aligned_with_colour_edges() -> None:
    image = _two_colour_image(height=10, width=16, edge_x=6)[None]  # (1, 3, H, W)
    aligned = torch.zeros(1, 2, 10, 16)
    aligned[:, 0, :, :6] = 1
    aligned[:, 1, :, 6:] = 1
    misaligned = torch.zeros(1, 2, 10, 16)
    misaligned[:, 0, :, :10] = 1
    misaligned[:, 1, :, 10:] = 1
    loss_aligned = dense_crf_loss(image, aligned, sxy=5.0)
    loss_misaligned = dense_crf_loss(image, misaligned, sxy=5.0)
    assert 0 <= loss_aligned < loss_misaligned
    # one label everywhere has zero Potts energy; soft segmentations are differentiable
    constant = torch.zeros(1, 2, 10, 16)
    constant[:, 0] = 1
    assert dense_crf_loss(image, constant, sxy=5.0).abs() < 1e-6
    soft = torch.rand(1, 2, 10, 16).softmax(1).requires_grad_(True)
    roi = torch.ones(1, 10, 16)
    roi[:, :, :2] = 0
    dense_crf_loss(image, soft, sxy=5.0, weight=2.0, roi_mask=roi).backward()
    assert torch.isfinite(soft.grad).all() and soft.grad.abs().sum() > 0
    assert torch.all(soft.grad[:, :, :, :2] == 0)  # outside the ROI nothing flows


def test_partial_cross_entropy_uses_only_labelled_pixels() -> None:
    logits = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    labels = torch.full((2, 4, 5), 255, dtype=torch.long)
    labels[0, 1, 2] = 2
    labels[1, 3, 0] = 0
    expected = -(logits[0, :, 1, 2].log_softmax(0)[2] + logits[1, :, 3, 0].log_softmax(0)[0]) / 2
    assert torch.allclose(partial_cross_entropy(logits, labels), expected)
    unlabelled = torch.full((2, 4, 5), 255, dtype=torch.long)
    assert partial_cross_entropy(logits, unlabelled) == 0
