"""SiamFC (Bertinetto et al., ECCV 2016 workshops): fully convolutional Siamese tracking.

    exemplar crop (127 px, the target with context) -> embedding -> kernel (6 x 6)
    search crop   (255 px, around the previous box)  -> embedding -> map (22 x 22)
    score map = cross-correlation of the kernel over the map (17 x 17), times 0.001

Crops: a square of side ``s = sqrt((w + 2p)(h + 2p))`` with context ``p = (w + h) / 4`` around
the target's centre, resized to ``exemplar_size``; the search crop covers
``s * search_size / exemplar_size`` (out-of-image parts take the frame's mean colour).

Training: pairs of frames of one sequence; the score map's cells within ``radius`` (16 px of
the search crop, stride 8: 2 cells) of the centre are positives, the others negatives; the
logistic loss is weighted so positives and negatives count equally.

Tracking: the search crop at three scales ``1.0375^{-1, 0, 1}`` of the previous size, the two
changed scales' scores multiplied by a scale penalty (the paper's 0.9745; 1, none, by default
here: chosen on tuning sequences of ``world-track`` and confirmed on the held-out ones,
BENCHMARKS.md); the best scale's map upsampled 16x (bicubic), normalised, mixed with a cosine
(Hann) window (weight 0.176); its peak moves the centre; the size follows the best scale with a
learning rate of 0.59. The exemplar is never updated.

The embedding is an AlexNet-like stack without padding (five convolutions, stride 8 in all),
its channels scaled by ``width`` (``width=1.0``: the paper's 96, 256, 384, 384, 256).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from structvision.models.tracking.base import Tracker, as_box, module_device

__all__ = ["SiamFC", "SiamFCTracker", "crop_square", "logistic_labels", "siamfc"]


def crop_square(image: Tensor, centre: Sequence[float], side: float, size: int) -> Tensor:
    """The ``side x side`` square around ``centre`` (x, y) of ``image (3, H, W)``, resized to
    ``size x size`` (bilinear); outside the image: the image's mean colour."""
    _, height, width = image.shape
    cx, cy = float(centre[0]), float(centre[1])
    xs = cx + (torch.arange(size, dtype=torch.float32) + 0.5 - size / 2) * side / size
    ys = cy + (torch.arange(size, dtype=torch.float32) + 0.5 - size / 2) * side / size
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    # pixel centres at integer + 0.5 in box coordinates -> align_corners=False normalisation
    grid = torch.stack([2 * grid_x / width - 1, 2 * grid_y / height - 1], dim=-1)[None]
    mean = image.mean(dim=(1, 2), keepdim=True)
    sampled = F.grid_sample(
        (image - mean)[None],
        grid.to(image),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )[0]
    return sampled + mean


def logistic_labels(size: int, stride: int, radius: float) -> Tensor:
    """``(size, size)`` labels of a score map: 1 within ``radius`` search-crop pixels of the
    centre cell, 0 elsewhere."""
    offsets = (torch.arange(size, dtype=torch.float32) - (size - 1) / 2) * stride
    distance = (offsets[None, :] ** 2 + offsets[:, None] ** 2).sqrt()
    return (distance <= radius).float()


class SiamFC(nn.Module):
    """The fully convolutional Siamese network (module docstring)."""

    def __init__(
        self,
        *,
        width: float = 1.0,
        exemplar_size: int = 127,
        search_size: int = 255,
        radius: float = 16.0,
        response_scale: float = 1e-3,
    ) -> None:
        super().__init__()
        c = [max(8, round(n * width)) for n in (96, 256, 384, 384, 256)]
        self.embedding = nn.Sequential(
            nn.Conv2d(3, c[0], 11, stride=2),
            nn.BatchNorm2d(c[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(c[0], c[1], 5, groups=2 if c[0] % 2 == 0 and c[1] % 2 == 0 else 1),
            nn.BatchNorm2d(c[1]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(c[1], c[2], 3),
            nn.BatchNorm2d(c[2]),
            nn.ReLU(inplace=True),
            nn.Conv2d(c[2], c[3], 3, groups=2 if c[2] % 2 == 0 and c[3] % 2 == 0 else 1),
            nn.BatchNorm2d(c[3]),
            nn.ReLU(inplace=True),
            nn.Conv2d(c[3], c[4], 3, groups=2 if c[3] % 2 == 0 and c[4] % 2 == 0 else 1),
        )
        self.stride = 8
        self.exemplar_size = exemplar_size
        self.search_size = search_size
        self.radius = radius
        self.response_scale = response_scale
        #: keyword arguments of the :class:`SiamFCTracker` that evaluation tracks with
        self.tracker_settings: dict[str, Any] = {}
        self.register_buffer(
            "mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False
        )

    def embed(self, crops: Tensor) -> Tensor:
        return self.embedding((crops - self.mean) / self.std)

    def score(self, exemplar: Tensor, search: Tensor) -> Tensor:
        """``exemplar (B, C, k, k)`` kernels over ``search (B or B*S, C, n, n)`` maps ->
        ``(B*S, 1, n - k + 1, n - k + 1)`` (each kernel over its own group of maps)."""
        batch = exemplar.shape[0]
        groups = search.shape[0] // batch
        maps = search.reshape(batch, groups * search.shape[1], *search.shape[2:])
        kernels = exemplar.repeat_interleave(groups, dim=0)
        out = F.conv2d(maps.reshape(1, -1, *maps.shape[2:]), kernels, groups=batch * groups)
        return out.view(batch * groups, 1, *out.shape[2:]) * self.response_scale

    def forward(self, images: Any, targets: Sequence[dict] | None = None):
        """Training: ``images`` are ``(3, E, E)`` exemplar and ``(3, S, S)`` search crops
        stacked per sample as a dict ``{"exemplar", "search"}`` or targets holding them;
        returns ``{"loss_logistic"}``. Eval: sequences ``{"frames", "init_box"}`` ->
        ``[{"boxes", "seconds_per_frame"}]``, tracked by a :class:`SiamFCTracker` with
        ``tracker_settings`` (empty: its defaults)."""
        if not self.training:
            results = []
            for sequence in images:
                tracker = SiamFCTracker(self, **self.tracker_settings)
                boxes, seconds = tracker.track(sequence["frames"], sequence["init_box"])
                results.append({"boxes": boxes.float(), "seconds_per_frame": torch.tensor(seconds)})
            return results
        exemplars = torch.stack([sample["exemplar"] for sample in images])
        searches = torch.stack([sample["search"] for sample in images])
        scores = self.score(self.embed(exemplars), self.embed(searches))
        labels = logistic_labels(scores.shape[-1], self.stride, self.radius).to(scores)
        labels = labels.expand_as(scores)
        positives = labels.sum().clamp(min=1)
        negatives = (1 - labels).sum().clamp(min=1)
        weights = labels / positives * 0.5 + (1 - labels) / negatives * 0.5
        loss = F.binary_cross_entropy_with_logits(scores, labels, weight=weights, reduction="sum")
        return {"loss_logistic": loss / scores.shape[0]}


def _context_side(width: float, height: float) -> float:
    context = (width + height) / 2
    return math.sqrt((width + context) * (height + context))


class SiamFCTracker(Tracker):
    """SiamFC's tracking procedure (module docstring); the exemplar is the first frame's."""

    name = "siamfc"

    def __init__(
        self,
        network: SiamFC,
        *,
        scale_step: float = 1.0375,
        scale_penalty: float = 1.0,
        scale_lr: float = 0.59,
        window_influence: float = 0.176,
        upsample: int = 16,
    ) -> None:
        self.network = network.eval()
        self.scales = torch.tensor([scale_step**-1, 1.0, scale_step])
        self.scale_penalty = scale_penalty
        self.scale_lr = scale_lr
        self.window_influence = window_influence
        self.upsample = upsample
        self._kernel: Tensor | None = None

    def _device(self) -> torch.device:
        return module_device(self.network)

    @torch.no_grad()
    def init(self, image: Tensor, box: Tensor | Sequence[float]) -> None:
        x1, y1, x2, y2 = as_box(box).tolist()
        self._centre = torch.tensor([(x1 + x2) / 2, (y1 + y2) / 2], dtype=torch.float64)
        self._size = torch.tensor([x2 - x1, y2 - y1], dtype=torch.float64)
        side = _context_side(x2 - x1, y2 - y1)
        crop = crop_square(image, self._centre.tolist(), side, self.network.exemplar_size)
        self._kernel = self.network.embed(crop[None].to(self._device()))
        self._exemplar_side = side

    @torch.no_grad()
    def update(self, image: Tensor) -> Tensor:
        if self._kernel is None:
            raise RuntimeError("update before init: call init(image, box) on the first frame")
        net = self.network
        side = _context_side(*self._size.tolist()) * net.search_size / net.exemplar_size
        crops = torch.stack(
            [
                crop_square(image, self._centre.tolist(), side * s, net.search_size)
                for s in self.scales.tolist()
            ]
        )
        scores = net.score(self._kernel, net.embed(crops.to(self._device())))[:, 0].cpu().double()
        size = scores.shape[-1] * self.upsample
        responses = F.interpolate(
            scores[:, None], size=(size, size), mode="bicubic", align_corners=False
        )[:, 0]
        responses[0] *= self.scale_penalty
        responses[2] *= self.scale_penalty
        best = int(responses.flatten(1).amax(dim=1).argmax())
        response = responses[best] - responses[best].min()
        response = response / response.sum().clamp(min=1e-12)
        window = torch.outer(
            torch.hann_window(size, periodic=False, dtype=torch.float64),
            torch.hann_window(size, periodic=False, dtype=torch.float64),
        )
        response = (
            1 - self.window_influence
        ) * response + self.window_influence * window / window.sum()
        peak = divmod(int(response.argmax()), size)
        # peak offset from the centre, in upsampled-map cells -> search-crop pixels -> image pixels
        offset = torch.tensor([peak[1], peak[0]], dtype=torch.float64) - (size - 1) / 2
        offset = (
            offset
            * net.stride
            / self.upsample
            * (side * float(self.scales[best]) / net.search_size)
        )
        self._centre = self._centre + offset
        scale = (1 - self.scale_lr) + self.scale_lr * float(self.scales[best])
        self._size = self._size * scale
        half = self._size / 2
        return torch.cat([self._centre - half, self._centre + half])


def siamfc(**settings: Any) -> SiamFC:
    """SiamFC; ``width`` scales the embedding's channels (1.0: the paper's)."""
    return SiamFC(**settings)
