"""The exact linear decoder and probe: ridge regression from streamed sufficient statistics.

For features H (n, p) and targets T (n, D) the ridge solution with a bias is

    W = (Hc^T Hc + lam I)^-1 Hc^T Tc,    b = mean(T) - mean(H) W

with Hc, Tc centred. Everything it needs is in sums over samples (H^T H, H^T T, sums of H
and T, and of T*T for the exact training error), so batches are accumulated once and
memory does not grow with n. Products and column sums are formed per batch in float32
(fast BLAS) on data shifted by the first batch's mean (which removes most cancellation),
and accumulated and solved in float64.

``ridge`` is relative (``"auto"``: chosen per target by generalised cross-validation from one
eigendecomposition of the Gram matrix, see :func:`gcv_curve`): lam = ridge * trace(Hc^T Hc) / p, i.e. ``ridge`` times the summed
variance of an average feature; it is invariant to rescaling the features. The default
0.1 shrinks only directions with a tenth of the average variance or less (dead ReLUs,
duplicated channels, noise directions the fit set cannot pin down): on 512 VGG-8 features
of 10,000 CIFAR-10 images it lowers the held-out MSE from 0.3975 (ridge 1e-3) to 0.3925,
below the research code's Adam-trained decoder (benchmarks/bench_decoder.py).

The solve never trusts its inputs: non-finite statistics raise :class:`NonFiniteInput`
(a diverged network, or float32 products that overflowed), and a system that Cholesky
cannot factor (``ridge`` 0 with collinear or dead features) is solved through an
eigendecomposition that drops directions below ``RCOND`` of the largest variance: the
minimum-norm least-squares solution, never an arbitrary jitter.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .distributed import DEFAULT_TIMEOUT, Shard, _dist
from ...errors import NonFiniteInput, NotFittedError
from .precision import full_precision
from .span import Projected


from ...defaults import RELATIVE_RIDGE as DEFAULT_RIDGE  # relative ridge; the docstring says how it was chosen
# Eigen-directions of the centred Gram matrix below this fraction of the largest one are
# treated as zero in the rank-revealing solve: the products are formed in float32, whose
# rounding (about 1e-7 relative, summed over batches) leaves such directions unresolved.
RCOND = 1e-6
AUTO = "auto"  # ridge chosen per target by generalised cross-validation
GCV_GRID = np.logspace(-6, 3, 91)  # relative ridges searched by "auto" (10 per decade)
MAX_INVERSE_COND = 1e7  # the solve multiplies by (C + lam I)^-1 up to this bound on its condition number


def gcv_curve(s: torch.Tensor, b2: torch.Tensor, tt: float, n: int, lams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Generalised cross-validation of ridge regression from the eigen-decomposition of the
    centred Gram matrix: eigenvalues ``s`` (p,), squared norms ``b2`` (p,) of the rows of
    V^T Hc^T Tc, the total centred sum of squares ``tt`` of the targets, ``n`` samples.

    For each lam: RSS = tt - sum_i b2_i (2/(s_i+lam) - s_i/(s_i+lam)^2), dof = sum_i s_i/(s_i+lam),
    GCV = (RSS/n) / (1 - (dof + 1)/n)^2 (the +1 counts the intercept). Returns (GCV, dof).
    No refitting: O(p) per lam.
    """
    s = s.double().numpy()[None, :]
    b2 = b2.double().numpy()[None, :]
    lam = np.asarray(lams, dtype=np.float64)[:, None]
    rss = tt - (b2 * (2.0 / (s + lam) - s / (s + lam) ** 2)).sum(1)
    dof = (s / (s + lam)).sum(1)
    denom = np.clip(1.0 - (dof + 1.0) / n, 1e-12, None) ** 2
    return np.maximum(rss, 0.0) / n / denom, dof


def _gcv_choice(s: torch.Tensor, b2: torch.Tensor, tt: float, n: int, scale: float) -> tuple[float, float, dict]:
    """The relative ridge on GCV_GRID with the least GCV; its dof; the curve (for the record)."""
    if scale <= 0:  # constant features: nothing to regularise
        return 0.0, 0.0, {}
    gcv, dof = gcv_curve(s, b2, tt, n, GCV_GRID * scale)
    k = int(np.argmin(gcv))
    return float(GCV_GRID[k]), float(dof[k]), {"relative_ridge": GCV_GRID, "gcv": gcv}


def _check_ridge(ridge: Any) -> None:
    if ridge != AUTO and not (isinstance(ridge, (int, float)) and not isinstance(ridge, bool) and ridge >= 0):
        raise ValueError(f"ridge={ridge!r}: give a relative ridge >= 0 or 'auto' (chosen by GCV).")


@dataclass
class RidgeSolution:
    """One ridge solution of one target (:meth:`StreamingRidge.solution`)."""

    ridge: float | str  # the relative ridge asked for ("auto": chosen by GCV)
    lam: float  # the absolute lambda used
    dof: float  # effective degrees of freedom, sum_i s_i / (s_i + lam)
    coef: torch.Tensor  # (p, D) float64
    intercept: torch.Tensor  # (D,)
    train_mse: float  # exact, over the fit samples and target dimensions
    gcv: dict = field(default_factory=dict)  # "auto": the GCV curve searched
    rank: int = 0  # eigen-directions used (ridge 0: those above rcond x the largest eigenvalue)
    span: Any = None  # a target fitted in span coordinates: its InputSpan (coef is then (p, r))


class StreamingRidge:
    """Ridge regression of several targets on the same features, fitted from batches.

    ``partial_fit(H, {"x": X, "y": Y})`` accumulates (a target may be a :class:`OneHot` of
    token indices, accumulated without its dense matrix); ``solve()`` computes ``coef_[name]``
    (p, D), ``intercept_[name]`` (D,) and ``train_mse_[name]`` (mean over samples and
    target dimensions, exact). ``predict(H, name)`` and ``per_sample_mse(H, T, name)``
    use the solution.

    ``spans``: targets fitted in the coordinates of an :class:`~phasescope.engine.measure.span.InputSpan`
    ({name: span}): their ``partial_fit`` batches are rows of ``span.coords`` (n, r), not the
    (n, D) inputs, and the solution is of the coordinates (``coef_`` (p, r)); yet ``train_mse_``,
    :meth:`per_sample_mse` (given ``span.project(T)``, or T itself) and :meth:`predict` are those
    of the (n, D) inputs, exactly (see :mod:`phasescope.engine.measure.span`).
    """

    def __init__(self, ridge: float | str = DEFAULT_RIDGE, *, dtype: torch.dtype = torch.float32,
                 rcond: float = RCOND, spans: dict | None = None):
        _check_ridge(ridge)
        self.ridge = ridge
        self.spans = dict(spans or {})
        self.dtype = dtype  # of the per-batch products (float64: exact work such as the theory's decoder)
        self.rcond = rcond  # ridge 0: eigen-directions below rcond x the largest are dropped
        self.n = 0

    def partial_fit(self, H: torch.Tensor, targets: dict[str, torch.Tensor]) -> "StreamingRidge":
        with full_precision():  # no TF32 in the Gram products, whatever the caller's loop set
            return self._accumulate(H, targets)

    def _accumulate(self, H: torch.Tensor, targets: dict[str, "torch.Tensor | OneHot"]) -> "StreamingRidge":
        H = H.detach().to(self.dtype)
        if not hasattr(self, "_s_h"):  # the first batch (unless allocate() set the shifts)
            self._allocate(H.mean(0), {k: _first_shift(T, self.dtype) for k, T in targets.items()})
        # Every per-batch sum is formed in the products' dtype (a float32 column sum of one batch is
        # as accurate as the float32 products beside it, and 5-7x faster than a float64 one, which
        # converts the batch first) and accumulated over batches in float64. The shifted targets and
        # their products go to buffers reused from batch to batch: a fresh (batch, D) and (p, D) array
        # per batch cost a third of the product's own time in allocation and first-touch page faults.
        Hs = H - self._shift_h
        self._s_h += Hs.sum(0)
        self._s_hh += Hs.T @ Hs
        for k, T in targets.items():
            if isinstance(T, OneHot):
                self._add_one_hot(k, Hs, T)
                continue
            T = T.detach().reshape(len(T), -1)
            shifted, product = self._buffers(k, len(T), T.shape[1])
            Ts = torch.sub(T.to(self.dtype), self._shift_t[k], out=shifted)
            self._s_t[k] += Ts.sum(0)
            self._s_ht[k] += torch.mm(Hs.T, Ts, out=product)
            self._s_tt[k] += Ts.square_().sum(0)  # Ts is not needed after this
        self.n += len(H)
        return self

    def _buffers(self, k: str, rows: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Scratch arrays of target ``k`` for :meth:`_accumulate`: (rows, width) shifted targets and the
        (p, width) product, reused while batches are no larger (dropped by :meth:`solve`)."""
        scratch = self.__dict__.setdefault("_scratch", {})
        have = scratch.get(k)
        if have is None or have[0].shape[0] < rows or have[0].shape[1] != width or have[0].device != self._s_h.device:
            p = self._shift_h.shape[0]
            have = scratch[k] = (torch.empty(rows, width, dtype=self.dtype, device=self._s_h.device),
                                 torch.empty(p, width, dtype=self.dtype, device=self._s_h.device))
        return have[0][:rows], have[1]

    def _allocate(self, shift_h: torch.Tensor, shift_t: dict[str, torch.Tensor]) -> None:
        """Zero sums around the shifts (the first batch's means: they remove most cancellation)."""
        p, dev = shift_h.shape[0], shift_h.device
        self._shift_h = shift_h
        self._s_h = torch.zeros(p, dtype=torch.float64, device=dev)
        self._s_hh = torch.zeros(p, p, dtype=torch.float64, device=dev)
        self._shift_t, self._s_t, self._s_ht, self._s_tt = {}, {}, {}, {}
        for k, m in shift_t.items():
            self._shift_t[k] = m
            self._s_t[k] = torch.zeros(m.shape[0], dtype=torch.float64, device=dev)
            self._s_ht[k] = torch.zeros(p, m.shape[0], dtype=torch.float64, device=dev)
            self._s_tt[k] = torch.zeros(m.shape[0], dtype=torch.float64, device=dev)

    def allocate(self, features: int, targets: dict[str, int], device: Any = None, *,
                 shifts: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None) -> "StreamingRidge":
        """Empty statistics of ``features`` features and ``targets`` ({name: width}), before any batch:
        what a process that saw no sample contributes to :meth:`all_reduce`. ``shifts`` (features' and
        targets' shifts, see :attr:`shifts`) are subtracted before the products instead of the first
        batch's means: processes that share them form the very products one process would."""
        if self.n:
            raise RuntimeError("allocate() is for a StreamingRidge that has seen no batch yet.")
        h, t = shifts if shifts is not None else (torch.zeros(features), {k: torch.zeros(d) for k, d in targets.items()})
        self._allocate(h.to(device, self.dtype), {k: t[k].to(device, self.dtype) for k in targets})
        return self

    @property
    def shifts(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """What is subtracted from the features and each target before the products (by default the
        first batch's means)."""
        if not hasattr(self, "_s_h"):
            raise NotFittedError("No batch yet: the shifts are set by the first partial_fit() or allocate().")
        return self._shift_h, dict(self._shift_t)

    def all_reduce(self, group: Any = None, *, timeout: float | None = None) -> "StreamingRidge":
        """Sum the statistics of every process of a ``torch.distributed`` ``group`` (default: the
        world) into each one, so that every process solves the same regression, on all their samples.
        Call it on every process, after its own :meth:`partial_fit` calls and before :meth:`solve`;
        a process without samples calls :meth:`allocate` first. See :func:`all_reduce_statistics`."""
        shard = Shard(group if group is not None else _dist().group.WORLD, 1,
                      timeout=DEFAULT_TIMEOUT if timeout is None else timeout)
        all_reduce_statistics([self], shard)
        return self

    def _statistics(self) -> list[torch.Tensor]:
        """Every sum :meth:`partial_fit` accumulates, in a fixed order."""
        keys = list(self._s_t)
        return [self._s_h, self._s_hh, *(self._s_t[k] for k in keys), *(self._s_ht[k] for k in keys),
                *(self._s_tt[k] for k in keys)]

    def _shift_to(self, shift_h: torch.Tensor, shift_t: dict[str, torch.Tensor]) -> None:
        """Re-express the sums around other shifts, exactly in float64 algebra: with d = old - new,
        sum (h - new) = S_h + n d, sum (h - new)(h - new)^T = S_hh + S_h d^T + d S_h^T + n d d^T, and
        likewise for the cross products and the targets' sums of squares."""
        n = self.n
        d = self._shift_h.double() - shift_h.double()
        s_h, moved = self._s_h, bool(d.any())  # the tracker's ranks share their shifts up front: nothing moves
        if moved:
            self._s_hh = self._s_hh + torch.outer(s_h, d) + torch.outer(d, s_h) + n * torch.outer(d, d)
        for k in self._s_t:
            e = self._shift_t[k].double() - shift_t[k].double()
            if moved or bool(e.any()):  # (p, D) float64 updates, skipped when both shifts are unchanged
                s_t = self._s_t[k]
                self._s_ht[k] = self._s_ht[k] + torch.outer(s_h, e) + torch.outer(d, s_t) + n * torch.outer(d, e)
                self._s_tt[k] = self._s_tt[k] + 2 * e * s_t + n * e * e
                self._s_t[k] = s_t + n * e
            self._shift_t[k] = shift_t[k].to(self._shift_t[k].dtype)
        self._s_h = s_h + n * d
        self._shift_h = shift_h.to(self._shift_h.dtype)

    def _add_one_hot(self, k: str, Hs: torch.Tensor, T: "OneHot") -> None:
        """The sums of a one-hot target by index-adding: each sample's (shifted) feature row is added
        into the columns of its tokens, never forming the dense (n, vocab) one-hot. With 0/1 values
        the sum of T and of T*T are both the column counts. A one-hot target's shift is zero unless
        :meth:`allocate` was given another; then, with e the shift, sum (T - e) = counts - n e,
        Hs^T (T - e) = Hs^T T - (sum Hs) e^T and sum (T - e)^2 = counts - 2 e counts + n e^2."""
        if T.dim != self._s_t[k].shape[0]:
            raise ValueError(f"target {k!r}: a one-hot of {T.dim} columns, but its statistics have "
                             f"{self._s_t[k].shape[0]}.")
        cols = T.columns().to(Hs.device)  # (n, k) column of each sample's hot entry per position
        flat = cols.T.reshape(-1)  # position-major: entry j*n + i is sample i's column at position j
        src = Hs.double().T.repeat(1, cols.shape[1])  # (p, k*n): column j*n + i is sample i's features
        counts = torch.bincount(flat, minlength=T.dim).double()
        e = self._shift_t[k].double()
        if bool(e.any()):
            n = len(T)
            self._s_ht[k] -= torch.outer(Hs.double().sum(0), e)
            self._s_t[k] -= n * e
            self._s_tt[k] += n * e * e - 2 * e * counts
        self._s_ht[k].index_add_(1, flat, src)
        self._s_t[k] += counts
        self._s_tt[k] += counts

    def _statistics_finite(self) -> bool:
        stats = [self._s_h, self._s_hh, *self._s_t.values(), *self._s_ht.values(), *self._s_tt.values()]
        return all(bool(torch.isfinite(s).all()) for s in stats)

    def solve(self) -> "StreamingRidge":
        if self.n < 2:
            raise NotFittedError("StreamingRidge needs at least 2 samples before solve().")
        if not self._statistics_finite():
            raise NonFiniteInput(
                "The decoder's accumulated statistics hold NaN or inf: the features or targets were not "
                "finite, or their products overflowed float32. Check the inputs; in training this means "
                "the network diverged (lower the learning rate).")
        self.__dict__.pop("_scratch", None)  # the accumulation's buffers (a later partial_fit makes new ones)
        n = self.n
        m_h = self._s_h / n
        C = self._s_hh - n * torch.outer(m_h, m_h)  # centred Gram (p, p)
        p = C.shape[0]
        scale = float(torch.trace(C)) / p  # the mean eigenvalue: lam = relative ridge x scale
        self._C, self._m_h, self._scale, self._eig, self._eig_cross = C, m_h, scale, None, {}
        auto, exact = self.ridge == AUTO, False
        if not auto:
            lam = float(self.ridge) * scale
            solve = self._cholesky_solver(C, lam) if lam > 0 else None
            exact = solve is not None  # a Cholesky solution: (C + lam I) W = cross holds exactly
            if solve is None:  # ridge 0, or a system too ill-conditioned to factor
                solve = self._eigen_solver(C, lam)
        self.coef_, self.intercept_, self.train_mse_, self.lams_, self.dof_ = {}, {}, {}, {}, {}
        for k in self._s_ht:
            if auto:  # one eigendecomposition serves the GCV curve of every target and every solve
                sol = self.solution(k, AUTO)
                W, lam, self.dof_[k], self.gcv_ = sol.coef, sol.lam, sol.dof, sol.gcv
            else:
                cross = self._cross(k)
                W = solve(cross)
            self.lams_[k] = lam
            self.coef_[k] = W
            self.intercept_[k], self.train_mse_[k] = self._intercept_and_train_mse(
                k, W, lam if exact else None, None if auto else cross)  # exact: C W = cross - lam W, no product
        self.lam_ = next(iter(self.lams_.values()), 0.0)  # the first target's (the decoder's)
        return self

    # ------------------------------------------------------------------ several ridges, one eigendecomposition
    def _cross(self, k: str) -> torch.Tensor:
        """Centred cross products Hc^T Tc of target ``k`` (p, D): S_ht - n m_h m_t^T = S_ht - m_h S_t^T (one pass)."""
        return torch.addr(self._s_ht[k], self._m_h, self._s_t[k], alpha=-1.0)

    def _intercept_and_train_mse(self, k: str, W: torch.Tensor, lam: float | None = None,
                                 cross: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
        """Intercept and exact training MSE of coefficients ``W``; ``lam`` when W solves
        (C + lam I) W = cross exactly, so that C W = cross - lam W costs no (p, p) x (p, D) product;
        ``cross``: :meth:`_cross` when the caller has it."""
        n, m_h, m_t = self.n, self._m_h, self._s_t[k] / self.n
        cross = self._cross(k) if cross is None else cross
        b = (self._shift_t[k].double() + m_t) - (self._shift_h.double() + m_h) @ W
        # exact training SSE: tr(Tc^T Tc) - 2 tr(W^T cross) + tr(W^T C W); traces of products as dot products
        tt = (self._s_tt[k] - n * m_t * m_t).sum() + self._fit_residual(k)
        w, wx = W.reshape(-1), torch.dot(W.reshape(-1), cross.reshape(-1))
        wcw = torch.dot(w, (self._C @ W).reshape(-1)) if lam is None else wx - lam * torch.dot(w, w)
        sse = tt - 2 * wx + wcw
        return b, float(max(sse, 0.0)) / (n * self._width(k, cross.shape[1]))

    def _fit_residual(self, k: str) -> float:
        """A span target's fit inputs' squared distance to the span (0 for plain targets)."""
        span = self.spans.get(k)
        return float(span.fit_residual) if span is not None else 0.0

    def _width(self, k: str, width: int) -> int:
        """Target dimensions the MSE averages over: the inputs' D for a span target."""
        span = self.spans.get(k)
        return span.dim if span is not None else width

    def eigen(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Eigenvalues (clamped at 0) and eigenvectors of the centred Gram matrix, computed once
        per solve and shared by every :meth:`solution` (and by ``"auto"``)."""
        if not hasattr(self, "_C"):
            raise NotFittedError("Call solve() before solution() or eigen().")
        if self._eig is None:
            s, V = torch.linalg.eigh(self._C)
            self._eig = (s.clamp_min(0.0), V)
        return self._eig

    def solution(self, name: str, ridge: float | str) -> "RidgeSolution":
        """The ridge solution of target ``name`` at another relative ``ridge`` (a number >= 0 or
        ``"auto"``) from the same statistics, after :meth:`solve`: one eigendecomposition of the
        Gram matrix (cached) serves every ridge, each then costs a diagonal rescale,
        W = V diag(1/(s + lam)) V^T Hc^T Tc. ``ridge`` 0 drops the directions below ``rcond``
        of the largest eigenvalue, as the solve does (the minimum-norm least-squares solution)."""
        _check_ridge(ridge)
        if name not in self._s_ht:
            raise KeyError(f"No target {name!r}; fitted targets: {list(self._s_ht)}.")
        s, V = self.eigen()
        scale, n = self._scale, self.n
        B, b2, tt = self._eigen_cross(name)
        gcv = {}
        if ridge == AUTO:
            rel, _, gcv = _gcv_choice(s.cpu(), b2.cpu(), tt, n, scale)
            lam = rel * scale
            inv = torch.where(s + lam > 0, 1.0 / (s + lam).clamp_min(torch.finfo(s.dtype).tiny), 0.0)
        elif float(ridge) * scale > 0:
            lam = float(ridge) * scale
            inv = 1.0 / (s + lam)
        else:  # ridge 0 (or constant features): the rank-revealing pseudo-inverse
            lam = 0.0
            top = float(s.max()) if len(s) else 0.0
            keep = s > self.rcond * top if top > 0 else torch.zeros_like(s, dtype=torch.bool)
            inv = torch.where(keep, 1.0 / s.clamp_min(torch.finfo(s.dtype).tiny), torch.zeros_like(s))
        W = V @ (B * inv[:, None])
        m_h, m_t = self._m_h, self._s_t[name] / n
        b = (self._shift_t[name].double() + m_t) - (self._shift_h.double() + m_h) @ W
        # exact training SSE in the eigenbasis: tt - 2 sum inv b2 + sum s inv^2 b2 (O(p), no product with C)
        sse = tt - float((b2 * inv * (2.0 - s * inv)).sum())
        train_mse = max(sse, 0.0) / (n * self._width(name, B.shape[1]))
        return RidgeSolution(ridge, float(lam), float((s * inv).sum()), W, b, train_mse, gcv, int((inv > 0).sum()),
                             self.spans.get(name))

    def _eigen_cross(self, name: str) -> tuple[torch.Tensor, torch.Tensor, float]:
        """V^T Hc^T Tc (p, D), its squared row norms (p,) and the centred sum of squares of target
        ``name``: computed once per solve and shared by every ridge."""
        cache = self.__dict__.setdefault("_eig_cross", {})
        if name not in cache:
            _, V = self.eigen()
            B = V.T @ self._cross(name)
            m_t = self._s_t[name] / self.n
            tt = float((self._s_tt[name] - self.n * m_t * m_t).sum()) + self._fit_residual(name)
            cache[name] = (B, B.pow(2).sum(1), tt)
        return cache[name]

    def predict_with(self, H: torch.Tensor, sol: "RidgeSolution") -> torch.Tensor:
        """Predictions of a :meth:`solution` for features ``H`` (a span target's: the (m, D) inputs)."""
        out = H.float() @ sol.coef.to(H.device, torch.float32) + sol.intercept.to(H.device, torch.float32)
        return out if sol.span is None else sol.span.lift(out)

    @staticmethod
    def _cholesky_solver(C: torch.Tensor, lam: float):
        A = C + lam * torch.eye(C.shape[0], dtype=C.dtype, device=C.device)
        L, info = torch.linalg.cholesky_ex(A)
        if int(info) != 0:
            return None
        # A's eigenvalues lie in [lam, lam + trace(C)], so cond(A) <= 1 + trace(C) / lam (1 + p / ridge).
        # Well conditioned (the default ridge 0.1: <= 1 + 10 p), (C + lam I)^-1 is formed once (p^3/3 flops)
        # and each target costs one matrix product, 2-3x faster than cholesky_solve's two triangular solves
        # with D right-hand sides, and as accurate: both err by about cond(A) x float64 rounding (< 1e-9 here).
        if 1.0 + float(torch.trace(C)) / lam > MAX_INVERSE_COND:
            return lambda B: torch.cholesky_solve(B, L)
        inverse = torch.cholesky_inverse(L)
        return lambda B: inverse @ B

    def _eigen_solver(self, C: torch.Tensor, lam: float):
        """(C + lam I)^+ B through eigh: directions below RCOND of the largest are dropped."""
        s, V = torch.linalg.eigh(C)
        top = float(s.max()) if len(s) else 0.0
        keep = s > self.rcond * top if top > 0 else torch.zeros_like(s, dtype=torch.bool)  # all-constant features: W = 0
        inv = torch.where(keep, 1.0 / (s + lam).clamp_min(torch.finfo(s.dtype).tiny), torch.zeros_like(s))
        self.rank_ = int(keep.sum())
        return lambda B: V @ (inv[:, None] * (V.T @ B))

    def _check(self, name: str) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError("Call solve() before predicting.")
        if name not in self.coef_:
            raise KeyError(f"No target {name!r}; fitted targets: {list(self.coef_)}.")

    def predict(self, H: torch.Tensor, name: str) -> torch.Tensor:
        """Predictions of target ``name`` for features ``H``; a span target's are its (m, D) inputs."""
        span = self.spans.get(name)
        if span is None:
            return self._predict(H, name)
        self._check(name)
        W, b = self.coef_[name], self.intercept_[name]
        if len(H) <= W.shape[0]:  # few rows: lift their predictions (m x n x D)
            return span.lift(self._predict(H, name))
        # many rows: lift the coefficients once (p x n x D), then one (m, p) x (p, D) product
        Wf, bf = span.lift(W.cpu(), mean=False).to(H.device), span.lift(b.cpu()[None]).to(H.device)[0]
        return torch.addmm(bf, H.float(), Wf)

    def _predict(self, H: torch.Tensor, name: str) -> torch.Tensor:
        """Predictions in the fitted coordinates (a span target's: (m, r))."""
        self._check(name)
        W = self.coef_[name].to(H.device, torch.float32)
        return torch.addmm(self.intercept_[name].to(H.device, torch.float32), H.float(), W)

    def per_sample_mse(self, H: torch.Tensor, T: Any, name: str) -> torch.Tensor:
        """Mean squared error over target dimensions, one value per sample (float64). A span
        target's ``T``: the inputs (m, D), or better their ``span.project(T)`` (computed once for
        inputs scored again and again); the error is the inputs', through the exact split."""
        span = self.spans.get(name)
        if span is None:
            residual = self.predict(H, name).sub_(T.float().reshape(len(T), -1)).square_()  # one (n, D) buffer
            # float32 row sums (torch sums blockwise: relative error ~1e-7, far below the float32
            # products before them), divided in float64: a float64 sum would convert the buffer first (4x slower)
            return residual.sum(1).double() / residual.shape[1]

        P = T if isinstance(T, Projected) else span.project(T)
        inside = self._predict(H, name).sub_(P.coords.to(H.device, torch.float32)).square_()
        return (inside.sum(1, dtype=torch.float64) + P.residual.to(H.device)) / span.dim


def _first_shift(T: "torch.Tensor | OneHot", dtype: torch.dtype) -> torch.Tensor:
    """A target's shift from its first batch: its mean; zero for a one-hot (0/1 values need no shift
    against cancellation, and its sums are then plain column counts)."""
    if isinstance(T, OneHot):
        return torch.zeros(T.dim, dtype=dtype, device=T.index.device)
    return T.detach().to(dtype).reshape(len(T), -1).mean(0)


def all_reduce_statistics(solvers: list[StreamingRidge], shard: Any) -> None:
    """Sum the statistics of ``solvers`` over the ranks of ``shard`` (a
    :class:`~phasescope.engine.measure.distributed.Shard`), in three collectives whatever their number:

    1. every rank's sample count, per solver;
    2. the shifts of the first rank with samples (rank 0 in the tracker, whose first batch is the
       one-process run's first batch: the shift one process would use);
    3. the sums, each rank's re-expressed around those shifts first (:meth:`StreamingRidge._shift_to`),
       in float64.

    Afterwards every rank holds the same statistics, those of all samples, and solves alike."""
    for s in solvers:
        if not hasattr(s, "_s_h"):
            raise RuntimeError(f"rank {shard.rank} has no statistics to reduce: a process that saw no samples "
                               "calls StreamingRidge.allocate(features, targets) before all_reduce().")
    counts = torch.zeros(len(solvers), shard.world, dtype=torch.float64)
    counts[:, shard.rank] = torch.tensor([float(s.n) for s in solvers])
    counts = shard.all_reduce([counts], "counting the decoder's samples")[0]
    src = []
    for row in counts.tolist():
        nonzero = [r for r, c in enumerate(row) if c > 0]
        if not nonzero:
            raise NotFittedError("No process of the group has any sample for the decoder's statistics.")
        src.append(nonzero[0])
    shifts = []
    for s, r in zip(solvers, src):
        mine = shard.rank == r  # the others send zeros (never NaN * 0)
        shifts += [t.double() if mine else torch.zeros_like(t, dtype=torch.float64)
                   for t in (s._shift_h, *s._shift_t.values())]
    shifts = iter(shard.all_reduce(shifts, "sharing the decoder's shifts"))
    for s in solvers:
        h = next(shifts)
        s._shift_to(h, {k: next(shifts) for k in s._shift_t})
    sums = shard.all_reduce([t for s in solvers for t in s._statistics()], "summing the decoder's statistics")
    it = iter(sums)
    for s, row in zip(solvers, counts.tolist()):
        s._s_h, s._s_hh = next(it), next(it)
        keys = list(s._s_t)
        for group in (s._s_t, s._s_ht, s._s_tt):
            for k in keys:
                group[k] = next(it)
        s.n = int(sum(row))


class RidgeDecoder:
    """Exact linear decoder h -> x (scikit-learn style over :class:`StreamingRidge`)."""

    def __init__(self, ridge: float = DEFAULT_RIDGE):
        self.ridge = ridge

    def fit(self, H: torch.Tensor, X: torch.Tensor, batch_size: int = 1024) -> "RidgeDecoder":
        self.solver_ = StreamingRidge(self.ridge)
        for i in range(0, len(H), batch_size):
            self.solver_.partial_fit(H[i : i + batch_size], {"x": X[i : i + batch_size]})
        self.solver_.solve()
        self.train_mse_ = self.solver_.train_mse_["x"]
        return self

    def predict(self, H: torch.Tensor) -> torch.Tensor:
        if not hasattr(self, "solver_"):
            raise NotFittedError("RidgeDecoder is not fitted; call fit(H, X) first.")
        return self.solver_.predict(H, "x")

    def per_sample_error(self, H: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        if not hasattr(self, "solver_"):
            raise NotFittedError("RidgeDecoder is not fitted; call fit(H, X) first.")
        return self.solver_.per_sample_mse(H, X, "x")


@dataclass(frozen=True)
class OneHot:
    """A one-hot target given by its indices, for :meth:`StreamingRidge.partial_fit`: ``index``
    (n,) or (n, k) integers in 0..num_classes-1 stand for the (n, k * num_classes) matrix whose
    row i has a 1 in column ``j * num_classes + index[i, j]`` for each of its k positions (the
    one-hot of k tokens, side by side). Its statistics are accumulated by index-adding, so a
    vocabulary of 50,000 tokens costs no dense (n, 50,000) matrix."""

    index: torch.Tensor
    num_classes: int

    def __post_init__(self) -> None:
        idx = self.index if self.index.dim() == 2 else self.index.reshape(-1, 1)
        object.__setattr__(self, "index", idx.long())

    def __len__(self) -> int:
        return len(self.index)

    @property
    def dim(self) -> int:
        return self.index.shape[1] * self.num_classes

    def columns(self) -> torch.Tensor:
        """(n, k) column of each row's hot entry at each of its k positions."""
        offsets = torch.arange(self.index.shape[1], device=self.index.device) * self.num_classes
        return self.index + offsets

    def dense(self) -> torch.Tensor:
        """The (n, k * num_classes) float32 matrix it stands for (tests and small vocabularies)."""
        out = torch.zeros(len(self.index), self.dim)
        return out.scatter_(1, self.columns().cpu(), 1.0)


def one_hot(y: torch.Tensor, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(y.long(), k).float()


def logistic_probe(H_train: np.ndarray, y_train: np.ndarray, seed: int = 0):
    """Multinomial logistic regression solved to convergence (L-BFGS, L2 C=1 on standardised features)."""
    from sklearn.linear_model import LogisticRegression  # lazy: scikit-learn is heavy and only this function needs it
    from sklearn.pipeline import make_pipeline  # lazy: scikit-learn is heavy and only this function needs it
    from sklearn.preprocessing import StandardScaler  # lazy: scikit-learn is heavy and only this function needs it

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed)).fit(H_train, y_train)
