"""Normals from depth on an exact plane, the Poisson solve, Retinex on a synthetic scene, and
the losses on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from structvision.evaluation.intrinsic import lmse
from structvision.models.intrinsic import (
    normal_loss,
    normals_from_depth,
    ordinal_reflectance_loss,
    poisson_integrate,
    reconstruction_loss,
    retinex,
    scale_invariant_log_loss,
)


def test_normals_from_the_depth_of_a_plane_are_its_normal():
    k = torch.tensor([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])
    n = torch.nn.functional.normalize(torch.tensor([0.2, -0.5, -1.0]), dim=0).double()
    ys, xs = torch.meshgrid(torch.arange(48) + 0.5, torch.arange(64) + 0.5, indexing="ij")
    rays = torch.stack([(xs - 32) / 50, (ys - 24) / 50, torch.ones_like(xs)]).double()
    depth = -3.0 / (n[:, None, None] * rays).sum(0)  # the plane n . X = -3, in front
    normals, valid = normals_from_depth(depth, k)
    assert valid.all()
    assert torch.allclose(normals.double(), n[:, None, None].expand(3, 48, 64), atol=1e-5)


def test_poisson_integration_recovers_a_field_from_its_gradients():
    generator = torch.Generator().manual_seed(0)
    field = torch.nn.functional.interpolate(
        torch.randn(1, 1, 6, 8, generator=generator), size=(24, 32), mode="bicubic"
    )[0, 0].double()
    grad_x = torch.zeros_like(field)
    grad_y = torch.zeros_like(field)
    grad_x[:, :-1] = field[:, 1:] - field[:, :-1]
    grad_y[:-1] = field[1:] - field[:-1]
    assert torch.allclose(poisson_integrate(grad_x, grad_y), field - field.mean(), atol=1e-8)


def test_retinex_separates_a_step_albedo_from_smooth_shading():
    ys, xs = torch.meshgrid(torch.linspace(0, 1, 40), torch.linspace(0, 1, 60), indexing="ij")
    albedo = torch.full((3, 40, 60), 0.3)
    albedo[:, 10:30, 20:45] = 0.75  # a patch of another reflectance
    albedo[0] *= 1.2
    shading = (0.4 + 0.6 * xs * (0.5 + 0.5 * ys))[None]  # smooth: small log gradients
    image = albedo * shading
    estimated_albedo, estimated_shading = retinex(image)
    scored = lmse(estimated_albedo, estimated_shading, albedo, shading)
    naive = lmse(image, torch.ones_like(shading), albedo, shading)
    assert scored < 0.02 and scored < 0.2 * naive


def test_losses_by_hand():
    gt = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert normal_loss(gt * 3, gt).item() == pytest.approx(0.0, abs=1e-6)
    assert normal_loss(-gt, gt).item() == pytest.approx(2.0)
    assert normal_loss(-gt, gt, kind="angular").item() == pytest.approx(
        math.pi, abs=3e-3
    )  # clamped
    values = torch.rand(2, 1, 3, 3) + 0.5
    assert scale_invariant_log_loss(values * 2, values).item() == pytest.approx(0.0, abs=1e-6)
    assert scale_invariant_log_loss(values * 2, values, lam=0.0).item() == pytest.approx(
        math.log(2) ** 2, rel=1e-4
    )
    image = values.expand(2, 3, 3, 3)
    assert reconstruction_loss(image / values, values, image).item() == pytest.approx(0.0, abs=1e-8)
    albedo = torch.tensor([[[[0.2, 0.5]]]]).expand(1, 3, 1, 2)
    agree = [[{"x1": 0, "y1": 0, "x2": 1, "y2": 0, "darker": "1", "weight": 1.0}]]
    disagree = [[{"x1": 0, "y1": 0, "x2": 1, "y2": 0, "darker": "E", "weight": 1.0}]]
    assert ordinal_reflectance_loss(albedo, agree).item() == 0.0
    second_darker = [[{"x1": 1, "y1": 0, "x2": 0, "y2": 0, "darker": "2", "weight": 1.0}]]
    assert ordinal_reflectance_loss(albedo, second_darker).item() == 0.0
    wrong_way = [[{"x1": 0, "y1": 0, "x2": 1, "y2": 0, "darker": "2", "weight": 3.0}]]
    expected_wrong = (math.log(1.1) + math.log(2.5)) ** 2  # wants r1 - r2 >= log 1.1, has -log 2.5
    assert ordinal_reflectance_loss(albedo, wrong_way).item() == pytest.approx(
        expected_wrong, rel=1e-4
    )
    expected = (math.log(2.5) - math.log(1.1)) ** 2
    assert ordinal_reflectance_loss(albedo, disagree).item() == pytest.approx(expected, rel=1e-4)
