"""RAFT: torchvision parity (random weights, several sizes, a local state-dict file), any input
size, both calling conventions, the sequence loss by hand, and overfitting one pair."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from torch import nn

from structvision.convert import from_torchvision, read_state_dict_file
from structvision.models.flow import RAFT, raft, raft_small, sequence_loss
from structvision.ops.warp import warp


def _frames(height, width, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(2, 1, 3, height, width, generator=generator).unbind(0)


@pytest.mark.parametrize(
    ("builder", "sizes"),
    [
        (torchvision.models.optical_flow.raft_small, [(128, 136), (136, 128)]),
        (torchvision.models.optical_flow.raft_large, [(128, 128)]),
    ],
)
def test_converted_raft_gives_torchvision_flows(builder, sizes):
    torch.manual_seed(0)
    tv = builder().eval()
    ours = from_torchvision(tv)
    assert isinstance(ours, RAFT) and not ours.training
    for height, width in sizes:
        first, second = _frames(height, width)
        with torch.no_grad():
            theirs = tv(2 * first - 1, 2 * second - 1, num_flow_updates=6)
            mine = ours.flows(first, second, num_updates=6)
        assert len(mine) == len(theirs) == 6
        assert (mine[-1] - theirs[-1]).abs().max() < 1e-3


def test_raft_small_from_a_state_dict_file(tmp_path):
    torch.manual_seed(1)
    tv = torchvision.models.optical_flow.raft_small().eval()
    torch.save(tv.state_dict(), tmp_path / "raft_small.pth")
    ours = raft_small().eval()
    ours.load_state_dict(read_state_dict_file(tmp_path / "raft_small.pth"))
    first, second = _frames(128, 128, seed=2)
    with torch.no_grad():
        theirs = tv(2 * first - 1, 2 * second - 1, num_flow_updates=4)[-1]
        mine = ours.flows(first, second, num_updates=4)[-1]
    assert (mine - theirs).abs().max() < 1e-3


def test_any_size_and_both_calling_conventions():
    torch.manual_seed(0)
    model = raft_small(num_updates=3).eval()
    first, second = _frames(130, 141)
    with torch.no_grad():
        split = model(first, second)
        paired = model(torch.cat([first, second], dim=1))
        listed = model([torch.cat([first[0], second[0]])])
    assert split[0]["flow"].shape == (2, 130, 141)
    assert torch.equal(split[0]["flow"], paired[0]["flow"])
    assert torch.equal(split[0]["flow"], listed[0]["flow"])
    with pytest.raises(ValueError, match=r"\(B, 6, H, W\) frame pairs"):
        model(first)
    with pytest.raises(ValueError, match="too small"):
        model(*_frames(64, 64))


def test_a_traced_raft_follows_the_input_size():
    """Traced at one size (as TorchScript and ONNX export trace it), the model gives the eager
    flows at another: the lookup's grid arithmetic keeps the sizes symbolic while tracing
    (the eager shortcut makes a tensor of them, which a trace would freeze)."""

    class Final(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.raft = raft_small(num_updates=2).eval()

        def forward(self, first, second):
            return self.raft.flows(first, second, 2, every_step=False)[-1]

    torch.manual_seed(0)
    final = Final().eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's warnings about Python values
        traced = torch.jit.trace(final, _frames(128, 128), check_trace=False)
        first, second = _frames(128, 192, seed=3)
        assert (traced(first, second) - final(first, second)).abs().max() < 1e-4


@pytest.mark.parametrize(
    ("kernels", "paddings"),
    [(((9, 9),), ((4, 4),)), (((1, 5), (5, 1)), ((0, 2), (2, 0))), ((3,), (1,))],
)
def test_refinement_step_equals_the_plain_modules(kernels, paddings):
    """The inference step (context folded in, correlation rows, one product for every layer
    that reads the flow, over the largest window) gives what the modules' own forward gives,
    for GRU windows smaller and larger than the flow layer's 7x7."""
    from structvision.models.flow.raft import RAFT_CONFIGS, coords_grid

    torch.manual_seed(0)
    config = {**RAFT_CONFIGS["small"], "gru_kernels": kernels, "gru_paddings": paddings}
    model = raft(**config).eval()
    block, correlation = model.update_block, model.corr_block
    hidden, context = torch.randn(2, 96, 16, 16).tanh(), torch.rand(2, 64, 16, 16)
    pyramid = correlation.build(torch.randn(2, 128, 16, 16), torch.randn(2, 128, 16, 16))
    flow = 3 * torch.randn(2, 2, 16, 16)
    coords = coords_grid(2, 16, 16, flow.device) + flow
    with torch.no_grad():
        plain = block(hidden, context, correlation.lookup(pyramid, coords), flow)
        rows = correlation.lookup_rows(pyramid, coords, correlation.grid_terms(pyramid, coords))
        fast = block.step(hidden, block.prepare(context), rows, flow)
    for want, got in zip(plain, fast, strict=True):
        assert (want - got).abs().max() < 1e-4


@pytest.mark.parametrize(("kernel", "padding"), [(3, 1), ((1, 5), (0, 2)), (5, 2)])
def test_narrow_conv_is_the_convolution(kernel, padding):
    from structvision.models.flow.raft import narrow_conv

    torch.manual_seed(0)
    layer = nn.Conv2d(12, 2, kernel, padding=padding)
    x = torch.randn(3, 12, 9, 14, requires_grad=True)
    want = layer(x)
    got = narrow_conv(x, layer.weight, layer.bias, layer.padding)
    assert got.shape == want.shape and (got - want).abs().max() < 1e-5
    (grad_want,) = torch.autograd.grad(want.square().sum(), x)
    (grad_got,) = torch.autograd.grad(got.square().sum(), x)
    assert (grad_got - grad_want).abs().max() < 1e-4


def test_sequence_loss_by_hand():
    target = torch.zeros(1, 2, 1, 2)
    known = torch.tensor([[[True, False]]])
    flows = [torch.full((1, 2, 1, 2), 1.0), torch.full((1, 2, 1, 2), 3.0)]
    flows[1][0, :, 0, 1] = 100.0  # where there is no ground truth: ignored
    # step weights 0.8^1 and 0.8^0; mean L1 per component over the one known pixel
    assert sequence_loss(flows, target, known, gamma=0.8).item() == pytest.approx(0.8 * 1 + 3)


def _tiny_raft():
    return raft(
        feature_layers=(8, 8, 16, 16, 32),
        feature_block="residual",
        feature_norm="instance",
        context_layers=(8, 8, 16, 16, 40),
        context_block="residual",
        context_norm="none",
        num_levels=2,
        radius=2,
        corr_layers=(16,),
        flow_layers=(16, 8),
        motion_channels=24,
        hidden_size=16,
        gru_kernels=(3,),
        gru_paddings=(1,),
        flow_head_hidden=16,
        convex_upsampling=True,
        train_updates=4,
        num_updates=4,
    )


def test_raft_overfits_one_pair():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    texture = torch.rand(1, 3, 12, 16, generator=generator)
    first = torch.nn.functional.interpolate(texture, size=(48, 64), mode="bicubic").clamp(0, 1)
    flow = torch.zeros(1, 2, 48, 64)
    flow[:, 0], flow[:, 1] = 2.5, -1.5
    second = warp(first, -flow, padding_mode="border")  # first(x) = second(x + flow)
    model = _tiny_raft()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for _ in range(80):
        loss = model(first, second, [{"flow": flow[0]}])["loss_flow"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        predicted = model(first, second)[0]["flow"]
    assert (predicted - flow[0]).norm(dim=0).mean() < 0.5  # from 2.9 px at zero flow


def test_correlation_stays_float32_under_bf16_autocast():
    torch.manual_seed(0)
    model = raft_small(num_updates=3).eval()
    first, second = _frames(128, 128, seed=3)
    features = torch.randn(1, 8, 16, 16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        pyramid = model.corr_block.build(features.bfloat16(), features.bfloat16())
        mixed = model(first, second)[0]["flow"].float()
    assert all(level.dtype == torch.float32 for level in pyramid)
    with torch.no_grad():
        full = model(first, second)[0]["flow"]
    assert (mixed - full).abs().mean() < 0.1 * full.abs().mean() + 0.05


def test_instance_norm_equals_torch_instance_norm_both_ways():
    from structvision.models.flow.raft import _norm

    torch.manual_seed(0)
    x = (torch.randn(3, 5, 7, 9) * 4 + 2).requires_grad_()
    upstream = torch.randn(3, 5, 7, 9)
    norm = _norm("instance", 5)
    ours = norm(x)
    (gradient,) = torch.autograd.grad(ours, x, upstream)
    reference = nn.InstanceNorm2d(5)(x)
    (expected,) = torch.autograd.grad(reference, x, upstream)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)
    torch.testing.assert_close(gradient, expected, rtol=0, atol=1e-5)
    assert norm.state_dict().keys() == nn.InstanceNorm2d(5).state_dict().keys()
