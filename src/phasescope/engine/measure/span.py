"""The span of the fit inputs: an exact way to decode large inputs without (p, D) products.

With n fit samples the centred fit inputs Xc (n, D) span at most r <= n dimensions. Write
Xc = Z V^T with V (D, r) orthonormal. The ridge decoder's cross products Hc^T Xc = Hc^T Z V^T,
so its coefficients are W = W_z V^T with W_z (p, r) the ridge decoder of the coordinates Z, and
every sample's squared error splits exactly into

    ||x - mean - W^T(h - m_h)||^2 = ||V^T(x - mean) - W_z^T(h - m_h)||^2 + ||(I - V V^T)(x - mean)||^2

whose second term depends on neither the layer nor the checkpoint. So D (150,528 for
224 x 224 x 3 images) is replaced by r <= n, with the same per-sample errors.

V is never formed: from the eigendecomposition of the (n, n) Gram matrix Xc Xc^T = U S^2 U^T
(float64; its lower triangle only, by row blocks: n^2 D / 2 multiply-adds), V = Xc^T U S^-1, the
fit coordinates are Z = U S, a test input's coordinates are
S^-1 U^T Xc (x - mean), and a coordinate vector maps back to pixels through Xc^T U S^-1 z: the
only (., D) array is the fit inputs themselves, which the caller already holds (used as given, not
copied); every product goes through float64 blocks of at most ``BLOCK_BYTES`` (some thousand input
dimensions at a time), and the (n, n) and (n, r) float64 arrays. Directions below
``RCOND`` of the largest Gram eigenvalue are left out of V (their tiny share of the inputs goes
to the residual term): float64 rounding leaves their eigenvectors unresolved.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

RCOND = 1e-10  # Gram eigenvalues below this fraction of the largest: not part of V
CHUNK = 8192  # input dimensions per float64 block at most (n x CHUNK x 8 bytes at a time) ...
BLOCK_BYTES = 1 << 27  # ... and at most 128 MiB per float64 block (fewer dimensions for many samples)
GRAM_ROWS = 512  # rows of the Gram matrix formed per product: its lower triangle, in steps of this many rows


def _columns(rows: int, chunk: int) -> int:
    """Input dimensions per float64 block of ``rows`` rows: ``chunk``, fewer where the block would
    exceed BLOCK_BYTES (at least 256)."""
    return max(1, min(chunk, max(256, BLOCK_BYTES // (8 * max(rows, 1)))))


def gram_blocks(n: int, part: int = 0, parts: int = 1) -> list[tuple[int, int]]:
    """The row blocks ``(a, b)`` of an (n, n) Gram matrix's lower triangle (GRAM_ROWS rows each) that
    part ``part`` of ``parts`` forms: dealt in a back-and-forth order (0, 1, .., parts - 1, parts - 1,
    .., 0, ...) so that the parts' shares of the triangle, whose row block k costs k + 1, are near
    equal. One part (the default) forms them all."""
    starts = range(0, n, GRAM_ROWS)
    owner = lambda k: k % parts if (k // parts) % 2 == 0 else parts - 1 - k % parts
    return [(a, min(a + GRAM_ROWS, n)) for k, a in enumerate(starts) if owner(k) == part]


@dataclass
class Projected:
    """Inputs in span coordinates: ``coords`` (m, r) = V^T (x - mean) and ``residual`` (m,) =
    ||(I - V V^T)(x - mean)||^2, both float64. Sliced like the inputs (``p[rows]``)."""

    coords: torch.Tensor
    residual: torch.Tensor

    def __len__(self) -> int:
        return len(self.coords)

    def __getitem__(self, rows) -> "Projected":
        return Projected(self.coords[rows], self.residual[rows])

    def to(self, device) -> "Projected":
        return Projected(self.coords.to(device), self.residual.to(device))


class InputSpan:
    """The span of fit inputs ``X`` (n, ...) (flattened to (n, D)); see the module docstring.

    ``coords`` (n, r): the fit inputs' coordinates Z (float64, mean zero); ``fit_residual``: the
    fit inputs' summed squared distance to the span (0 up to the directions dropped by ``rcond``);
    ``dim``: D. :meth:`project` other inputs, :meth:`lift` coordinates back to inputs.

    Shared by the ranks of a sharded measurement: ``part=(rank, world)`` forms only that rank's row
    blocks of the Gram matrix (:func:`gram_blocks`) and ``all_reduce`` (summing a tensor over the
    ranks; called on row blocks of the lower triangle of at most BLOCK_BYTES each) completes it, so
    each rank pays 1/world of the products and all hold the same span."""

    def __init__(self, X: torch.Tensor, *, rcond: float = RCOND, chunk: int = CHUNK, part: tuple[int, int] = (0, 1),
                 all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None):
        X = X.detach().reshape(len(X), -1)
        if not X.is_floating_point():
            X = X.float()
        self.X = X  # a view of the caller's inputs: never copied whole
        self.chunk = _columns(len(X), chunk)
        self.n, self.dim = X.shape
        self.mean = torch.cat([X[:, a:a + self.chunk].double().mean(0) for a in range(0, self.dim, self.chunk)]
                              if self.dim else [torch.zeros(0, dtype=torch.float64)])  # by blocks: no float64 copy of X
        G = torch.zeros(self.n, self.n, dtype=torch.float64)
        mine = gram_blocks(self.n, *part)
        for Xc in self._centred_blocks(X):  # the lower triangle only (by row blocks): about half the products
            for a, b in mine:
                G[a:b, :b].addmm_(Xc[a:b], Xc[:b].T)
        if all_reduce is not None:  # each part formed its own row blocks: their sum is the whole triangle,
            step = max(1, BLOCK_BYTES // (8 * self.n))  # summed a block of rows at a time (bounded transfers)
            for a in range(0, self.n, step):
                b = min(a + step, self.n)
                G[a:b, :b] = all_reduce(G[a:b, :b])
        total = float(torch.diagonal(G).sum())
        s, U = torch.linalg.eigh(G, UPLO="L")  # reads the lower triangle, which is all that was formed
        del G  # (n, n) float64 arrays held at once: as few as the eigendecomposition needs
        top = float(s.max()) if len(s) else 0.0
        keep = s > rcond * top if top > 0 else torch.zeros_like(s, dtype=torch.bool)
        idx = keep.nonzero().flatten().flip(0)  # largest first, in one copy of U
        s, U = s[idx], U[:, idx]
        self.sigma = s.sqrt()
        self.U = U
        self.coords = U * self.sigma  # Z = Xc V = U S
        self.fit_residual = max(total - float(s.sum()), 0.0)

    @property
    def rank(self) -> int:
        return len(self.sigma)

    def _centred_blocks(self, X: torch.Tensor, chunk: int | None = None):
        """(rows, chunk) float64 blocks of ``X`` minus the mean, one at a time (centred in place:
        one block-sized buffer, not two)."""
        chunk = chunk or self.chunk
        for a in range(0, self.dim, chunk):
            yield X[:, a:a + chunk].to(torch.float64, copy=True).sub_(self.mean[a:a + chunk])

    def project(self, X: torch.Tensor) -> Projected:
        """Coordinates and residuals of inputs ``X`` (m, ...) (float64; one pass over the fit inputs)."""
        values = X[0].numel() if len(X) else self.dim
        if values != self.dim:
            raise ValueError(f"inputs of {values} values per sample; the span is of {self.dim}.")
        X = X.detach().reshape(len(X), self.dim)  # (0, D) too: a rank's empty share
        K = torch.zeros(len(X), self.n, dtype=torch.float64)  # (x - mean) . Xc rows
        sq = torch.zeros(len(X), dtype=torch.float64)
        chunk = min(self.chunk, _columns(len(X), self.chunk))  # both blocks within BLOCK_BYTES
        for Xc, Y in zip(self._centred_blocks(self.X, chunk), self._centred_blocks(X, chunk)):
            K.addmm_(Y, Xc.T)
            sq += Y.square().sum(1)
        coords = (K @ self.U) / self.sigma
        return Projected(coords, (sq - coords.square().sum(1)).clamp_min(0.0))

    def lift(self, Z: torch.Tensor, *, mean: bool = True) -> torch.Tensor:
        """V z (+ the mean) for coordinate rows ``Z`` (m, r): (m, D) float32 on Z's device."""
        M = ((Z.double().cpu() / self.sigma) @ self.U.T).float()  # (m, n): V z = Xc^T U S^-1 z
        out = torch.empty(len(Z), self.dim, dtype=torch.float32)
        for a in range(0, self.dim, self.chunk):
            m = self.mean[a:a + self.chunk].float()
            block = M @ (self.X[:, a:a + self.chunk].float() - m)
            out[:, a:a + self.chunk] = block + m if mean else block
        return out.to(Z.device)
