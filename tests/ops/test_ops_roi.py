import pytest
import torch

from structvision.ops import RoIAlign, RoIPool, roi_align, roi_pool


def ramp() -> torch.Tensor:
    """(1, 1, 5, 5) input with value 5 * y + x at cell (y, x)."""
    return torch.arange(25.0).reshape(1, 1, 5, 5)


def test_roi_align_ramp_aligned_vs_legacy():
    boxes = torch.tensor([[0.0, 1.0, 1.0, 3.0, 3.0]])  # (batch, x1, y1, x2, y2)
    # aligned: box shifted to [0.5, 2.5]; bin centres at 1.0 and 2.0 -> cells exactly
    aligned = roi_align(ramp(), boxes, (2, 2), aligned=True)
    assert torch.equal(aligned, torch.tensor([[[[6.0, 7.0], [11.0, 12.0]]]]))
    # legacy: no shift; bin centres at 1.5 and 2.5 -> bilinear between cells
    legacy = roi_align(ramp(), boxes, 2, aligned=False)
    assert torch.equal(legacy, torch.tensor([[[[9.0, 10.0], [14.0, 15.0]]]]))
    # bilinear is exact on a linear ramp, so 2 x 2 samples per bin average to the same values
    assert torch.equal(roi_align(ramp(), boxes, 2, sampling_ratio=2), legacy)


def test_roi_align_bilinear_weights_and_borders():
    impulse = torch.zeros(1, 1, 5, 5)
    impulse[0, 0, 2, 2] = 1.0
    # aligned, one sample at (x, y) = (2.75 - 0.5, 2.25 - 0.5) = (2.25, 1.75): weight 0.75 * 0.75
    box = torch.tensor([[0.0, 2.25, 1.75, 3.25, 2.75]])
    value = roi_align(impulse, box, 1, sampling_ratio=1, aligned=True)
    assert value.item() == pytest.approx(0.5625)
    # legacy, one sample at (x, y) = (2, -0.5): y in [-1, 0] reads row 0 -> 5 * 0 + 2
    box = torch.tensor([[0.0, 1.5, -1.0, 2.5, 0.0]])
    assert roi_align(ramp(), box, 1, sampling_ratio=1).item() == pytest.approx(2.0)
    # samples more than one cell outside the map read 0
    far = torch.tensor([[0.0, -10.0, -10.0, -8.0, -8.0]])
    assert roi_align(torch.ones(1, 1, 5, 5), far, 1, aligned=True).item() == 0.0


def test_roi_pool_hand_case():
    # box (0, 0, 3, 3) covers 4 x 4 cells (x2 inclusive); 2 x 2 bins of 2 x 2 cells each
    pooled = roi_pool(ramp(), torch.tensor([[0.0, 0.0, 0.0, 3.0, 3.0]]), (2, 2))
    assert torch.equal(pooled, torch.tensor([[[[6.0, 8.0], [16.0, 18.0]]]]))
    # spatial_scale 0.5: image box (0, 0, 6, 6) -> cells 0..3, same result
    scaled = roi_pool(ramp(), torch.tensor([[0.0, 0.0, 0.0, 6.0, 6.0]]), 2, spatial_scale=0.5)
    assert torch.equal(scaled, pooled)


def test_list_boxes_equal_batch_index_rows_and_spatial_scale():
    gen = torch.Generator().manual_seed(0)
    features = torch.rand(2, 3, 8, 10, generator=gen)
    boxes0 = torch.tensor([[1.0, 2.0, 7.5, 6.0], [0.0, 0.0, 9.0, 7.0]])
    boxes1 = torch.tensor([[2.5, 1.0, 4.0, 3.0]])
    rows = torch.cat(
        (torch.cat((torch.zeros(2, 1), boxes0), 1), torch.cat((torch.ones(1, 1), boxes1), 1))
    )
    for op in (roi_align, roi_pool):
        from_list = op(features, [boxes0, boxes1], (3, 2))
        assert from_list.shape == (3, 3, 3, 2)
        assert torch.equal(from_list, op(features, rows, (3, 2)))
    half_scale = roi_align(features, [boxes0 * 2, boxes1 * 2], 3, spatial_scale=0.5, aligned=True)
    torch.testing.assert_close(half_scale, roi_align(features, [boxes0, boxes1], 3, aligned=True))
    empty = roi_align(features, [torch.zeros(0, 4), torch.zeros(0, 4)], 3)
    assert empty.shape == (0, 3, 3, 3)


def test_modules_match_functions():
    gen = torch.Generator().manual_seed(1)
    features = torch.rand(1, 2, 12, 12, generator=gen)
    boxes = [torch.tensor([[4.0, 4.0, 20.0, 16.0]])]
    align = RoIAlign((2, 3), spatial_scale=0.5, sampling_ratio=2, aligned=True)
    expected = roi_align(features, boxes, (2, 3), 0.5, sampling_ratio=2, aligned=True)
    assert torch.equal(align(features, boxes), expected)
    assert "aligned=True" in repr(align)
    pool = RoIPool(2, spatial_scale=0.5)
    assert torch.equal(pool(features, boxes), roi_pool(features, boxes, 2, 0.5))


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(2)
    features = torch.rand(1, 2, 5, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    boxes = torch.tensor(
        [[0.0, 0.5, 1.0, 4.2, 3.7], [0.0, 1.3, 0.2, 5.0, 4.9]], dtype=torch.float64
    )
    for aligned in (False, True):
        assert torch.autograd.gradcheck(
            lambda x, a=aligned: roi_align(x, boxes, 2, sampling_ratio=2, aligned=a), (features,)
        )
    # max pooling is differentiable away from ties (random input has none)
    assert torch.autograd.gradcheck(lambda x: roi_pool(x, boxes, 2), (features,))


def test_validation_errors():
    features = torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        roi_align(features[0], torch.zeros(1, 5), 2)
    with pytest.raises(ValueError, match=r"\(K, 5\)"):
        roi_align(features, torch.zeros(1, 4), 2)
    with pytest.raises(ValueError, match="one \\(N_i, 4\\) tensor per image"):
        roi_pool(features, [torch.zeros(1, 4)], 2)
    with pytest.raises(ValueError, match=r"boxes\[1\] must have shape \(N, 4\)"):
        roi_align(features, [torch.zeros(1, 4), torch.zeros(1, 5)], 2)
    with pytest.raises(ValueError, match="dtype"):
        roi_align(features, torch.zeros(1, 5, dtype=torch.float64), 2)
    with pytest.raises(ValueError, match="output_size"):
        roi_align(features, torch.zeros(1, 5), (2, 0))


@pytest.mark.parametrize("op", ["align", "pool"])
def test_many_boxes_pool_in_threads_to_the_same_bits(op, monkeypatch):
    """At CPU inference the boxes split into one chunk per thread, pooled at once: the result
    equals one kernel call bit for bit, in the boxes' order, for both box forms; with a
    gradient wanted, or one thread, it is one kernel call."""
    import torchvision

    from structvision.ops import roi as roi_module

    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 8, 24, 32, generator=generator)
    corners = torch.rand(90, 2, generator=generator) * torch.tensor([100.0, 70.0])
    boxes = [
        torch.cat([corners[:50], corners[:50] + 20], dim=1),
        torch.cat([corners[50:], corners[50:] + 30], dim=1),
    ]
    if op == "align":
        ours = lambda x, b: roi_align(x, b, 7, 0.25, 2, True)  # noqa: E731
        theirs = lambda x, b: torchvision.ops.roi_align(x, b, (7, 7), 0.25, 2, True)  # noqa: E731
    else:
        ours = lambda x, b: roi_pool(x, b, 7, 0.25)  # noqa: E731
        theirs = lambda x, b: torchvision.ops.roi_pool(x, b, (7, 7), 0.25)  # noqa: E731
    calls = []
    kernel = getattr(torchvision.ops, f"roi_{op}")

    def counted(features, boxes, *args, **kwargs):
        calls.append(len(boxes) if isinstance(boxes, torch.Tensor) else "list")
        return kernel(features, boxes, *args, **kwargs)

    monkeypatch.setattr(torchvision.ops, f"roi_{op}", counted)
    want = theirs(features, boxes)
    calls.clear()
    torch.set_num_threads(3)  # the autouse fixture restores it
    with torch.no_grad():
        got = ours(features, boxes)
        rows = roi_module._as_rows(boxes)
        got_rows = ours(features, rows)
    assert calls == [30, 30, 30, 30, 30, 30]  # 90 boxes, three chunks, twice
    assert torch.equal(got, want) and torch.equal(got_rows, want)
    calls.clear()
    leaf = features.clone().requires_grad_()
    assert torch.equal(ours(leaf, boxes), want) and calls == ["list"]  # autograd: one call
    calls.clear()
    torch.set_num_threads(1)
    with torch.no_grad():
        assert torch.equal(ours(features, boxes), want) and calls == ["list"]


def test_a_forked_child_makes_its_own_thread_pool(monkeypatch):
    """A forked process inherits the pool object but not its threads: it must not reuse it."""
    from structvision.ops import roi as roi_module

    first = roi_module._executor(2)
    assert roi_module._executor(2) is first  # reused in the same process
    monkeypatch.setattr(roi_module, "_pool_pid", -1)  # what a forked child sees
    second = roi_module._executor(2)
    assert second is not first and roi_module._executor(2) is second
