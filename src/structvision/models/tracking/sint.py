"""SINT: Siamese INstance search for Tracking (Tao, Gavves & Smeulders, CVPR 2016).

Tracking without updating: a Siamese network learned offline compares the target as given in
the first frame with candidate boxes of each new frame; the most similar candidate wins. The
query is never replaced by the tracker's own (possibly wrong) output.

    frame -> shared trunk (one forward pass) -> maps at strides 8, 16, 32
    every box -> RoIAlign on each map (RoIPool as an option) -> per layer: flatten, L2-normalise
              (the stride-32 one through a fully connected layer first, like SINT's fc6)
              -> concatenated, L2-normalised again  = the box's descriptor
    similarity = inner product of two descriptors

Training (:meth:`SINT.forward` with targets): for a pair of frames of one sequence, the target
box of the first frame against boxes sampled in the second: positives overlap the target by
IoU > 0.7, negatives by IoU < 0.5 (the paper's thresholds; others are not used). The marginal
contrastive loss on the descriptors' distance ``d``: ``y d^2 / 2 + (1 - y) max(0, m - d)^2 / 2``
(``m`` the margin), or Caffe's variant ``(1 - y) max(0, m - d^2) / 2`` for negatives.

With ``regression_head`` the network also learns to refine a box: a small MLP on the query's
and a candidate's descriptors predicts R-CNN offsets from the candidate to the target, trained
with the smooth L1 loss on boxes of the search frame that overlap the target by IoU > 0.4. Its
loss does not reach the descriptors, so the matching is learned as without it, unless
``regression_trains_trunk``: then it trains the descriptors and the trunk too, so that they
also say where a box lies on the target, not only whether it is the target. SINT's
candidates keep the previous box's aspect ratio and change scale in coarse steps; the head
lets the box follow a turning or rolling object. It is learned offline, like the descriptors,
and never updated while tracking.

Tracking (:class:`SINTTracker`): candidates on circles around the previous box centre (radius
up to ``search_radius`` times the box's size, :func:`radius_candidates`) at three scales, all
scored from one forward pass of the frame, a candidate's similarity less a small penalty for
its distance from the previous centre; the best one is the new box, refined by two passes of
the learned head when the network has one. Optionally a ridge regression, fitted on the first
frame only, refines the chosen box instead (SINT's box regression).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from structvision.models.backbones import small_backbone
from structvision.models.tracking.base import Tracker, as_box, module_device
from structvision.ops import roi_align, roi_pool
from structvision.structures import box_iou

__all__ = [
    "SINT",
    "SINTTracker",
    "contrastive_loss",
    "radius_candidates",
    "ridge_fit",
    "sample_training_boxes",
    "sint_small",
]

#: The learned head predicts R-CNN offsets divided by these (Fast R-CNN's weights 10, 10, 5, 5).
OFFSET_STD = (0.1, 0.1, 0.2, 0.2)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def contrastive_loss(
    first: Tensor, second: Tensor, labels: Tensor, *, margin: float = 1.0, caffe: bool = False
) -> Tensor:
    """Mean marginal contrastive loss of descriptor pairs ``(N, D)`` with ``labels (N,)``
    (1 = same object). ``caffe``: Caffe's ``ContrastiveLoss`` (``legacy_version``) form,
    ``max(0, m - d^2)`` for negatives."""
    if first.shape != second.shape or labels.shape != first.shape[:1]:
        raise ValueError(
            f"need equal (N, D) descriptors and (N,) labels, got {tuple(first.shape)}, "
            f"{tuple(second.shape)}, {tuple(labels.shape)}"
        )
    squared = (first - second).pow(2).sum(dim=1)
    labels = labels.to(first.dtype)
    if caffe:
        negative = (margin - squared).clamp(min=0)
    else:
        negative = (margin - squared.clamp(min=1e-12).sqrt()).clamp(min=0).pow(2)
    return (labels * squared + (1 - labels) * negative).mean() / 2


def radius_candidates(
    box: Tensor,
    *,
    search_radius: float = 0.6,
    rings: int = 4,
    points_per_ring: int = 8,
    scales: Sequence[float] = (1 / 1.05, 1.0, 1.05),
) -> Tensor:
    """Candidate boxes ``(N, 4)`` xyxy around ``box``: its centre and ``rings`` circles of
    evenly spaced radii up to ``search_radius * sqrt(w h)`` (ring ``k`` holding
    ``points_per_ring * k`` points), each at every scale of ``scales`` (about the box's size)."""
    x1, y1, x2, y2 = as_box(box).tolist()
    width, height = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    reach = search_radius * math.sqrt(width * height)
    centres = [(cx, cy)]
    for ring in range(1, rings + 1):
        radius = reach * ring / rings
        count = points_per_ring * ring
        for step in range(count):
            angle = 2 * math.pi * step / count
            centres.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    boxes = [
        (x - s * width / 2, y - s * height / 2, x + s * width / 2, y + s * height / 2)
        for s in scales
        for x, y in centres
    ]
    return torch.tensor(boxes, dtype=torch.float32)


def sample_training_boxes(
    box: Tensor,
    generator: torch.Generator,
    *,
    count: int = 32,
    positive_iou: float = 0.7,
    negative_iou: float = 0.5,
    image_size: tuple[int, int] | None = None,
) -> tuple[Tensor, Tensor]:
    """Boxes around ``box`` labelled for training: ``(boxes (n, 4), labels (n,))``, half
    positives (IoU > ``positive_iou``) and half negatives (IoU < ``negative_iou``) as far as
    the draws allow; boxes in between are dropped (the paper's rule)."""
    target = as_box(box).float()
    width, height = float(target[2] - target[0]), float(target[3] - target[1])
    draws = 16 * count
    scale = torch.exp(torch.randn(draws, 2, generator=generator) * 0.2)
    near = torch.randn(draws, 2, generator=generator) * 0.15
    far = (torch.rand(draws, 2, generator=generator) * 2 - 1) * 1.5
    use_far = torch.rand(draws, 1, generator=generator) < 0.5
    shift = torch.where(use_far, far, near) * torch.tensor([width, height])
    centre = (target[:2] + target[2:]) / 2 + shift
    size = scale * torch.tensor([width, height])
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=1)
    if image_size is not None:
        height_px, width_px = image_size
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width_px)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height_px)
        boxes = boxes[(boxes[:, 2] - boxes[:, 0] > 2) & (boxes[:, 3] - boxes[:, 1] > 2)]
    iou = box_iou(boxes, target[None])[:, 0]
    positives = boxes[iou > positive_iou][: count // 2]
    negatives = boxes[iou < negative_iou][: count - len(positives)]
    labels = torch.cat([torch.ones(len(positives)), torch.zeros(len(negatives))])
    return torch.cat([positives, negatives]), labels


class SINT(nn.Module):
    """The Siamese network (module docstring).

    Args:
        trunk: ``(B, 3, H, W)`` normalised -> an ordered dict of maps, holding ``layers``.
        strides: each layer's stride.
        layers: the maps pooled, finest first; the last goes through ``fc``.
        pool_size: RoI pooling output size per layer.
        embedding: width of the fully connected layer on the last map (0: none).
        pooler: ``"align"`` (RoIAlign) or ``"pool"`` (RoIPool, the paper's).
        margin: the contrastive loss' margin; ``caffe_loss`` its Caffe form.
        regression_head: also learn the box regression head (module docstring), of
            ``regression_hidden`` units, its loss weighted by ``regression_weight``.
        regression_trains_trunk: the regression loss reaches the descriptors and the trunk
            (``False``: only the head learns from it).
    """

    def __init__(
        self,
        *,
        trunk: nn.Module,
        strides: dict[str, int],
        layers: Sequence[str] = ("c3", "c4", "c5"),
        pool_size: int = 4,
        embedding: int = 256,
        pooler: str = "align",
        margin: float = 1.0,
        caffe_loss: bool = False,
        channels: dict[str, int] | None = None,
        regression_head: bool = False,
        regression_hidden: int = 256,
        regression_weight: float = 1.0,
        regression_trains_trunk: bool = False,
    ) -> None:
        super().__init__()
        if pooler not in ("align", "pool"):
            raise ValueError(f"pooler must be 'align' or 'pool', got {pooler!r}")
        self.trunk = trunk
        #: keyword arguments of the :class:`SINTTracker` that evaluation tracks with
        self.tracker_settings: dict[str, Any] = {}
        self.layers = tuple(layers)
        self.strides = {name: strides[name] for name in self.layers}
        self.pool_size = pool_size
        self.pooler = pooler
        self.margin = margin
        self.caffe_loss = caffe_loss
        channels = channels or getattr(trunk, "out_channels", {})
        last = self.layers[-1]
        self.fc = (
            nn.Sequential(
                nn.Linear(channels[last] * pool_size**2, embedding), nn.ReLU(inplace=True)
            )
            if embedding
            else None
        )
        self.regression_weight = regression_weight
        if not isinstance(regression_trains_trunk, bool):
            raise ValueError(
                f"regression_trains_trunk must be true or false, got {regression_trains_trunk!r}"
            )
        self.regression_trains_trunk = regression_trains_trunk
        self.regression_head = None
        if regression_head:
            width = sum(channels[name] * pool_size**2 for name in self.layers[:-1])
            width += embedding or channels[last] * pool_size**2
            self.regression_head = nn.Sequential(
                nn.Linear(2 * width, regression_hidden),
                nn.ReLU(inplace=True),
                nn.Linear(regression_hidden, 4),
            )
        self.register_buffer("offset_std", torch.tensor(OFFSET_STD), persistent=False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def feature_maps(self, images: Tensor) -> dict[str, Tensor]:
        """``(B, 3, H, W)`` frames in ``[0, 1]`` -> the trunk's maps."""
        return self.trunk((images - self.mean) / self.std)

    def describe(self, maps: dict[str, Tensor], boxes: list[Tensor]) -> Tensor:
        """Descriptors ``(sum N_i, D)`` of ``boxes[i] (N_i, 4)`` xyxy on image ``i``'s maps."""
        parts = []
        pool = roi_align if self.pooler == "align" else roi_pool
        for name in self.layers:
            extra = {"sampling_ratio": 2, "aligned": True} if self.pooler == "align" else {}
            pooled = pool(
                maps[name], boxes, self.pool_size, spatial_scale=1.0 / self.strides[name], **extra
            ).flatten(1)
            if name == self.layers[-1] and self.fc is not None:
                pooled = self.fc(pooled)
            parts.append(F.normalize(pooled, dim=1))
        return F.normalize(torch.cat(parts, dim=1), dim=1)

    def regress(self, queries: Tensor, candidates: Tensor) -> Tensor:
        """R-CNN offsets ``(N, 4)`` from each candidate to the target, predicted by the learned
        head from the query's and the candidate's descriptors (both ``(N, D)``)."""
        if self.regression_head is None:
            raise RuntimeError(
                "this SINT network has no regression head (built with regression_head=False)"
            )
        return self._normalised_offsets(queries, candidates) * self.offset_std

    def _normalised_offsets(self, queries: Tensor, candidates: Tensor) -> Tensor:
        # unit descriptors scaled to unit mean square per element, the scale MLPs train at
        pairs = torch.cat([queries, candidates], dim=1) * math.sqrt(queries.shape[1])
        return self.regression_head(pairs)

    def forward(self, images: Any, targets: Sequence[dict] | None = None):
        """Training: ``images`` are ``(6, H, W)`` frame pairs (query frame, then search frame)
        and ``targets[i]`` holds ``query_box (4,)``, ``boxes (N, 4)`` in the search frame and
        ``labels (N,)``: returns ``{"loss_contrastive"}``. Eval: ``images`` are sequences
        ``{"frames": (T, 3, H, W), "init_box": (4,)}``: returns ``[{"boxes": (T, 4),
        "seconds_per_frame"}]`` tracked by a :class:`SINTTracker` with ``tracker_settings``
        (empty: its defaults)."""
        if not self.training:
            results = []
            for sequence in images:
                tracker = SINTTracker(self, **self.tracker_settings)
                boxes, seconds = tracker.track(sequence["frames"], sequence["init_box"])
                results.append({"boxes": boxes.float(), "seconds_per_frame": torch.tensor(seconds)})
            return results
        if targets is None:
            raise ValueError("targets must be given in training mode")
        pairs = torch.stack(list(images)) if not isinstance(images, Tensor) else images
        if pairs.ndim != 4 or pairs.shape[1] != 6:
            raise ValueError(f"training takes (6, H, W) frame pairs, got {tuple(pairs.shape)}")
        maps = self.feature_maps(torch.cat([pairs[:, :3], pairs[:, 3:]]))
        batch = pairs.shape[0]
        query_maps = {k: v[:batch] for k, v in maps.items()}
        search_maps = {k: v[batch:] for k, v in maps.items()}
        queries = self.describe(query_maps, [t["query_box"].float().view(1, 4) for t in targets])
        candidates = self.describe(search_maps, [t["boxes"].float() for t in targets])
        counts = [len(t["boxes"]) for t in targets]
        repeated = queries.repeat_interleave(torch.tensor(counts, device=queries.device), dim=0)
        labels = torch.cat([t["labels"].to(queries.device) for t in targets])
        loss = contrastive_loss(
            repeated, candidates, labels, margin=self.margin, caffe=self.caffe_loss
        )
        if self.regression_head is None:
            return {"loss_contrastive": loss}
        return {
            "loss_contrastive": loss,
            "loss_box_reg": self._regression_loss(queries, search_maps, targets),
        }

    def _regression_loss(
        self, queries: Tensor, maps: dict[str, Tensor], targets: Sequence[dict]
    ) -> Tensor:
        missing = [key for key in ("box", "reg_boxes") if key not in targets[0]]
        if missing:
            raise ValueError(
                f"a SINT network with a regression head trains on targets with {missing}"
            )
        boxes = [t["reg_boxes"].float().to(queries.device) for t in targets]
        counts = torch.tensor([len(b) for b in boxes], device=queries.device)
        if int(counts.sum()) == 0:
            return queries.sum() * 0
        if self.regression_trains_trunk:
            described = self.describe(maps, boxes)
            repeated = queries.repeat_interleave(counts, dim=0)
        else:  # the head learns from the descriptors without changing them
            with torch.no_grad():
                described = self.describe(maps, boxes)
            repeated = queries.detach().repeat_interleave(counts, dim=0)
        predicted = self._normalised_offsets(repeated, described)
        wanted = torch.cat(
            [
                _box_offsets(b, t["box"].float().to(b.device)) / self.offset_std
                for b, t in zip(boxes, targets, strict=True)
            ]
        )
        return self.regression_weight * F.smooth_l1_loss(predicted, wanted, beta=1 / 9)


class SINTTracker(Tracker):
    """Track with a :class:`SINT` network (module docstring); the query stays the first frame's.

    Args:
        network: the trained Siamese network (put in eval mode here).
        box_regression: refine the chosen box with a ridge regression from the descriptor to
            the box offsets, fitted on boxes sampled in the first frame (instead of the
            learned head).
        learned_regression: refine the chosen box with the network's learned head, where it
            has one.
        update_query: the lecture's counter-example: replace the query by the tracker's own
            output every frame (``False`` is SINT).
        search_radius, rings, points_per_ring, scales: :func:`radius_candidates`.
        ridge: the regression's penalty, relative to the descriptors' spread (:func:`ridge_fit`).
        refine_steps: passes of the learned head per frame; each pass describes the box the
            previous one gave (on the frame's maps, already computed) and moves it again.
            The defaults (two passes, ``motion_penalty`` 0.1) were chosen on tuning sequences
            of ``world-track`` (seed 1) for the recipe's model (BENCHMARKS.md).
        refine_limits: the most one pass may move the box, as a fraction of its size, and
            change its log-size (larger steps compound into drift).
        motion_penalty: subtracted from a candidate's score times its squared distance from
            the previous centre in units of the search radius (0: SINT's plain argmax; the
            similarities lie in [-1, 1]).
        top_k: the chosen box is the mean of the ``top_k`` best-scoring candidates (MDNet's
            rule, finer than the candidates' grid; 1: SINT's argmax), described again before
            the regression refines it.
        min_target_side: frames are enlarged (bilinearly, by one factor per sequence, at most
            ``max_upscale``) so that the first box's side ``sqrt(w h)`` is at least this many
            pixels: a small target then spans more cells of the stride-8 map (0: frames as
            given, the default: at 40 px it won on ``world-track``'s tuning sequences and lost
            on the held-out ones, BENCHMARKS.md).
        max_upscale: the largest enlargement ``min_target_side`` may ask for.
    """

    name = "sint"

    def __init__(
        self,
        network: SINT,
        *,
        box_regression: bool = False,
        learned_regression: bool = True,
        update_query: bool = False,
        search_radius: float = 0.6,
        rings: int = 4,
        points_per_ring: int = 8,
        scales: Sequence[float] = (1 / 1.05, 1.0, 1.05),
        ridge: float = 1.0,
        refine_steps: int = 2,
        refine_limits: tuple[float, float] = (0.25, 0.1),
        motion_penalty: float = 0.1,
        top_k: int = 1,
        min_target_side: float = 0.0,
        max_upscale: float = 2.0,
    ) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        if refine_steps < 0 or motion_penalty < 0 or min(refine_limits) < 0:
            raise ValueError(
                "refine_steps, refine_limits and motion_penalty must not be negative, got "
                f"{refine_steps}, {refine_limits}, {motion_penalty}"
            )
        self.network = network.eval()
        self.box_regression = box_regression
        self.learned_regression = learned_regression and network.regression_head is not None
        self.update_query = update_query
        self.sampling = {
            "search_radius": search_radius,
            "rings": rings,
            "points_per_ring": points_per_ring,
            "scales": tuple(scales),
        }
        self.ridge = ridge
        self.refine_steps = int(refine_steps)
        self.refine_limits = (float(refine_limits[0]), float(refine_limits[1]))
        self.motion_penalty = float(motion_penalty)
        self.top_k = int(top_k)
        if min_target_side < 0 or max_upscale < 1:
            raise ValueError(
                "min_target_side must not be negative and max_upscale must be at least 1, got "
                f"{min_target_side}, {max_upscale}"
            )
        self.min_target_side = float(min_target_side)
        self.max_upscale = float(max_upscale)
        self._upscale = 1.0
        self._query: Tensor | None = None
        self._box: Tensor | None = None
        self._regressor: tuple[Tensor, Tensor] | None = None
        self._size: tuple[int, int] = (0, 0)

    def _device(self) -> torch.device:
        return module_device(self.network)

    @torch.no_grad()
    def _describe(self, image: Tensor, boxes: Tensor) -> Tensor:
        return self._on(self._maps(image), boxes)

    def _maps(self, image: Tensor) -> dict[str, Tensor]:
        """The frame's feature maps, the frame enlarged by the sequence's factor first."""
        batch = image[None].to(self._device())
        if self._upscale != 1.0:
            height, width = batch.shape[-2:]
            size = (round(height * self._upscale), round(width * self._upscale))
            batch = F.interpolate(batch, size=size, mode="bilinear", align_corners=False)
        return self.network.feature_maps(batch)

    @torch.no_grad()
    def init(self, image: Tensor, box: Tensor | Sequence[float]) -> None:
        start = as_box(box)
        self._size = tuple(image.shape[-2:])
        side = float((start[2:] - start[:2]).prod().clamp(min=1e-6).sqrt())
        self._upscale = 1.0
        if self.min_target_side > 0:
            self._upscale = min(max(1.0, self.min_target_side / side), self.max_upscale)
        self._query = self._describe(image, start[None])
        self._box = start
        self._regressor = None
        if self.box_regression:
            self._regressor = self._fit_regression(image, start)

    def _fit_regression(self, image: Tensor, start: Tensor) -> tuple[Tensor, Tensor] | None:
        """Ridge regression from descriptors to the offsets back to ``start``, fitted on boxes
        sampled around it in the first frame (IoU > 0.6): ``(weights (D, 4), intercept (4,))``.

        Solved in its dual form (as many unknowns as samples, not descriptor dimensions), the
        intercept unpenalised, the penalty relative to the descriptors' mean squared norm."""
        generator = torch.Generator().manual_seed(0)
        samples, labels = sample_training_boxes(
            start, generator, count=128, positive_iou=0.6, image_size=self._size
        )
        near = samples[labels > 0]
        if len(near) < 4:
            return None
        features = self._describe(image, near).double().cpu()
        return ridge_fit(features, _box_offsets(near.double(), start.double()), self.ridge)

    @torch.no_grad()
    def update(self, image: Tensor) -> Tensor:
        if self._query is None or self._box is None:
            raise RuntimeError("update before init: call init(image, box) on the first frame")
        candidates = radius_candidates(self._box, **self.sampling)
        height, width = self._size
        inside = (candidates[:, 2] > 0) & (candidates[:, 0] < width)
        inside &= (candidates[:, 3] > 0) & (candidates[:, 1] < height)
        if inside.any():
            candidates = candidates[inside]
        maps = self._maps(image)
        descriptors = self._on(maps, candidates)
        scores = (descriptors @ self._query[0]).cpu()
        if self.motion_penalty:
            scores = scores - self.motion_penalty * self._squared_distances(candidates)
        best = int(scores.argmax())
        chosen = candidates[best].double()
        described = descriptors[best : best + 1]
        if self.top_k > 1:
            top = scores.topk(min(self.top_k, len(scores))).indices
            chosen = candidates[top].double().mean(dim=0)
            described = self._on(maps, chosen[None])
        if self._regressor is not None:
            weights, intercept = self._regressor
            offsets = described[0].double().cpu() @ weights + intercept
            chosen = _apply_offsets(chosen, offsets, *self.refine_limits)
        elif self.learned_regression:
            for _ in range(self.refine_steps):
                offsets = self.network.regress(self._query, described)[0].double().cpu()
                chosen = _apply_offsets(chosen, offsets, *self.refine_limits)
                described = self._on(maps, chosen[None])
        chosen = _bounded(chosen, self._size)
        self._box = chosen
        if self.update_query:
            self._query = descriptors[best : best + 1]
        return chosen.clone()

    def _on(self, maps: dict[str, Tensor], boxes: Tensor) -> Tensor:
        """Descriptors of ``boxes`` (frame pixels) on a frame's :meth:`_maps`."""
        scaled = boxes.float() * self._upscale if self._upscale != 1.0 else boxes.float()
        return self.network.describe(maps, [scaled.to(self._device())])

    def _squared_distances(self, candidates: Tensor) -> Tensor:
        """Each candidate centre's squared distance from the previous box's centre, in units of
        the search radius (:func:`radius_candidates`'s reach)."""
        box = self._box.float()
        size = box[2:] - box[:2]
        reach = self.sampling["search_radius"] * float(size.prod().clamp(min=1e-6).sqrt())
        shift = (candidates[:, :2] + candidates[:, 2:]) / 2 - (box[:2] + box[2:]) / 2
        return shift.pow(2).sum(dim=1) / max(reach, 1e-6) ** 2


def ridge_fit(features: Tensor, targets: Tensor, ridge: float) -> tuple[Tensor, Tensor]:
    """``targets (n, k) ~ features (n, D) @ weights + intercept`` by ridge regression with an
    unpenalised intercept and penalty ``ridge`` times the centred features' mean squared norm,
    solved in its dual form (``n`` unknowns per target, for ``n`` much smaller than ``D``):
    ``(weights (D, k), intercept (k,))``."""
    mean_x, mean_y = features.mean(0), targets.mean(0)
    centred = features - mean_x
    kernel = centred @ centred.T
    penalty = ridge * float(kernel.diagonal().mean()) + 1e-12
    identity = torch.eye(len(features), dtype=kernel.dtype, device=kernel.device)
    weights = centred.T @ torch.linalg.solve(kernel + penalty * identity, targets - mean_y)
    return weights, mean_y - mean_x @ weights


def _box_offsets(boxes: Tensor, target: Tensor) -> Tensor:
    """R-CNN's ``(dx, dy, dw, dh)`` from ``boxes (N, 4)`` to ``target (4,)``."""
    size = boxes[:, 2:] - boxes[:, :2]
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    target_size = target[2:] - target[:2]
    target_centre = (target[:2] + target[2:]) / 2
    return torch.cat([(target_centre - centre) / size, torch.log(target_size / size)], dim=1)


def _apply_offsets(
    box: Tensor, offsets: Tensor, shift_limit: float = 0.25, scale_limit: float = 0.1
) -> Tensor:
    """``box`` moved by R-CNN offsets, at most ``shift_limit`` of its size and ``scale_limit``
    in log-size (one refinement's step; larger steps compound into drift)."""
    size = box[2:] - box[:2]
    centre = (box[:2] + box[2:]) / 2 + offsets[:2].clamp(-shift_limit, shift_limit) * size
    size = size * torch.exp(offsets[2:].clamp(-scale_limit, scale_limit))
    return torch.cat([centre - size / 2, centre + size / 2])


def _bounded(box: Tensor, image_size: tuple[int, int], min_size: float = 4.0) -> Tensor:
    """``box`` with its width and height kept between ``min_size`` pixels and the image's, and
    its centre inside the image: refinements that shrink a box frame after frame must not
    collapse it."""
    height, width = image_size
    limit = torch.tensor([float(width), float(height)], dtype=box.dtype)
    size = torch.minimum((box[2:] - box[:2]).clamp(min=min_size), limit.clamp(min=min_size))
    centre = torch.minimum(((box[:2] + box[2:]) / 2).clamp(min=0), limit)
    return torch.cat([centre - size / 2, centre + size / 2])


def sint_small(*, width: int = 32, norm: str = "group", **settings: Any) -> SINT:
    """SINT on the library's small trunk (strides 8, 16, 32 pooled): fast on a CPU."""
    trunk = small_backbone(width=width, norm=norm, returned_layers=(2, 3, 4))
    return SINT(trunk=trunk, strides=trunk.strides, channels=trunk.out_channels, **settings)
