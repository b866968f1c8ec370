"""Global Lambertian lighting: levels by hand, recovery of a known light, re-rendering."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from structvision.data.spec import build_dataset
from structvision.evaluation.intrinsic import IntrinsicEvaluator
from structvision.models.intrinsic import Lighting, fit_lighting, relight_shading, shading_levels


def _hemisphere(height: int = 24, width: int = 32) -> torch.Tensor:
    """Unit normals of a bump facing the camera (-z towards the viewer), every direction a
    little different."""
    ys, xs = torch.meshgrid(
        torch.linspace(-0.9, 0.9, height), torch.linspace(-0.9, 0.9, width), indexing="ij"
    )
    return F.normalize(torch.stack([xs, ys, -torch.ones_like(xs)]), dim=0)


LIGHT = Lighting(
    ambient=torch.tensor([0.30, 0.28, 0.27]),
    directions=F.normalize(torch.tensor([[0.4, -0.6, -0.7]]), dim=1),
    colors=torch.tensor([[0.65, 0.60, 0.55]]),
)


def _scene(height: int = 24, width: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Normals and their exact shading under LIGHT, a cast shadow over the left third and sky
    (shading 1) over the top two rows."""
    normals = _hemisphere(height, width)
    cosine = (normals.permute(1, 2, 0) @ LIGHT.directions[0]).clamp(min=0)
    lit = torch.ones(height, width)
    lit[:, : width // 3] = 0
    shading = LIGHT.ambient[:, None, None] + LIGHT.colors[0][:, None, None] * cosine * lit
    shading[:, :2] = 1.0
    return normals, shading


def test_levels_by_hand():
    normals = torch.zeros(3, 1, 2)
    normals[:, 0, 0] = LIGHT.directions[0]  # facing the light: cosine 1
    normals[:, 0, 1] = -LIGHT.directions[0]  # facing away: cosine 0
    two = Lighting(
        torch.full((3,), 0.2), torch.cat([LIGHT.directions, -LIGHT.directions]), torch.eye(3)[:2]
    )
    levels = shading_levels(normals, two)
    assert levels.shape == (5, 3, 1, 2)
    # patterns (off, off), (off, on), (on, off), (on, on), then the sky
    assert torch.allclose(levels[0, :, 0, 0], torch.full((3,), 0.2))
    assert torch.allclose(levels[1, :, 0, 0], torch.full((3,), 0.2))  # light 2 is behind it
    assert torch.allclose(levels[2, :, 0, 0], torch.tensor([1.2, 0.2, 0.2]))
    assert torch.allclose(levels[3, :, 0, 1], torch.tensor([0.2, 1.2, 0.2]))
    assert torch.allclose(levels[4], torch.ones(3, 1, 2))


def test_fit_recovers_a_known_light_and_relighting_reproduces_the_shading():
    normals, shading = _scene()
    fitted = fit_lighting(shading, normals, num_lights=1)
    assert torch.allclose(fitted.ambient, LIGHT.ambient, atol=0.01)
    assert torch.allclose(fitted.colors, LIGHT.colors, atol=0.02)
    angle = math.degrees(math.acos(min(1.0, float(fitted.directions[0] @ LIGHT.directions[0]))))
    assert angle < 2.0
    relit = relight_shading(shading, normals, fitted, smooth=1)
    assert (relit - shading).abs().max() < 0.02


def test_relighting_removes_per_pixel_noise_but_keeps_the_shadow():
    normals, shading = _scene()
    noise = torch.exp(0.05 * torch.randn(shading.shape, generator=torch.Generator().manual_seed(0)))
    noisy = shading * noise
    relit = relight_shading(noisy, normals, num_lights=1, smooth=1)
    before = (noisy.log() - shading.log()).abs().mean()
    after = (relit.log() - shading.log()).abs().mean()
    assert after < before / 3
    assert torch.allclose(relit[:, 10:, :5], shading[:, 10:, :5], atol=0.02)  # in shadow


def test_relighting_the_true_shading_of_world_images_keeps_whdr_near_zero():
    dataset = build_dataset("world:num_images=2,image_size=(64,128)", split="val")
    evaluator = IntrinsicEvaluator(num_judgements=200)
    for index in range(len(dataset)):
        image, target = dataset[index]
        relit = relight_shading(target["shading"], target["normals"], num_lights=2, smooth=1)
        close = ((relit.log() - target["shading"].log()).abs() < 0.02).all(0).float().mean()
        assert close > 0.95
        evaluator.update([target], [{"albedo": image / relit, "shading": relit}])
    assert evaluator.compute()["whdr"] < 0.05


def test_bad_input_is_named():
    normals, shading = _scene()
    with pytest.raises(ValueError, match="normals must be"):
        fit_lighting(shading, normals[:, :5])
    with pytest.raises(ValueError, match="shading must be"):
        relight_shading(shading[:2], normals)
    with pytest.raises(ValueError, match="smooth"):
        relight_shading(shading, normals, LIGHT, smooth=2)
    with pytest.raises(ValueError, match="num_lights"):
        fit_lighting(shading, normals, num_lights=0)
    with pytest.raises(ValueError, match="ambient"):
        Lighting(torch.zeros(2), LIGHT.directions, LIGHT.colors)


def test_the_fit_works_inside_an_inference_mode_evaluation_loop():
    normals, shading = _scene()
    with torch.inference_mode():
        relit = relight_shading(shading, normals, num_lights=1, smooth=1)
    assert (relit - shading).abs().max() < 0.02


def test_a_grey_shading_is_relit_grey():
    normals, shading = _scene()
    grey = shading.mean(0, keepdim=True).double()
    relit = relight_shading(grey, normals, num_lights=1, smooth=1)
    assert relit.shape == grey.shape and relit.dtype == torch.float64
    assert (relit - grey).abs().max() < 0.02
