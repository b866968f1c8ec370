"""Permutohedral lattice: geometry, filtering against a brute-force Gaussian, gradients."""

from __future__ import annotations

import pytest
import torch

from structvision.ops import permutohedral as perm
from structvision.ops.permutohedral import PermutohedralLattice, permutohedral_filter


def _image_features(*, size: int, dim: int, seed: int) -> torch.Tensor:
    """(size*size, dim) features: pixel grid / 2 plus smooth 'colour' channels (float64)."""
    generator = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    xy = torch.stack([xs, ys], dim=-1).reshape(-1, 2).double() / 2.0
    left = (xs.reshape(-1, 1) < size // 2).double()
    colour = 2.0 * left + 0.3 * torch.rand(size * size, dim - 2, generator=generator).double()
    return torch.cat([xy, colour], dim=1)


def _brute_force(features: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    kernel = torch.exp(-0.5 * torch.cdist(features, features).square())  # (N, N)
    return kernel @ values


@pytest.mark.parametrize("dim", [1, 2, 5])
def test_barycentric_weights_reconstruct_the_elevated_point(dim: int) -> None:
    features = torch.randn(500, dim, generator=torch.Generator().manual_seed(dim)).double() * 3
    elevated = perm._elevate(features)  # (P, d+1)
    rem0, rank = perm._enclosing_simplex(elevated)
    weights = perm._barycentric_weights(elevated, rem0, rank)
    keys = perm.simplex_vertex_keys(rem0, rank)  # (P, d+1, d)
    corners = torch.cat([keys, -keys.sum(2, keepdim=True)], dim=2).double()  # (P, d+1, d+1)
    assert torch.allclose(elevated.sum(1), torch.zeros(500, dtype=torch.float64), atol=1e-9)
    assert torch.allclose((weights[:, :, None] * corners).sum(1), elevated, atol=1e-9)
    assert weights.min() >= -1e-12
    assert torch.allclose(weights.sum(1), torch.ones(500, dtype=torch.float64))
    for remainder in range(dim + 1):  # corner r is a remainder-r lattice point
        assert bool((corners[:, remainder].remainder(dim + 1) == remainder).all())


@pytest.mark.parametrize(("dim", "min_corr", "max_norm_err"), [(2, 0.99, 0.04), (5, 0.8, 0.05)])
def test_filter_matches_brute_force_gaussian(
    dim: int, min_corr: float, max_norm_err: float
) -> None:
    # The lattice only approximates exp(-|df|^2/2) (Adams et al.; same constants as densecrf):
    # raw outputs are off by a smooth, point-dependent scale (mean ratio 0.86 for d=2, 0.53 for
    # d=5 here), so raw values are compared by correlation (measured 0.996 / 0.846) and the
    # normalised filter K v / K 1 that the CRF uses by max abs error (measured 0.020 / 0.028).
    features = _image_features(size=8, dim=dim, seed=0)
    values = torch.rand(64, 3, generator=torch.Generator().manual_seed(1)).double()
    lattice = PermutohedralLattice.build(features)
    out = lattice.filter(values)
    expected = _brute_force(features, values)
    corr = torch.corrcoef(torch.stack([out.flatten(), expected.flatten()]))[0, 1]
    assert corr > min_corr
    ones = torch.ones(64, 1, dtype=torch.float64)
    normalised = out / lattice.filter(ones)
    expected_normalised = expected / _brute_force(features, ones)
    assert (normalised - expected_normalised).abs().max() < max_norm_err


def test_filter_of_a_point_on_a_lattice_vertex_is_hand_computable() -> None:
    # Feature 0 lands exactly on the corner a of its simplex {a, b, c} (weights 1, 0, 0), and
    # the lattice holds just those three vertices, pairwise neighbours along one direction each.
    # With v at a: blur along (a, c) gives c = v/2; along (b, c): b = v/4; along (a, b):
    # a = v + v/8. Slice reads a, times alpha = 1 / (1 + 2^-2): 1.125 * 0.8 v = 0.9 v.
    features = torch.zeros(1, 2, dtype=torch.float64)
    lattice = PermutohedralLattice.build(features)
    assert lattice.num_vertices == 3
    assert torch.equal(lattice.barycentric_weights, torch.tensor([[1.0, 0.0, 0.0]]).double())
    out = lattice.filter(torch.tensor([[2.0, -1.0]], dtype=torch.float64))
    assert torch.allclose(out, torch.tensor([[1.8, -0.9]], dtype=torch.float64))


def test_far_apart_points_do_not_interact_and_batches_are_separate() -> None:
    features = torch.tensor([[0.3, 0.1], [100.0, 0.0]], dtype=torch.float64)
    values = torch.tensor([[1.0], [5.0]], dtype=torch.float64)
    out = permutohedral_filter(features, values)
    alone = [permutohedral_filter(features[i : i + 1], values[i : i + 1]) for i in range(2)]
    assert torch.allclose(out, torch.cat(alone))
    # batched == per-image, even with identical features in both images
    feats = _image_features(size=6, dim=3, seed=2).float()
    batch_features = torch.stack([feats, feats * 0.5])  # (2, 36, 3)
    batch_values = torch.rand(2, 36, 4, generator=torch.Generator().manual_seed(3))
    batched = PermutohedralLattice.build(batch_features).filter(batch_values)
    for b in range(2):
        single = PermutohedralLattice.build(batch_features[b]).filter(batch_values[b])
        assert torch.allclose(batched[b], single, atol=1e-5)


def test_filter_gradcheck_and_adjoint() -> None:
    features = _image_features(size=4, dim=3, seed=4)
    lattice = PermutohedralLattice.build(features)
    values = torch.rand(16, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lattice.filter, (values,))
    # the lattice map K is linear; its adjoint (blurs reversed) satisfies <Kx, y> = <x, K^T y>
    x = torch.rand(16, 2, dtype=torch.float64)
    y = torch.rand(16, 2, dtype=torch.float64)
    lhs = (lattice.apply_linear(x) * y).sum()
    rhs = (x * lattice.apply_linear(y, reverse=True)).sum()
    assert torch.allclose(lhs, rhs)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="features"):
        PermutohedralLattice.build(torch.zeros(4, dtype=torch.float32))
    with pytest.raises(ValueError, match="finite"):
        PermutohedralLattice.build(torch.tensor([[float("nan"), 0.0]]))
    lattice = PermutohedralLattice.build(torch.rand(5, 2))
    with pytest.raises(ValueError, match="values"):
        lattice.filter(torch.rand(4, 3))
