"""A transposed-convolution decoder, fitted from scratch, that reconstructs inputs from a
layer's activations: the iterative alternative to the exact linear (ridge) decoder.

The architecture mirrors the encoder's downsampling, after the decoder of the authors'
research code for arXiv 2312.06887 (github.com/JohnTailor/LearnPhase, cladec.py,
``ClaDecNet``): a channel-adjusting convolution (or, for flat or tiny activations, a linear
layer onto a small grid), then ``ConvTranspose2d(kernel 4, stride 2, padding 1)`` stages
that each double the resolution, then a 3x3 convolution to the image channels, cropped to
the image size. It differs from that code in three documented ways: BatchNorm after every
transposed convolution; channel counts that halve per stage down to ``channels`` at full
resolution (the research code ends at 64 and starts at up to 512, too slow for CPU
measurement at every checkpoint); and activations and images standardised per channel
inside the decoder (statistics of the fitting set) so one learning rate suits any layer.

Decoder quality is part of the measurement: training runs for a fixed budget of
``epochs`` with a convergence check, and the fitted attributes say whether it converged. ``fit`` is deterministic given ``seed`` on CPU and never touches the global
random state.
"""
from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from ...errors import NotFittedError

__all__ = ["ConvDecoder", "DecoderConvergenceWarning", "NotFittedError"]


class DecoderConvergenceWarning(UserWarning):
    """The decoder's epoch budget ran out before its training loss stopped improving."""


_EPS = 1e-6
_GRID = 4  # side of the grid a linear layer maps flat (or tiny) activations onto


def _should_stop(history: list[float], tol: float, patience: int) -> bool:
    """True when the relative improvement of the last ``patience`` epoch losses each stayed
    below ``tol``: ``(loss[e-1] - loss[e]) / loss[e-1] < tol`` (an increase counts too)."""
    if len(history) <= patience:
        return False
    for prev, cur in zip(history[-patience - 1:-1], history[-patience:]):
        if prev > 0 and (prev - cur) / prev >= tol:
            return False
    return True


def _doublings(size_from: int, size_to: int) -> int:
    """How many x2 upsamplings take ``size_from`` to at least ``size_to``."""
    return max(0, math.ceil(math.log2(size_to / size_from) - 1e-9))


class _Decoder(nn.Module):
    """Standardise H -> adjust (conv or linear to a grid) -> k x [ConvT+BN+ReLU] -> 3x3 conv
    -> crop -> un-standardise to image units."""

    def __init__(self, h_shape: tuple[int, ...], x_shape: tuple[int, int, int], channels: int):
        super().__init__()
        c_img, height, width = x_shape
        self.out_size = (height, width)
        spatial = len(h_shape) == 3 and min(h_shape[1:]) >= _GRID
        if spatial:
            c, h, w = h_shape
            n_up = max(_doublings(h, height), _doublings(w, width))
        else:  # flat, or spatial but smaller than the grid: a linear layer onto a g x g grid
            grid = min(_GRID, height, width)
            n_up = max(_doublings(grid, height), _doublings(grid, width))
        # channels halve per stage, ending at `channels` at full resolution
        stage_ch = [channels * 2 ** (n_up - i) for i in range(n_up + 1)]  # stage_ch[0]: input grid
        c0 = stage_ch[0]
        if spatial:
            c = h_shape[0]
            kernel = 3 if c * c0 * 9 <= 2_000_000 else 1  # 3x3 unless it would be very wide
            self.adjust: nn.Module = nn.Sequential(
                nn.Conv2d(c, c0, kernel, padding=kernel // 2), nn.BatchNorm2d(c0), nn.ReLU(inplace=True))
        else:
            n_in = int(torch.Size(h_shape).numel())
            self.adjust = nn.Sequential(
                nn.Flatten(), nn.Linear(n_in, c0 * grid * grid), nn.Unflatten(1, (c0, grid, grid)),
                nn.BatchNorm2d(c0), nn.ReLU(inplace=True))
        ups: list[nn.Module] = []
        for i in range(n_up):
            ups += [nn.ConvTranspose2d(stage_ch[i], stage_ch[i + 1], 4, stride=2, padding=1, bias=False),
                    nn.BatchNorm2d(stage_ch[i + 1]), nn.ReLU(inplace=True)]
        self.up = nn.Sequential(*ups)
        self.out = nn.Conv2d(stage_ch[-1], c_img, 3, padding=1)
        # standardisation statistics, set by ConvDecoder.fit (buffers: they move with .to())
        self.register_buffer("h_mean", torch.zeros(1, *h_shape[:1], *([1] * (len(h_shape) - 1))))
        self.register_buffer("h_std", torch.ones_like(self.h_mean))
        self.register_buffer("x_mean", torch.zeros(1, c_img, 1, 1))
        self.register_buffer("x_std", torch.ones(1, c_img, 1, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = (h - self.h_mean) / self.h_std
        z = self.out(self.up(self.adjust(z)))  # (N, C_img, >= H, >= W)
        z = z[:, :, : self.out_size[0], : self.out_size[1]]  # top-left crop: stride-2 alignment
        return z * self.x_std + self.x_mean


def _channel_stats(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (dim 1) mean and std over all other axes, shaped for broadcasting."""
    dims = [0] + list(range(2, t.dim()))
    t64 = t.double()
    mean = t64.mean(dim=dims, keepdim=True)
    std = t64.std(dim=dims, keepdim=True, unbiased=False)
    # constant channels (dead ReLUs) are left unscaled
    std = torch.where(std > _EPS, std, torch.ones_like(std))
    return mean.float(), std.float()


class ConvDecoder:
    """Transposed-convolution decoder from activations ``H`` to images ``X``, trained with
    Adam on the mean squared error for at most ``epochs`` epochs.

    Parameters
    ----------
    epochs : int, default 20
        Epoch budget (full passes over the fitting set).
    lr : float, default 1e-3
        Adam learning rate.
    batch_size : int, default 128
    weight_decay : float, default 0.0
        Adam's L2 penalty.
    tol : float, default 1e-3
        Convergence: stop once the relative improvement of the epoch training loss,
        ``(loss[e-1] - loss[e]) / loss[e-1]``, stayed below ``tol``...
    patience : int, default 3
        ...for ``patience`` consecutive epochs.
    seed : int, default 0
        Seeds initialisation and shuffling through local generators; the global torch RNG
        state is left unchanged. Two fits with the same seed on CPU give identical results.
    device : str, default "cpu"
        Where the decoder trains ("cpu", "cuda", "cuda:1", ...). On CUDA, transposed-conv
        backward passes are not bitwise deterministic.
    channels : int, default 32 (keyword-only)
        Channels of the last (full-resolution) stage; each stage further up has twice as
        many.

    Fitted attributes
    -----------------
    train_mse_ : float
        Per-pixel MSE on the fitting set, in eval mode after training (the number to
        compare with a test MSE).
    epochs_run_ : int
    converged_ : bool
        True when the convergence criterion stopped training, False when the budget did.
    history_ : list[float]
        Mean training loss (per-pixel MSE, train mode) of each epoch.
    input_shape_ : tuple, per-sample shape of H;  output_shape_ : tuple, of X.
    module_ : torch.nn.Module, the trained network (eval mode).
    """

    def __init__(self, epochs: int = 20, lr: float = 1e-3, batch_size: int = 128, weight_decay: float = 0.0,
                 tol: float = 1e-3, patience: int = 3, seed: int = 0, device: str = "cpu", *, channels: int = 32):
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.tol = tol
        self.patience = patience
        self.seed = seed
        self.device = device
        self.channels = channels

    # -- scikit-learn style parameter access -------------------------------------------
    _PARAMS = ("epochs", "lr", "batch_size", "weight_decay", "tol", "patience", "seed", "device", "channels")

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in self._PARAMS}

    def __repr__(self) -> str:
        return f"ConvDecoder({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"

    # -- validation --------------------------------------------------------------------
    def _check_params(self) -> None:
        def positive_int(name: str, minimum: int = 1) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ValueError(f"ConvDecoder: {name}={v!r} is invalid; use an integer >= {minimum}.")

        positive_int("epochs")
        positive_int("batch_size", 2)  # BatchNorm needs two samples per batch
        positive_int("patience")
        positive_int("channels")
        if not self.lr > 0:
            raise ValueError(f"ConvDecoder: lr={self.lr!r} is invalid; use a positive learning rate such as 1e-3.")
        if not self.weight_decay >= 0:
            raise ValueError(f"ConvDecoder: weight_decay={self.weight_decay!r} is invalid; use a value >= 0.")
        if not self.tol >= 0:
            raise ValueError(f"ConvDecoder: tol={self.tol!r} is invalid; use a value >= 0 such as 1e-3.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"ConvDecoder: seed={self.seed!r} is invalid; use an integer >= 0.")
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"ConvDecoder: device={self.device!r} is invalid; use 'cpu' or 'cuda'.") from err
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"ConvDecoder: device={self.device!r} but CUDA is not available; use device='cpu'.")

    @staticmethod
    def _check_h(H: torch.Tensor) -> torch.Tensor:
        if not isinstance(H, torch.Tensor):
            raise TypeError(f"ConvDecoder: H must be a torch.Tensor; got {type(H).__name__}.")
        if H.dim() not in (2, 4):
            raise ValueError(f"ConvDecoder: H must have shape (N, C, h, w) or (N, p); got {tuple(H.shape)}.")
        return H.float()

    def _check_fitted(self) -> None:
        if not hasattr(self, "module_"):
            raise NotFittedError("This ConvDecoder is not fitted yet; call fit(H, X) before predict or "
                                 "per_sample_error.")

    # -- fitting -----------------------------------------------------------------------
    def fit(self, H: torch.Tensor, X: torch.Tensor) -> "ConvDecoder":
        """Train a fresh decoder from activations ``H`` (N, C, h, w) or (N, p) to images
        ``X`` (N, C_in, H_in, W_in). Returns ``self``."""
        self._check_params()
        H = self._check_h(H)
        if not isinstance(X, torch.Tensor) or X.dim() != 4:
            raise ValueError(f"ConvDecoder: X must be a tensor of images (N, C, H, W); got "
                             f"{tuple(X.shape) if isinstance(X, torch.Tensor) else type(X).__name__}.")
        X = X.float()
        n = H.shape[0]
        if X.shape[0] != n:
            raise ValueError(f"ConvDecoder: H has {n} samples but X has {X.shape[0]}; they must match.")
        if n < 2:
            raise ValueError(f"ConvDecoder: fit needs at least 2 samples; got {n}.")
        if not (torch.isfinite(H).all() and torch.isfinite(X).all()):
            raise ValueError("ConvDecoder: H or X contains NaN or infinite values.")
        device = torch.device(self.device)

        # initialisation from a seeded fork of the CPU RNG: the global state is restored on exit
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(self.seed)
            module = _Decoder(tuple(H.shape[1:]), tuple(X.shape[1:]), self.channels)
        h_mean, h_std = _channel_stats(H)
        x_mean, x_std = _channel_stats(X)
        module.h_mean.copy_(h_mean)
        module.h_std.copy_(h_std)
        module.x_mean.copy_(x_mean)
        module.x_std.copy_(x_std)
        module.to(device)

        opt = torch.optim.Adam(module.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        shuffle = torch.Generator().manual_seed(self.seed + 1)  # separate stream from init
        bs = min(self.batch_size, n)
        history: list[float] = []
        converged = False
        module.train()
        for _ in range(self.epochs):
            order = torch.randperm(n, generator=shuffle)
            total, count = 0.0, 0
            for start in range(0, n, bs):
                idx = order[start:start + bs]
                if len(idx) < 2:  # BatchNorm cannot train on one sample; it is seen next epoch
                    continue
                hb, xb = H[idx].to(device), X[idx].to(device)
                loss = torch.mean((module(hb) - xb) ** 2)  # per-pixel MSE, image units
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
                count += len(idx)
            history.append(total / count)
            if _should_stop(history, self.tol, self.patience):
                converged = True
                break
        module.eval()
        self.module_ = module
        self.history_ = history
        self.epochs_run_ = len(history)
        self.converged_ = converged
        self.input_shape_ = tuple(H.shape[1:])
        self.output_shape_ = tuple(X.shape[1:])
        self.train_mse_ = float(self.per_sample_error(H, X).mean())
        if not converged:
            warnings.warn(
                f"ConvDecoder: the budget of epochs={self.epochs} ran out before the training loss stopped "
                f"improving (relative improvement < tol={self.tol} for patience={self.patience} epochs); "
                f"last loss {history[-1]:.4g}. Raise epochs or lr, or treat the error as an upper bound.",
                DecoderConvergenceWarning, stacklevel=2)
        return self

    # -- inference ---------------------------------------------------------------------
    def _batches(self, H: torch.Tensor):
        self._check_fitted()
        H = self._check_h(H)
        if tuple(H.shape[1:]) != self.input_shape_:
            raise ValueError(f"ConvDecoder: H has per-sample shape {tuple(H.shape[1:])} but the decoder was "
                             f"fitted on {self.input_shape_}.")
        device = next(self.module_.parameters()).device
        bs = max(self.batch_size, 256)
        for start in range(0, H.shape[0], bs):
            yield start, self.module_(H[start:start + bs].to(device))

    @torch.no_grad()
    def predict(self, H: torch.Tensor) -> torch.Tensor:
        """Reconstructed images (N, C_in, H_in, W_in), on the CPU, in eval mode."""
        self._check_fitted()
        self.module_.eval()
        outs = [out.cpu() for _, out in self._batches(H)]
        return torch.cat(outs) if outs else torch.empty(0, *self.output_shape_)

    @torch.no_grad()
    def per_sample_error(self, H: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        """Per-sample mean over pixels (and channels) of the squared reconstruction error:
        a float tensor of shape (N,), on the CPU."""
        self._check_fitted()
        H = self._check_h(H)
        if not isinstance(X, torch.Tensor) or tuple(X.shape[1:]) != self.output_shape_ or X.shape[0] != H.shape[0]:
            raise ValueError(f"ConvDecoder: X must have shape (N, {', '.join(map(str, self.output_shape_))}) "
                             f"with N = len(H) = {H.shape[0]}; got "
                             f"{tuple(X.shape) if isinstance(X, torch.Tensor) else type(X).__name__}.")
        self.module_.eval()
        errs = []
        for start, out in self._batches(H):
            xb = X[start:start + out.shape[0]].float().to(out.device)
            errs.append(((out - xb) ** 2).flatten(1).mean(dim=1).cpu())
        return torch.cat(errs) if errs else torch.empty(0)
