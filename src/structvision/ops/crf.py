"""Fully connected (dense) CRF of Krähenbühl & Koltun (2011): inference, a trainable layer, a loss.

Model. Labels ``x_i`` of the ``N = H * W`` pixels of an image have the energy
``E(x) = sum_i U_i(x_i) + sum_{i<j} mu(x_i, x_j) sum_k w_k k_k(f_i, f_j)`` with two Gaussian
kernels, exactly as pydensecrf's ``addPairwiseGaussian`` / ``addPairwiseBilateral``:

- *gaussian* (smoothness): features ``(x / sxy, y / sxy)``,
- *bilateral* (appearance): features ``(x / sxy, y / sxy, r / srgb, g / srgb, b / srgb)``,

where ``x`` is the column and ``y`` the row in pixels and colours are in 0–255 units. Kernels
are filtered on a permutohedral lattice (:mod:`structvision.ops.permutohedral`; the self term is
included, as in pydensecrf) and normalised symmetrically, pydensecrf's default
``NORMALIZE_SYMMETRIC``: ``K~ = D^-1/2 K D^-1/2`` with ``D = diag(K 1)``.

Mean field (Krähenbühl & Koltun, Algorithm 1, as densecrf's ``inference`` runs it)::

    Q = softmax(-U)
    repeat: Q = softmax(-U - sum_k w_k (K~_k Q) mu^T)

With the Potts model (``mu = -I`` here, pydensecrf's ``PottsCompatibility(w)``) this is
``softmax(-U + sum_k w_k K~_k Q)``; ``-I`` and the Potts energy ``[l != l']`` differ by a
per-pixel constant that the softmax ignores. Tensors inside are pixel-major ``(B, N, C)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from structvision.ops.permutohedral import PermutohedralLattice

__all__ = [
    "DenseCRF",
    "bilateral_features",
    "dense_crf",
    "dense_crf_loss",
    "exact_gaussian_filter",
    "gaussian_features",
    "lattice_filter",
    "mean_field",
    "partial_cross_entropy",
    "symmetric_normalized",
]

FilterFn = Callable[[Tensor], Tensor]  # (B, N, C) -> (B, N, C)


def dense_crf(
    image: Tensor,
    probs: Tensor,
    *,
    iterations: int = 10,
    gaussian_sxy: float = 3.0,
    gaussian_weight: float = 3.0,
    bilateral_sxy: float = 80.0,
    bilateral_srgb: float = 13.0,
    bilateral_weight: float = 10.0,
    compatibility: Tensor | None = None,
    min_prob: float = 1e-5,
) -> Tensor:
    """Refine class probabilities with the dense CRF; a drop-in for pydensecrf's inference.

    Equivalent pydensecrf calls: ``setUnaryEnergy(unary_from_softmax(probs, clip=min_prob))``,
    ``addPairwiseGaussian(sxy=gaussian_sxy, compat=gaussian_weight)``,
    ``addPairwiseBilateral(sxy=bilateral_sxy, srgb=bilateral_srgb, rgbim=image,
    compat=bilateral_weight)``, ``inference(iterations)``.

    Args:
        image: ``(H, W, 3)`` uint8 RGB (0–255) or ``(3, H, W)`` float RGB in ``[0, 1]``;
            batched ``(B, H, W, 3)`` / ``(B, 3, H, W)``. The dtype decides the layout.
        probs: ``(C, H, W)`` (or ``(B, C, H, W)``) class probabilities; the unary is
            ``-log(max(probs, min_prob))``.
        iterations: mean-field iterations (0 returns the normalised clipped ``probs``).
        gaussian_sxy: position standard deviation of the smoothness kernel, pixels.
        gaussian_weight: its weight (pydensecrf's Potts ``compat``).
        bilateral_sxy: position standard deviation of the appearance kernel, pixels.
        bilateral_srgb: colour standard deviation of the appearance kernel, 0–255 units.
        bilateral_weight: its weight.
        compatibility: optional ``(C, C)`` label compatibility ``mu(l, l')`` (energy of label
            ``l`` next to ``l'``, scaled by each kernel's weight); ``None`` is Potts.
        min_prob: probabilities are clipped to ``[min_prob, 1]`` before the log.

    Returns:
        ``(C, H, W)`` (or ``(B, C, H, W)``) marginals ``Q``, summing to 1 over classes.
    """
    rgb, batched = _image_to_rgb255(image)  # (B, H, W, 3)
    batch_size, height, width, _ = rgb.shape
    probs_b = probs if batched else probs.unsqueeze(0)
    _check_probs(probs_b, batch_size=batch_size, height=height, width=width, batched=batched)
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    work_dtype = torch.float64 if probs.dtype == torch.float64 else torch.float32
    unary = -probs_b.to(work_dtype).clamp(min_prob, 1.0).log()  # (B, C, H, W)
    unary = unary.flatten(2).transpose(1, 2).contiguous()  # (B, N, C)
    gaussian = gaussian_features(
        batch_size=batch_size, height=height, width=width, sxy=gaussian_sxy, device=rgb.device
    )
    bilateral = bilateral_features(rgb, sxy=bilateral_sxy, srgb=bilateral_srgb)
    filters = [
        _folded_lattice_filter(features, weight=weight, dtype=work_dtype)
        for features, weight in ((gaussian, gaussian_weight), (bilateral, bilateral_weight))
    ]
    logits = mean_field(
        unary,
        filters=filters,
        weights=[1.0, 1.0],
        compatibility=compatibility,
        iterations=iterations,
    )  # (B, N, C)
    marginals = logits.softmax(dim=2).transpose(1, 2).reshape(probs_b.shape)
    return marginals if batched else marginals[0]


def mean_field(
    unary: Tensor,
    *,
    filters: Sequence[FilterFn],
    weights: Sequence[float | Tensor],
    compatibility: Tensor | None = None,
    iterations: int = 10,
) -> Tensor:
    """Mean-field iterations with injectable (already normalised) kernel filters.

    Args:
        unary: ``(B, N, C)`` unary energies ``U`` (``-log p``).
        filters: one callable per kernel mapping ``(B, N, C)`` to ``(B, N, C)``, e.g.
            ``symmetric_normalized(lattice_filter(features))``.
        weights: one kernel weight per filter (float or scalar tensor, e.g. learnable).
        compatibility: ``(C, C)`` ``mu``; ``None`` is Potts (``mu = -I``).
        iterations: number of updates; 0 returns ``-unary``.

    Returns:
        ``(B, N, C)`` final logits ``-U - sum_k w_k (K~_k Q) mu^T``; ``Q = softmax(logits)``.
    """
    if len(filters) != len(weights):
        raise ValueError(f"filters and weights differ in length: {len(filters)} vs {len(weights)}")
    if unary.dim() != 3:
        raise ValueError(f"unary must be (B, N, C), got {tuple(unary.shape)}")
    num_classes = unary.shape[2]
    if compatibility is not None and tuple(compatibility.shape) != (num_classes, num_classes):
        raise ValueError(
            f"compatibility must be (C, C) = ({num_classes}, {num_classes}), "
            f"got {tuple(compatibility.shape)}"
        )
    logits = -unary
    for _ in range(iterations):
        marginals = logits.softmax(dim=2)  # (B, N, C)
        message = _weighted_sum(filters, weights, marginals)  # (B, N, C)
        if compatibility is None:
            logits = message - unary if message.requires_grad else message.sub_(unary)
        else:
            logits = -unary - message @ compatibility.to(message.dtype).T
    return logits


def _weighted_sum(
    filters: Sequence[FilterFn], weights: Sequence[float | Tensor], q: Tensor
) -> Tensor:
    """``sum_k w_k filter_k(q)``, skipping multiplications by a plain 1.0."""
    total = None
    for filter_fn, weight in zip(filters, weights, strict=True):
        term = filter_fn(q)
        if not (isinstance(weight, (int, float)) and weight == 1.0):
            term = term * weight
        if total is None:
            total = term
        elif total.requires_grad or term.requires_grad:
            total = total + term
        else:
            total += term  # inference: no graph, so the filter output can be reused in place
    return total


def _folded_lattice_filter(features: Tensor, *, weight: float, dtype: torch.dtype) -> FilterFn:
    """``w D^-1/2 K D^-1/2`` on a lattice whose slice/splat absorb the scaling (``w >= 0``)."""
    if weight < 0:
        raise ValueError(f"kernel weights must be >= 0, got {weight}")
    lattice = PermutohedralLattice.build(features.detach())
    ones = torch.ones(
        lattice.batch_size * lattice.num_points, 1, dtype=dtype, device=features.device
    )
    degree = lattice.filter(ones)[:, 0]  # (P,)
    folded = lattice.scaled(math.sqrt(weight) * (degree + 1e-20).rsqrt())
    return folded.filter


def lattice_filter(features: Tensor) -> FilterFn:
    """Unnormalised Gaussian filter over ``(B, N, d)`` features via a permutohedral lattice.

    The lattice is built once here; the returned callable filters ``(B, N, C)`` values.
    """
    lattice = PermutohedralLattice.build(features.detach())
    return lattice.filter


def exact_gaussian_filter(features: Tensor) -> FilterFn:
    """Exact ``O(N^2)`` Gaussian filter ``sum_j exp(-|f_i - f_j|^2 / 2) v_j`` (self included).

    A reference for small images: ``features`` ``(B, N, d)``; memory ``B * N^2``.
    """
    kernel = torch.exp(-0.5 * torch.cdist(features, features).square())  # (B, N, N)
    return lambda values: kernel.to(values.dtype) @ values


def symmetric_normalized(filter_fn: FilterFn) -> FilterFn:
    """``D^-1/2 K D^-1/2`` normalisation of a filter ``K`` (``D = diag(K 1)``), as densecrf.

    The degree ``K 1`` is computed lazily on the first call (for the values' shape and dtype).
    """
    cache: dict[str, Tensor] = {}

    def normalized(values: Tensor) -> Tensor:
        if "norm" not in cache:
            ones = values.new_ones(*values.shape[:2], 1)  # (B, N, 1)
            cache["norm"] = (filter_fn(ones) + 1e-20).rsqrt()
        norm = cache["norm"]
        return norm * filter_fn(norm * values)

    return normalized


def gaussian_features(
    *, batch_size: int, height: int, width: int, sxy: float, device: torch.device | str
) -> Tensor:
    """Smoothness-kernel features ``(B, H * W, 2)``: ``(x / sxy, y / sxy)``, row-major pixels."""
    if sxy <= 0:
        raise ValueError(f"sxy must be positive, got {sxy}")
    ys = torch.arange(height, dtype=torch.float32, device=device)
    xs = torch.arange(width, dtype=torch.float32, device=device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")  # (H, W) each
    xy = torch.stack([grid_x, grid_y], dim=-1).reshape(1, height * width, 2) / sxy
    return xy.expand(batch_size, -1, -1)


def bilateral_features(rgb255: Tensor, *, sxy: float, srgb: float) -> Tensor:
    """Appearance-kernel features ``(B, H * W, 5)``: ``(x, y) / sxy`` and ``(r, g, b) / srgb``.

    ``rgb255`` is ``(B, H, W, 3)`` float colour in 0–255 units.
    """
    if srgb <= 0:
        raise ValueError(f"srgb must be positive, got {srgb}")
    batch_size, height, width, _ = rgb255.shape
    xy = gaussian_features(
        batch_size=batch_size, height=height, width=width, sxy=sxy, device=rgb255.device
    )
    colour = rgb255.reshape(batch_size, height * width, 3).float() / srgb
    return torch.cat([xy, colour], dim=2)


class DenseCRF(nn.Module):
    """CRF-as-RNN: mean-field iterations as a differentiable layer (Zheng et al. 2015).

    Learnable: the two kernel weights (log-parametrised, so positive) and the ``(C, C)`` label
    compatibility ``mu`` (initialised to Potts ``1 - I``). Kernel bandwidths are fixed.
    ``forward(image (B, 3, H, W) float in [0, 1], logits (B, C, H, W)) -> (B, C, H, W)``
    refined logits; ``softmax`` of them are the marginals. Gradients flow to ``logits`` and the
    parameters through every iteration (not to the image: the lattices are built from it).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        iterations: int = 5,
        gaussian_sxy: float = 3.0,
        gaussian_weight: float = 3.0,
        bilateral_sxy: float = 80.0,
        bilateral_srgb: float = 13.0,
        bilateral_weight: float = 10.0,
    ) -> None:
        super().__init__()
        if num_classes < 1 or iterations < 0:
            raise ValueError(
                f"num_classes must be >= 1 and iterations >= 0, got {num_classes}, {iterations}"
            )
        self.num_classes = num_classes
        self.iterations = iterations
        self.gaussian_sxy = gaussian_sxy
        self.bilateral_sxy = bilateral_sxy
        self.bilateral_srgb = bilateral_srgb
        self.log_gaussian_weight = nn.Parameter(torch.tensor(math.log(gaussian_weight)))
        self.log_bilateral_weight = nn.Parameter(torch.tensor(math.log(bilateral_weight)))
        self.compatibility = nn.Parameter(1.0 - torch.eye(num_classes))

    def forward(self, image: Tensor, logits: Tensor) -> Tensor:
        if image.dim() != 4 or image.shape[1] != 3 or not image.is_floating_point():
            raise ValueError(f"image must be float (B, 3, H, W), got {tuple(image.shape)}")
        batch_size, _, height, width = image.shape
        expected = (batch_size, self.num_classes, height, width)
        if tuple(logits.shape) != expected:
            raise ValueError(f"logits must be {expected}, got {tuple(logits.shape)}")
        rgb255 = image.detach().permute(0, 2, 3, 1) * 255.0  # (B, H, W, 3)
        gaussian = gaussian_features(
            batch_size=batch_size,
            height=height,
            width=width,
            sxy=self.gaussian_sxy,
            device=image.device,
        )
        bilateral = bilateral_features(rgb255, sxy=self.bilateral_sxy, srgb=self.bilateral_srgb)
        filters = [symmetric_normalized(lattice_filter(f)) for f in (gaussian, bilateral)]
        work_logits = logits if logits.dtype == torch.float64 else logits.float()  # autocast-safe
        unary = -work_logits.flatten(2).transpose(1, 2).log_softmax(dim=2)  # (B, N, C)
        refined = mean_field(
            unary,
            filters=filters,
            weights=[self.log_gaussian_weight.exp(), self.log_bilateral_weight.exp()],
            compatibility=self.compatibility,
            iterations=self.iterations,
        )  # (B, N, C)
        return refined.transpose(1, 2).reshape(expected).to(logits.dtype)


def dense_crf_loss(
    image: Tensor,
    probs: Tensor,
    *,
    sxy: float = 80.0,
    srgb: float = 13.0,
    weight: float = 1.0,
    roi_mask: Tensor | None = None,
) -> Tensor:
    """Dense-CRF regularised loss of Tang et al. (2018) for weakly supervised segmentation.

    The relaxed Potts energy of the soft segmentation ``S``: ``sum_k S_k^T W (1 - S_k)`` with
    the (unnormalised) bilateral Gaussian kernel ``W_ij = exp(-|p_i - p_j|^2 / (2 sxy^2)
    - |c_i - c_j|^2 / (2 srgb^2))`` through the permutohedral lattice (self term included),
    divided by the number of pixels (inside ``roi_mask``) and averaged over the batch. Its
    gradient is ``-2 W S_k + const`` (autograd through the linear lattice filter).

    Args:
        image: ``(B, 3, H, W)`` float RGB in ``[0, 1]`` (colour distances in 0–255 units).
        probs: ``(B, C, H, W)`` soft segmentation (softmax output).
        sxy: position standard deviation, pixels.
        srgb: colour standard deviation, 0–255 units.
        weight: factor ``lambda`` multiplying the loss.
        roi_mask: optional ``(B, H, W)`` 0/1 (or bool) mask; pixels outside take no part.

    Returns:
        Scalar loss tensor.
    """
    if image.dim() != 4 or image.shape[1] != 3 or not image.is_floating_point():
        raise ValueError(f"image must be float (B, 3, H, W), got {tuple(image.shape)}")
    batch_size, _, height, width = image.shape
    if probs.dim() != 4 or (probs.shape[0], *probs.shape[2:]) != (batch_size, height, width):
        raise ValueError(
            f"probs must be (B, C, H, W) = ({batch_size}, C, {height}, {width}), "
            f"got {tuple(probs.shape)}"
        )
    if roi_mask is None:
        roi = probs.new_ones(batch_size, height * width, 1)
    elif tuple(roi_mask.shape) != (batch_size, height, width):
        raise ValueError(
            f"roi_mask must be (B, H, W) = ({batch_size}, {height}, {width}), "
            f"got {tuple(roi_mask.shape)}"
        )
    else:
        roi = roi_mask.reshape(batch_size, height * width, 1).to(probs.dtype)
    rgb255 = image.detach().permute(0, 2, 3, 1) * 255.0  # (B, H, W, 3)
    kernel = lattice_filter(bilateral_features(rgb255, sxy=sxy, srgb=srgb))
    segmentation = probs.flatten(2).transpose(1, 2) * roi  # (B, N, C)
    if segmentation.dtype not in (torch.float32, torch.float64):
        segmentation = segmentation.float()
    energy = (segmentation * kernel(roi - segmentation)).sum(dim=(1, 2))  # (B,)
    num_pixels = roi.sum(dim=(1, 2)).clamp_min(1.0)  # (B,)
    return weight * (energy / num_pixels).mean()


def partial_cross_entropy(logits: Tensor, labels: Tensor, *, ignore_index: int = 255) -> Tensor:
    """Cross-entropy over labelled pixels only (scribbles); ``ignore_index`` marks unlabelled.

    ``logits`` ``(B, C, H, W)``, ``labels`` ``(B, H, W)`` int64. Mean over labelled pixels; a
    batch without any labelled pixel gives 0 (still connected to the graph).
    """
    if logits.dim() != 4 or tuple(labels.shape) != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"logits must be (B, C, H, W) and labels (B, H, W); got {tuple(logits.shape)} "
            f"and {tuple(labels.shape)}"
        )
    labelled = labels != ignore_index
    if not bool(labelled.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels.long(), ignore_index=ignore_index)


def _image_to_rgb255(image: Tensor) -> tuple[Tensor, bool]:
    """``(B, H, W, 3)`` float colours in 0–255 from a uint8 HWC or float CHW image (+ batched)."""
    if image.dtype == torch.uint8:
        if image.dim() not in (3, 4) or image.shape[-1] != 3:
            raise ValueError(
                f"uint8 image must be (H, W, 3) or (B, H, W, 3), got {tuple(image.shape)}"
            )
        batched = image.dim() == 4
        rgb = image.float()
    elif image.is_floating_point():
        if image.dim() not in (3, 4) or image.shape[-3] != 3:
            raise ValueError(
                f"float image must be (3, H, W) or (B, 3, H, W) in [0, 1], got {tuple(image.shape)}"
            )
        batched = image.dim() == 4
        rgb = image.float().movedim(-3, -1) * 255.0
    else:
        raise ValueError(f"image must be uint8 or float, got {image.dtype}")
    return (rgb if batched else rgb.unsqueeze(0)), batched


def _check_probs(probs: Tensor, *, batch_size: int, height: int, width: int, batched: bool) -> None:
    if probs.dim() != 4 or (probs.shape[0], *probs.shape[2:]) != (batch_size, height, width):
        expected = f"({batch_size}, C, {height}, {width})" if batched else f"(C, {height}, {width})"
        raise ValueError(
            f"probs must be {expected} to match the image, got {tuple(probs.shape)} "
            f"(batched={batched})"
        )
    if not probs.is_floating_point():
        raise ValueError(f"probs must be a float tensor, got {probs.dtype}")
