"""The multi-scale networks overfit one world image: normals (with depth) and intrinsics."""

from __future__ import annotations

import pytest
import torch

from structvision.data.spec import build_dataset
from structvision.evaluation.intrinsic import IntrinsicEvaluator, normal_errors
from structvision.models.intrinsic import IntrinsicNet, NormalsNet, relight_shading


def _sample():
    return build_dataset("world:height=32,width=64,num_images=1", split="val")[0]


def test_normals_net_overfits_one_image_with_depth():
    torch.manual_seed(0)
    image, target = _sample()
    model = NormalsNet(width=8, with_depth=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.eval()
    with torch.no_grad():
        before = normal_errors(model([image])[0]["normals"], target["normals"])["mean"]
    model.train()
    for _ in range(80):
        losses = model([image], [target])
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        prediction = model([image])[0]
    after = normal_errors(prediction["normals"], target["normals"])["mean"]
    assert prediction["depth"].shape == (32, 64) and (prediction["depth"] > 0).all()
    assert after < 0.5 * before and after < 25


def test_intrinsic_net_overfits_one_image():
    torch.manual_seed(0)
    image, target = _sample()
    model = IntrinsicNet(width=8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def score() -> float:
        model.eval()
        with torch.no_grad():
            evaluator = IntrinsicEvaluator(num_judgements=100)
            evaluator.update([target], model([image]))
        model.train()
        return evaluator.compute()["lmse"]

    before = score()
    for _ in range(80):
        loss = model([image], [target])["loss_intrinsic"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert score() < 0.5 * before


def test_intrinsic_albedo_is_the_image_over_the_shading_unless_the_head_is_asked_for():
    torch.manual_seed(0)
    image, _ = _sample()
    model = IntrinsicNet(width=8).eval()
    with torch.no_grad():
        prediction = model([image])[0]
        raw = model.split(model.raw(image[None])[1])
    torch.testing.assert_close(prediction["albedo"] * prediction["shading"], image)
    torch.testing.assert_close(prediction["shading"], raw["shading"][0])
    model.albedo_from_image = False
    with torch.no_grad():
        head = model([image])[0]
    torch.testing.assert_close(head["albedo"], raw["albedo"][0])
    assert not torch.allclose(head["albedo"] * head["shading"], image, atol=1e-2)
    grey = IntrinsicNet(width=8, shading_channels=1).eval()
    with torch.no_grad():
        prediction = grey([image])[0]
    assert prediction["albedo"].shape == image.shape and prediction["shading"].shape[0] == 1
    torch.testing.assert_close(prediction["albedo"] * prediction["shading"], image)
    with pytest.raises(ValueError, match="albedo_from_image"):
        IntrinsicNet(width=8, albedo_from_image="yes")


def test_intrinsic_net_with_normals_learns_them_and_relights_its_shading():
    torch.manual_seed(0)
    image, target = _sample()
    model = IntrinsicNet(width=8, with_normals=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def mean_error() -> float:
        model.eval()
        with torch.no_grad():
            prediction = model([image])[0]
        model.train()
        return normal_errors(prediction["normals"], target["normals"])["mean"]

    before = mean_error()
    for _ in range(60):
        loss = model([image], [target])["loss_intrinsic"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert mean_error() < 0.5 * before

    model.eval()
    with torch.no_grad():
        plain = model([image])[0]
        model.relight = True
        relit = model([image])[0]
    assert relit["normals"].shape == (3, *image.shape[-2:])
    expected = relight_shading(plain["shading"], plain["normals"], num_lights=1)
    torch.testing.assert_close(relit["shading"], expected)
    torch.testing.assert_close(relit["albedo"] * relit["shading"], image)
    assert not torch.allclose(relit["shading"], plain["shading"], atol=1e-3)
    with pytest.raises(ValueError, match="with_normals"):
        IntrinsicNet(width=8, relight=True)
    with pytest.raises(ValueError, match="relight_lights"):
        IntrinsicNet(width=8, with_normals=True, relight=True, relight_lights=0)
