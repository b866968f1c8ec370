"""SiamFC: the crop geometry, the labels, the score's cross-correlation against a hand-made
convolution, overfitting, and tracking a moving textured square."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from structvision.evaluation.tracking import paired_iou
from structvision.models.tracking.siamfc import (
    SiamFCTracker,
    _context_side,
    crop_square,
    logistic_labels,
    siamfc,
)


def test_crop_square_takes_the_square_and_fills_with_the_mean():
    image = torch.arange(3 * 8 * 8, dtype=torch.float32).view(3, 8, 8)
    same = crop_square(image, (4.0, 4.0), 8.0, 8)
    assert torch.allclose(same, image, atol=1e-4)  # the whole image, same size
    shifted = crop_square(image, (5.0, 4.0), 8.0, 8)
    assert torch.allclose(shifted[:, :, :7], image[:, :, 1:], atol=1e-4)
    assert torch.allclose(shifted[:, :, 7], image.mean(dim=(1, 2))[:, None].expand(3, 8), atol=1e-4)


def test_labels_and_the_score_cross_correlation():
    labels = logistic_labels(17, 8, 16.0)
    assert labels.sum() == 13 and labels[8, 8] == 1 and labels[8, 10] == 1 and labels[8, 11] == 0
    net = siamfc(width=0.1)
    kernels = torch.randn(2, 4, 3, 3)
    maps = torch.randn(2, 4, 7, 7)
    expected = torch.cat([F.conv2d(maps[i : i + 1], kernels[i : i + 1]) for i in range(2)])
    assert torch.allclose(net.score(kernels, maps), expected * 1e-3, atol=1e-6)


def _scene(frames=10):
    generator = torch.Generator().manual_seed(0)
    background = torch.rand(3, 16, 24, generator=generator) * 0.4
    background = F.interpolate(background[None], size=(96, 128))[0]
    patch = F.interpolate(torch.rand(1, 3, 4, 4, generator=generator) * 0.5 + 0.5, size=(24, 24))[0]
    images, boxes = [], []
    for t in range(frames):
        x, y = 20 + 4 * t, 30 + 2 * t
        image = background.clone()
        image[:, y : y + 24, x : x + 24] = patch
        images.append(image)
        boxes.append([x, y, x + 24, y + 24])
    return images, torch.tensor(boxes, dtype=torch.float64)


def test_siamfc_overfits_and_then_tracks():
    torch.manual_seed(0)
    images, truth = _scene()
    net = siamfc(width=0.25)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    side = _context_side(24, 24)
    centre = lambda t: ((truth[t, :2] + truth[t, 2:]) / 2).tolist()  # noqa: E731
    exemplar = crop_square(images[0], centre(0), side, 127)
    losses = []
    for step in range(30):
        j = 1 + step % 9
        shift = torch.randn(2) * 4
        search = crop_square(
            images[j], [c + float(s) for c, s in zip(centre(j), shift, strict=True)], side * 2, 255
        )
        loss = net([{"exemplar": exemplar, "search": search}])["loss_logistic"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < sum(losses[:5])
    boxes, seconds = SiamFCTracker(net.eval()).track(images, truth[0])
    assert boxes.shape == (10, 4) and seconds > 0
    assert paired_iou(boxes, truth)[1:].mean() > 0.4
