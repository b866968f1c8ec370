"""Permutohedral lattice for fast high-dimensional Gaussian filtering (Adams, Baek & Davis 2010).

Filtering ``N`` values with the Gaussian kernel ``k(f_i, f_j) = exp(-|f_i - f_j|^2 / 2)`` over
``d``-dimensional features costs ``O(N^2)`` done directly. The permutohedral lattice does it
approximately in ``O(N d^2)``:

1. **embed** each feature vector into the hyperplane ``sum(x) = 0`` of ``R^(d+1)`` (scaled so
   that the lattice blur below approximates a unit-variance Gaussian),
2. find the enclosing simplex of the lattice ``A*_d`` and the point's barycentric weights on its
   ``d + 1`` vertices; vertices are hashed to a compact index with :func:`torch.unique`,
3. **splat**: each point adds its value, times its barycentric weight, to its ``d + 1`` vertices,
4. **blur** the lattice with the kernel ``[1, 2, 1] / 2`` along each of the ``d + 1`` lattice
   directions,
5. **slice**: each point reads back the barycentric-weighted sum of its vertices.

The constants (feature scale ``sqrt(2/3) (d+1) / sqrt((i+1)(i+2))``, blur ``[0.5, 1, 0.5]``,
output scale ``1 / (1 + 2^-d)``) are those of Krähenbühl's dense CRF code, so results match
pydensecrf's kernels. The filter includes the self term ``k(f_i, f_i) = 1`` as a dense Gaussian
filter does.

The lattice structure depends only on the features; :meth:`PermutohedralLattice.filter` is a
fixed linear map of the values (``alpha * S^T B_d ... B_0 S``), differentiable with respect to
them (its adjoint is the same map with the blur directions in reverse order). Everything is
tensor code on the features' device (CPU or CUDA); batches get their own sub-lattices by
putting the batch index into the vertex key. Splat, blur and slice are stored as sparse CSR
matrices, so filtering is ``d + 3`` sparse-dense products (multi-threaded on CPU, cuSPARSE on
CUDA).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

__all__ = ["PermutohedralLattice", "permutohedral_filter"]


class PermutohedralLattice:
    """A permutohedral lattice built over fixed features; filters any values on those points.

    Build it with :meth:`build`. Attributes (on the features' device), with ``P = B * N``
    points (batch-major) and ``M`` lattice vertices:

    - ``vertex_idxs``: ``(P, d + 1)`` int64, lattice vertex of each point's simplex corners,
    - ``barycentric_weights``: ``(P, d + 1)`` float, the point's weight on each corner,
    - ``slice_matrix``: ``(P, M)`` sparse CSR, barycentric interpolation times
      ``sqrt(alpha)`` (``alpha = 1 / (1 + 2^-d)``, densecrf's output scale); its transpose splats,
    - ``splat_matrix``: ``(M, P)`` sparse CSR, the transpose of ``slice_matrix``,
    - ``blur_matrices``: ``d + 1`` symmetric ``(M, M)`` sparse CSR blurs
      ``I + (shift_+ + shift_-) / 2``, one per lattice direction.
    """

    def __init__(
        self,
        *,
        vertex_idxs: Tensor,
        barycentric_weights: Tensor,
        slice_matrix: Tensor,
        splat_matrix: Tensor,
        blur_matrices: list[Tensor],
        batch_size: int,
        num_points: int,
    ) -> None:
        self.vertex_idxs = vertex_idxs  # (P, d + 1)
        self.barycentric_weights = barycentric_weights  # (P, d + 1)
        self.slice_matrix = slice_matrix  # (P, M)
        self.splat_matrix = splat_matrix  # (M, P)
        self.blur_matrices = blur_matrices  # d + 1 of (M, M)
        self.batch_size = batch_size
        self.num_points = num_points
        self.num_vertices = splat_matrix.shape[0]
        self.dim = vertex_idxs.shape[1] - 1
        self.alpha = 1.0 / (1.0 + 2.0 ** (-self.dim))
        self._matrices_by_dtype: dict[torch.dtype, tuple[Tensor, Tensor, list[Tensor]]] = {
            slice_matrix.dtype: (slice_matrix, splat_matrix, blur_matrices)
        }

    @classmethod
    def build(cls, features: Tensor) -> PermutohedralLattice:
        """Build the lattice of ``(N, d)`` or batched ``(B, N, d)`` float features.

        Features are in kernel units: the filter approximates ``exp(-|f_i - f_j|^2 / 2)``, so
        divide positions/colours by their standard deviations first (``x / sxy``). In a batch,
        points of different images never interact. Float64 features give a float64 lattice,
        anything else float32.
        """
        if features.dim() not in (2, 3) or not features.is_floating_point():
            raise ValueError(
                "features must be a float (N, d) or (B, N, d) tensor, got "
                f"{tuple(features.shape)} {features.dtype}"
            )
        batched = features.reshape(-1, *features.shape[-2:])  # (B, N, d)
        batch_size, num_points, dim = batched.shape
        if dim < 1 or num_points < 1:
            raise ValueError(
                f"features must have N >= 1 points and d >= 1, got {tuple(features.shape)}"
            )
        if not bool(torch.isfinite(batched).all()):
            raise ValueError("features must be finite (no NaN or Inf)")
        dtype = torch.float64 if batched.dtype == torch.float64 else torch.float32
        points = batched.reshape(batch_size * num_points, dim).to(dtype)  # (P, d)
        elevated = _elevate(points)  # (P, d + 1)
        rem0, rank = _enclosing_simplex(elevated)  # (P, d + 1) each
        weights = _barycentric_weights(elevated, rem0, rank)  # (P, d + 1)
        codes, strides = _vertex_codes(rem0, rank, batch_size=batch_size)  # (P, d+1), (d,)
        root_alpha = math.sqrt(1.0 / (1.0 + 2.0 ** (-dim)))
        vertex_idxs, splat_matrix, unique_codes = _hash_and_splat(codes, weights * root_alpha)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            slice_matrix = _slice_matrix(vertex_idxs, weights * root_alpha, unique_codes.numel())
            blur_matrices = _blur_matrices(unique_codes, strides, dtype=dtype)
        return cls(
            vertex_idxs=vertex_idxs,
            barycentric_weights=weights,
            slice_matrix=slice_matrix,
            splat_matrix=splat_matrix,
            blur_matrices=blur_matrices,
            batch_size=batch_size,
            num_points=num_points,
        )

    def filter(self, values: Tensor) -> Tensor:
        """Gaussian-filter ``(B * N, C)`` values (or ``(B, N, C)``; ``(N, C)`` when unbatched).

        Returns the same shape: ``out_i ~= sum_j exp(-|f_i - f_j|^2 / 2) values_j`` (self term
        included, points of other images excluded). Differentiable with respect to ``values``.
        """
        num_total = self.batch_size * self.num_points
        if values.dim() == 2 and values.shape[0] == num_total:
            flat_values = values
        elif values.dim() == 3 and tuple(values.shape[:2]) == (self.batch_size, self.num_points):
            flat_values = values.reshape(num_total, values.shape[2])
        else:
            raise ValueError(
                f"values must be (B*N, C) = ({num_total}, C) or (B, N, C) = "
                f"({self.batch_size}, {self.num_points}, C), got {tuple(values.shape)}"
            )
        if values.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"values must be float32 or float64, got {values.dtype}")
        out = _LatticeFilter.apply(flat_values.contiguous(), self, False)  # (P, C)
        return out.reshape(values.shape)

    def apply_linear(self, values: Tensor, *, reverse: bool = False) -> Tensor:
        """The filter as a plain linear map of ``(P, C)`` values, without autograd bookkeeping.

        ``reverse=True`` applies the adjoint (the blur directions in reverse order).
        """
        slice_matrix, splat_matrix, blur_matrices = self._matrices(values.dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lattice_values = _sparse_mm(splat_matrix, values)  # (M, C)
            for blur in reversed(blur_matrices) if reverse else blur_matrices:
                lattice_values = _sparse_mm(blur, lattice_values)
            return _sparse_mm(slice_matrix, lattice_values)  # (P, C); sqrt(alpha) folded in

    def scaled(self, point_scale: Tensor) -> PermutohedralLattice:
        """The lattice of ``diag(s) K diag(s)`` for a ``(P,)`` (or ``(B, N)``) scale ``s``.

        Folds a symmetric normalisation (``s = (K 1)^-1/2``), and optionally ``sqrt(weight)``,
        into the slice and splat matrices so that filtering costs nothing extra.
        """
        num_total = self.batch_size * self.num_points
        if point_scale.numel() != num_total:
            raise ValueError(
                f"point_scale must have B*N = {num_total} entries, got {tuple(point_scale.shape)}"
            )
        scale = point_scale.detach().reshape(num_total).to(self.slice_matrix.dtype)  # (P,)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            slice_matrix = _scale_csr(self.slice_matrix, scale[self._slice_rows()])
            splat_matrix = _scale_csr(
                self.splat_matrix, scale[self.splat_matrix.col_indices().long()]
            )
        return PermutohedralLattice(
            vertex_idxs=self.vertex_idxs,
            barycentric_weights=self.barycentric_weights * scale[:, None],
            slice_matrix=slice_matrix,
            splat_matrix=splat_matrix,
            blur_matrices=self.blur_matrices,
            batch_size=self.batch_size,
            num_points=self.num_points,
        )

    def _slice_rows(self) -> Tensor:
        """Row (point) index of every stored entry of ``slice_matrix`` (``d + 1`` per row)."""
        num_total = self.batch_size * self.num_points
        rows = torch.arange(num_total, device=self.vertex_idxs.device)
        return rows.repeat_interleave(self.dim + 1)

    def _matrices(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, list[Tensor]]:
        if dtype not in self._matrices_by_dtype:
            slice_matrix, splat_matrix, blurs = next(iter(self._matrices_by_dtype.values()))
            self._matrices_by_dtype[dtype] = (
                slice_matrix.to(dtype),
                splat_matrix.to(dtype),
                [blur.to(dtype) for blur in blurs],
            )
        return self._matrices_by_dtype[dtype]


def permutohedral_filter(features: Tensor, values: Tensor) -> Tensor:
    """One-shot Gaussian filter: ``PermutohedralLattice.build(features).filter(values)``.

    ``features`` ``(N, d)`` or ``(B, N, d)`` in kernel units, ``values`` ``(N, C)`` or
    ``(B, N, C)``. Build the lattice once and reuse it when filtering several times.
    """
    return PermutohedralLattice.build(features).filter(values)


class _LatticeFilter(torch.autograd.Function):
    """Autograd wrapper: the filter is linear in the values, its adjoint runs blurs reversed."""

    @staticmethod
    def forward(ctx, values: Tensor, lattice: PermutohedralLattice, reverse: bool) -> Tensor:
        ctx.lattice = lattice
        ctx.reverse = reverse
        return lattice.apply_linear(values, reverse=reverse)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None
        grad_values = _LatticeFilter.apply(grad_out.contiguous(), ctx.lattice, not ctx.reverse)
        return grad_values, None, None


def _elevate(points: Tensor) -> Tensor:
    """Embed ``(P, d)`` features in the hyperplane ``sum = 0`` of ``R^(d+1)`` -> ``(P, d + 1)``.

    ``E`` has rows ``e_j = (1, ..., 1, -j, 0, ..., 0)``; the features are first scaled by
    ``sqrt(2/3) (d+1) / sqrt((i+1)(i+2))`` so that the lattice blur has unit variance.
    """
    dim = points.shape[1]
    i = torch.arange(dim, device=points.device, dtype=points.dtype)
    scale = math.sqrt(2.0 / 3.0) * (dim + 1) / torch.sqrt((i + 1) * (i + 2))  # (d,)
    scaled = points * scale  # (P, d)
    # suffix[:, j] = sum_{m >= j} scaled[:, m]; elevated_0 = suffix_0,
    # elevated_j = suffix_j - j * scaled_{j-1} for j = 1..d (suffix_d = 0).
    suffix = scaled.flip(1).cumsum(1).flip(1)  # (P, d)
    suffix = torch.cat([suffix, torch.zeros_like(suffix[:, :1])], dim=1)  # (P, d + 1)
    j = torch.arange(1, dim + 1, device=points.device, dtype=points.dtype)
    tail = suffix[:, 1:] - j * scaled  # (P, d)
    return torch.cat([suffix[:, :1], tail], dim=1)


def _enclosing_simplex(elevated: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest remainder-0 lattice point ``rem0`` and the rank of each coordinate's residual.

    Both ``(P, d + 1)`` int64. ``rank_i`` counts the coordinates with a larger residual (ties:
    the lower index ranks first, as in Adams' reference code), then shifts by the coordinate
    sum so that ``rem0`` lies on the hyperplane.
    """
    dim1 = elevated.shape[1]
    scaled = elevated / dim1
    rounded = torch.sign(scaled) * torch.floor(scaled.abs() + 0.5)  # C round(): half away
    rem0 = (rounded * dim1).to(torch.int64)  # (P, d + 1)
    coord_sum = rounded.sum(1, keepdim=True).to(torch.int64)  # (P, 1)
    residual = (elevated - rem0.to(elevated.dtype)).T.contiguous()  # (d + 1, P)
    rank_dtype = torch.int8 if dim1 < 128 else torch.int64
    rank_t = torch.zeros(residual.shape, dtype=rank_dtype, device=elevated.device)
    for i in range(dim1):  # (d+1)d/2 vectorised comparisons beat a per-row sort
        for j in range(i + 1, dim1):
            i_below_j = residual[i] < residual[j]  # (P,)
            rank_t[i] += i_below_j
            rank_t[j] += ~i_below_j
    rank = rank_t.T.to(torch.int64) + coord_sum  # (P, d + 1)
    wrap = (rank < 0).to(torch.int64) - (rank > dim1 - 1).to(torch.int64)  # (P, d + 1)
    return rem0 + dim1 * wrap, rank + dim1 * wrap


def _barycentric_weights(elevated: Tensor, rem0: Tensor, rank: Tensor) -> Tensor:
    """Barycentric coordinates ``(P, d + 1)`` of each point in its simplex (Adams p. 10)."""
    num_points, dim1 = elevated.shape
    delta = (elevated - rem0.to(elevated.dtype)) / dim1  # (P, d + 1)
    weights = elevated.new_zeros(num_points, dim1 + 1)
    weights.scatter_add_(1, dim1 - 1 - rank, delta)
    weights.scatter_add_(1, dim1 - rank, -delta)
    weights[:, 0] += 1.0 + weights[:, dim1]
    return weights[:, :dim1].contiguous()


def simplex_vertex_keys(rem0: Tensor, rank: Tensor) -> Tensor:
    """Integer keys ``(P, d + 1, d)`` of the simplex corners (first ``d`` lattice coordinates).

    Corner ``r`` is ``rem0 + canonical_r[rank]`` where ``canonical_r[k] = r`` if
    ``k <= d - r`` else ``r - (d + 1)``; the last coordinate is implied by ``sum = 0``. (The hot
    path uses :func:`_vertex_codes`, which packs the same keys without materialising them.)
    """
    dim1 = rem0.shape[1]
    remainder = torch.arange(dim1, device=rem0.device)[None, :, None]  # (1, d+1, 1)
    wrap = (rank[:, None, :-1] > (dim1 - 1) - remainder).to(torch.int64)  # (P, d+1, d)
    return rem0[:, None, :-1] + remainder - dim1 * wrap


def _vertex_codes(rem0: Tensor, rank: Tensor, *, batch_size: int) -> tuple[Tensor, Tensor]:
    """Pack each corner key of :func:`simplex_vertex_keys` (plus the batch index) in one int64.

    Mixed radix over the key coordinates, with a margin of ``d + 1`` cells on each side so that
    blur neighbours of occupied vertices have codes too. Returns ``codes (P, d + 1)`` and the
    ``(d,)`` strides (code offset of a unit step in each key coordinate).
    """
    num_points, dim1 = rem0.shape
    dim = dim1 - 1
    keys0 = rem0[:, :dim]  # (P, d); corner keys lie in [rem0 - (d + 1), rem0 + d]
    low = keys0.amin(0) - 2 * dim1  # (d,)
    span = keys0.amax(0) + 2 * dim1 - low + 1  # (d,)
    radix = [int(s) for s in span.tolist()]
    if math.prod(radix) * batch_size >= 2**62:
        raise ValueError(
            f"features span too many lattice cells to hash in int64 (spans {radix}); "
            "scale the features down"
        )
    strides_list = [math.prod(radix[i + 1 :]) for i in range(dim)]
    strides = torch.tensor(strides_list, dtype=torch.int64, device=rem0.device)  # (d,)
    num_per_image = num_points // batch_size
    batch_idxs = torch.arange(batch_size, device=rem0.device).repeat_interleave(num_per_image)
    base = ((keys0 - low) * strides).sum(1) + batch_idxs * math.prod(radix)  # (P,)
    # corner r: + r on every key coordinate, - (d + 1) where rank_i >= d + 1 - r.
    bucket = dim1 - rank[:, :dim]  # (P, d) in 1..d+1: first corner where coordinate i wraps
    wrapped = torch.zeros(num_points, dim1 + 1, dtype=torch.int64, device=rem0.device)
    wrapped.scatter_add_(1, bucket, strides.expand(num_points, dim))
    wrapped = wrapped[:, :dim1].cumsum(1)  # (P, d + 1)
    remainder = torch.arange(dim1, device=rem0.device)
    codes = base[:, None] + remainder * int(strides.sum()) - dim1 * wrapped  # (P, d + 1)
    if math.prod(radix) * batch_size < 2**31:
        codes = codes.to(torch.int32)  # sorting int32 is about twice as fast
    return codes, strides


def _hash_and_splat(codes: Tensor, weights: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Deduplicate vertex codes; return ``vertex_idxs (P, d+1)``, splat CSR ``(M, P)``, codes.

    One stable sort groups the ``P (d + 1)`` corners by vertex: the sorted run of a vertex is its
    CSR row (point indices ascending), its rank among distinct codes is its index.
    """
    num_points, dim1 = codes.shape
    sorted_codes, order = torch.sort(codes.reshape(-1), stable=True)  # (P (d+1),)
    is_new = torch.ones_like(sorted_codes, dtype=torch.bool)
    is_new[1:] = sorted_codes[1:] != sorted_codes[:-1]
    sorted_vertex = is_new.cumsum(0) - 1  # (P (d+1),)
    num_vertices = int(sorted_vertex[-1]) + 1
    unique_codes = sorted_codes[is_new]  # (M,)
    vertex_idxs = torch.empty_like(sorted_vertex).scatter_(0, order, sorted_vertex)
    row_starts = torch.nonzero(is_new).flatten()
    crow = torch.cat([row_starts, row_starts.new_tensor([sorted_codes.numel()])])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splat_matrix = _csr(
            crow,
            torch.div(order, dim1, rounding_mode="floor"),
            weights.reshape(-1)[order],
            (num_vertices, num_points),
        )
    return vertex_idxs.reshape(num_points, dim1), splat_matrix, unique_codes


def _slice_matrix(vertex_idxs: Tensor, weights: Tensor, num_vertices: int) -> Tensor:
    """``(P, M)`` CSR of barycentric weights, ``d + 1`` entries per row."""
    num_points, dim1 = vertex_idxs.shape
    if vertex_idxs.is_cuda:  # cuSPARSE expects sorted columns; the CPU kernels do not
        vertex_idxs, order = torch.sort(vertex_idxs, dim=1)
        weights = torch.gather(weights, 1, order)
    crow = torch.arange(0, num_points * dim1 + 1, dim1, device=vertex_idxs.device)
    return _csr(crow, vertex_idxs.reshape(-1), weights.reshape(-1), (num_points, num_vertices))


def _blur_matrices(unique_codes: Tensor, strides: Tensor, *, dtype: torch.dtype) -> list[Tensor]:
    """The ``d + 1`` blur matrices ``I + (shift_+ + shift_-) / 2`` over ``M`` sorted codes.

    Along direction ``j < d`` the neighbours of key ``k`` are ``k + (d+1) e_j - 1`` and its
    opposite; along direction ``d`` (the implied last coordinate) they are ``k -/+ 1``. Missing
    neighbours contribute nothing.
    """
    num_vertices = unique_codes.numel()
    dim = strides.numel()
    device = unique_codes.device
    self_idxs = torch.arange(num_vertices, device=device)
    blurs = []
    for direction in range(dim + 1):
        step = -int(strides.sum()) + (dim + 1) * (int(strides[direction]) if direction < dim else 0)
        lower, upper = (step, -step) if step < 0 else (-step, step)  # code order == index order
        lower_idxs, lower_ok = _lookup(unique_codes, unique_codes + lower)
        upper_idxs, upper_ok = _lookup(unique_codes, unique_codes + upper)
        cols = torch.stack([lower_idxs, self_idxs, upper_idxs], dim=1)  # (M, 3), ascending
        keep = torch.stack([lower_ok, torch.ones_like(lower_ok), upper_ok], dim=1)  # (M, 3)
        values = torch.tensor([0.5, 1.0, 0.5], dtype=dtype, device=device).expand(num_vertices, 3)
        crow = torch.zeros(num_vertices + 1, dtype=torch.int64, device=device)
        crow[1:] = keep.sum(1).cumsum(0)
        blurs.append(_csr(crow, cols[keep], values[keep], (num_vertices, num_vertices)))
    return blurs


def _sparse_mm(matrix: Tensor, dense: Tensor) -> Tensor:
    """``matrix @ dense`` for a CSR matrix; ``addmm`` with ``beta=0`` skips the zero-fill + copy
    that ``@`` does on CPU."""
    out = dense.new_empty(matrix.shape[0], dense.shape[1])
    return torch.addmm(out, matrix, dense, beta=0.0)


def _csr(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    """A CSR tensor with int32 indices when they fit (MKL's native width: no per-call cast)."""
    if max(size) < 2**31 and col.numel() < 2**31:
        crow, col = crow.to(torch.int32), col.to(torch.int32)
    return torch.sparse_csr_tensor(crow, col, values, size=size)


def _scale_csr(matrix: Tensor, entry_scale: Tensor) -> Tensor:
    """The CSR ``matrix`` with every stored value multiplied by ``entry_scale`` (same order)."""
    return torch.sparse_csr_tensor(
        matrix.crow_indices(),
        matrix.col_indices(),
        matrix.values() * entry_scale,
        size=matrix.shape,
    )


def _lookup(sorted_codes: Tensor, query_codes: Tensor) -> tuple[Tensor, Tensor]:
    """Index of each query code in ``sorted_codes`` and whether it is present."""
    found = torch.searchsorted(sorted_codes, query_codes).clamp_max(sorted_codes.numel() - 1)
    return found, sorted_codes[found] == query_codes
