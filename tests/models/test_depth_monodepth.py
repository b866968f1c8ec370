"""Tests for structvision.models.depth.monodepth."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from structvision.models.depth.losses import monodepth_loss
from structvision.models.depth.monodepth import (
    KITTI_FOCAL_FRACTION,
    Monodepth,
    monodepth_resnet18,
    monodepth_small,
    post_process_disparity,
)


def _images(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _small(**kwargs: object) -> Monodepth:
    torch.manual_seed(0)
    return monodepth_small(width=8, **kwargs)


# --------------------------------------------------------------------------------------------
# Shapes, units and camera values
# --------------------------------------------------------------------------------------------


def test_eval_outputs_for_odd_size() -> None:
    model = _small().eval()
    predictions = model(_images(2, 37, 70))
    assert len(predictions) == 2
    for prediction in predictions:
        assert set(prediction) == {"disparity", "disparity_right", "depth"}
        assert all(value.shape == (37, 70) for value in prediction.values())


def test_train_outputs_for_odd_size() -> None:
    model = _small().train()
    losses = model(_images(2, 37, 70), {"image_right": _images(2, 37, 70, seed=1)})
    assert set(losses) == {"loss_appearance", "loss_smoothness", "loss_lr"}
    total = sum(losses.values())
    assert total.dim() == 0 and torch.isfinite(total)
    total.backward()
    assert model.decoder.disp_heads[0].weight.grad is not None


def test_train_loss_on_padded_input_shifts_by_input_width_pixels() -> None:
    # W = 60 is padded to 64: the network's fractions of 60 become fractions of 64 for the warp
    model = _small().train()
    left, right = _images(1, 32, 60), _images(1, 32, 60, seed=1)
    torch.manual_seed(0)
    losses = model(left, {"image_right": right})
    torch.manual_seed(0)
    with torch.no_grad():
        pyramid = model.disparity_pyramid(left)  # (1, 2, 32 / 2 ** s, 64 / 2 ** s)
    assert pyramid[0].shape == (1, 2, 32, 64)
    pad = (0, 4, 0, 0)
    expected = monodepth_loss(
        [d[:, :1] * 60 / 64 for d in pyramid],
        [d[:, 1:] * 60 / 64 for d in pyramid],
        F.pad(left, pad, mode="replicate"),
        F.pad(right, pad, mode="replicate"),
    )
    for name, value in expected.items():
        torch.testing.assert_close(losses[name].detach(), value, msg=name)


def test_lr_consistency_false_omits_loss_lr() -> None:
    model = _small(lr_consistency=False).train()
    losses = model(_images(1, 32, 64), {"image_right": _images(1, 32, 64, seed=1)})
    assert set(losses) == {"loss_appearance", "loss_smoothness"}


def test_disparity_bounded_by_max_disp_times_input_width() -> None:
    model = _small(max_disp=0.05).eval()
    disparity = model(_images(1, 37, 70))[0]["disparity"]
    assert bool((disparity > 0).all()) and bool((disparity < 0.05 * 70).all())
    # saturate the full-resolution head: the bound is reached in pixels of the *input*
    # width (70), not of the padded one (96)
    with torch.no_grad():
        model.decoder.disp_heads[-1].bias.fill_(30.0)
    saturated = model(_images(1, 37, 70))[0]
    torch.testing.assert_close(saturated["disparity"], torch.full((37, 70), 0.05 * 70))
    torch.testing.assert_close(saturated["disparity_right"], torch.full((37, 70), 0.05 * 70))


def test_depth_is_focal_times_baseline_over_disparity() -> None:
    model = _small().eval()
    images = _images(2, 32, 48)
    default = model(images)
    for prediction in default:  # focal 0.58 * W, baseline 0.54 m
        expected = KITTI_FOCAL_FRACTION * 48 * 0.54 / prediction["disparity"]
        torch.testing.assert_close(prediction["depth"], expected)
    cameras = {"focal": torch.tensor([100.0, 200.0]), "baseline": torch.tensor([0.5, 0.1])}
    given = model(images, cameras)
    for prediction, focal, baseline in zip(given, (100.0, 200.0), (0.5, 0.1), strict=True):
        torch.testing.assert_close(prediction["depth"], focal * baseline / prediction["disparity"])
    per_image = model(
        images, [{"focal": 100.0, "baseline": 0.5}, {"focal": 200.0, "baseline": 0.1}]
    )
    torch.testing.assert_close(per_image[1]["depth"], given[1]["depth"])
    fixed = monodepth_small(width=8, focal=50.0, baseline=2.0)
    fixed.load_state_dict(model.state_dict())
    fixed_prediction = fixed.eval()(images)[0]
    torch.testing.assert_close(fixed_prediction["depth"], 100.0 / default[0]["disparity"])


def test_batched_equals_per_image_and_list_input() -> None:
    model = _small().eval()
    images = _images(3, 40, 50)
    batched = model(images)
    as_list = model(list(images))
    for index in range(3):
        single = model(images[index : index + 1])[0]
        for key in ("disparity", "disparity_right", "depth"):
            torch.testing.assert_close(batched[index][key], single[key], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(as_list[index][key], batched[index][key])


def test_bad_inputs_raise() -> None:
    model = _small().train()
    with pytest.raises(ValueError, match="image_right"):
        model(_images(1, 32, 32), {"disparity": torch.rand(1, 32, 32)})
    with pytest.raises(ValueError, match=r"image_right.*\(1, 3, 32, 32\)"):
        model(_images(1, 32, 32), {"image_right": torch.rand(1, 3, 32, 16)})
    with pytest.raises(ValueError, match="targets must be given"):
        model(_images(1, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model.eval()(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="same shape"):
        model.eval()([torch.rand(3, 32, 32), torch.rand(3, 32, 40)])


# --------------------------------------------------------------------------------------------
# Post-processing
# --------------------------------------------------------------------------------------------


def test_post_process_combine_hand_case() -> None:
    width = 21  # x = 0, 0.05, 0.10, ...: l_mask = 1, 1, 0, ..., r_mask mirrored
    plain = torch.full((2, width), 2.0)
    flipped_back = torch.full((2, width), 4.0)
    combined = post_process_disparity(plain, flipped_back)
    expected = torch.full((width,), 3.0)  # the mean in the middle
    expected[:2] = 4.0  # left border from the flipped run
    expected[-2:] = 2.0  # right border from the plain run
    torch.testing.assert_close(combined, expected.expand(2, width))
    # the ramp: x = 1/15 gives l_mask = 1 - 20 * (1/15 - 0.05) = 2/3
    ramp = post_process_disparity(torch.zeros(1, 16), torch.ones(1, 16))
    assert ramp[0, 1].item() == pytest.approx(2 / 3 + (1 / 3) * 0.5, abs=1e-6)


def test_model_post_process_matches_two_plain_runs() -> None:
    model = _small().eval()
    images = _images(2, 36, 60)
    plain = model.disparities(images)  # (B, 2, H, W), fraction of W
    flipped_back = model.disparities(images.flip(-1)).flip(-1)
    result = model.predict(images, post_process=True)
    expected_left = post_process_disparity(plain[:, 0], flipped_back[:, 0]) * 60
    expected_right = post_process_disparity(flipped_back[:, 1], plain[:, 1]) * 60
    for index, prediction in enumerate(result):
        torch.testing.assert_close(prediction["disparity"], expected_left[index])
        torch.testing.assert_close(prediction["disparity_right"], expected_right[index])
    # the constructor flag turns it on in forward
    flagged = monodepth_small(width=8, post_process=True)
    flagged.load_state_dict(model.state_dict())
    flagged_result = flagged.eval()(images)
    torch.testing.assert_close(flagged_result[0]["disparity"], result[0]["disparity"])
    assert not torch.allclose(result[0]["disparity"], plain[0, 0] * 60)


def test_post_process_of_symmetric_image_is_symmetric_mean_in_the_middle() -> None:
    model = _small().eval()
    half = _images(1, 32, 32)
    symmetric = torch.cat([half, half.flip(-1)], dim=-1)  # equals its own mirror image
    plain = model.disparities(symmetric)[0, 0]
    processed = model.predict(symmetric, post_process=True)[0]["disparity"] / 64
    middle = slice(7, 57)  # both masks are 0: the mean of plain and its mirror image
    torch.testing.assert_close(processed[:, middle], (0.5 * (plain + plain.flip(-1)))[:, middle])


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def _stereo_pair(height: int, width: int, shift: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth random texture seen with a constant disparity of ``shift`` pixels:
    ``left(x) = right(x - shift)``; the left view's first ``shift`` columns are not in the
    right view, whose last ``shift`` columns show texture the left view does not."""
    factor = 8
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(
        1, 3, height // factor + 2, (width + shift) // factor + 2, generator=generator
    )
    texture = F.interpolate(coarse, scale_factor=factor, mode="bicubic", align_corners=False)
    texture = texture[..., factor : factor + height, factor : factor + width + shift]
    return texture[..., :width].contiguous(), texture[..., shift:].contiguous()


def test_overfit_one_stereo_pair_recovers_the_shift() -> None:
    left, right = _stereo_pair(32, 64, 4)
    model = _small().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    totals = []
    for _ in range(30):
        total = sum(model(left, {"image_right": right}).values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(total.item())
    assert totals[-1] < 0.4 * totals[0]
    with torch.no_grad():
        disparity_px = model.disparity_pyramid(left)[0][0, 0] * 64  # train-mode statistics
    assert abs(disparity_px[:, 8:].mean().item() - 4.0) < 1.0


def test_supervised_variant_returns_only_loss_supervised() -> None:
    model = _small(supervised=True).train()
    images = _images(2, 37, 70)
    disparity = torch.full((2, 37, 70), 3.0)
    disparity[:, :, :5] = 0.0  # invalid
    losses = model(images, {"disparity": disparity})
    assert set(losses) == {"loss_supervised"}
    losses["loss_supervised"].backward()
    valid = torch.ones(2, 37, 70, dtype=torch.bool)
    with_valid = model(images, {"disparity": disparity, "valid": valid})
    assert with_valid["loss_supervised"].item() != pytest.approx(losses["loss_supervised"].item())
    with pytest.raises(ValueError, match="disparity"):
        model(images, {"image_right": images})
    with pytest.raises(ValueError, match=r"valid.*\(2, 37, 70\)"):
        model(images, {"disparity": disparity, "valid": valid[:, :, :10]})


def test_supervised_loss_is_zero_for_the_true_disparity_scale() -> None:
    # saturated heads predict max_disp * W pixels everywhere: zero loss for that target
    model = _small(supervised=True, max_disp=0.1).train()
    with torch.no_grad():
        for head in model.decoder.disp_heads:
            head.bias.fill_(30.0)
    images = _images(1, 37, 70)
    loss = model(images, {"disparity": torch.full((1, 37, 70), 7.0)})["loss_supervised"]
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


# --------------------------------------------------------------------------------------------
# ResNet-18 builder
# --------------------------------------------------------------------------------------------


def test_resnet18_loads_torchvision_weights_and_runs(tmp_path) -> None:
    torch.manual_seed(1)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    model = monodepth_resnet18(weights_path=path)
    torch.testing.assert_close(model.encoder.resnet.conv1.weight, state["conv1.weight"])
    running_var = model.encoder.resnet.layer4[1].bn2.running_var
    torch.testing.assert_close(running_var, state["layer4.1.bn2.running_var"])
    assert model.encoder.out_channels == (64, 64, 128, 256, 512)
    assert all(p.requires_grad for p in model.parameters())
    assert isinstance(model.encoder.resnet.bn1, torch.nn.BatchNorm2d)
    prediction = model.eval()(_images(1, 33, 65))[0]
    assert prediction["disparity"].shape == (33, 65)


def test_disparity_heads_start_at_the_initial_disparity():
    import torch as _torch

    from structvision.models.depth import monodepth_small

    _torch.manual_seed(0)
    model = monodepth_small(width=8).eval()
    with _torch.no_grad():
        pyramid = model.disparity_pyramid(_torch.rand(2, 3, 64, 128))
    for disparity in pyramid:  # every scale starts near 0.02 of the width, not max_disp / 2
        assert abs(float(disparity.mean()) - 0.02) < 0.005
    with pytest.raises(ValueError, match="initial_disp"):
        from structvision.models.depth import MonodepthDecoder

        MonodepthDecoder(encoder_channels=(8, 8, 16, 32, 64), max_disp=0.3, initial_disp=0.5)
