"""What the decoder reconstructs: the input itself, or the one-hot of tokens.

The tracker picks one target when it is built and uses it in its fit pass (the statistics a
batch adds to each layer's :class:`~phasescope.engine.measure.ridge.StreamingRidge`) and in its
scoring (per-sample test errors and any further per-sample metrics):

* :class:`InputTarget` (``target="input"``, images and tabular data): the flattened input (or
  its coordinates in the span of the fit inputs, :mod:`phasescope.engine.measure.span`); the error is
  the per-sample mean squared error over its dimensions (pixels).
* :class:`TokenTarget` (``target="tokens"``, language models whose input is token ids
  ``(N, T)``): the one-hot of the token at the measured position, the last of each window
  (``window=k``: of each of the last k tokens, side by side). Its statistics are accumulated by
  index-adding (:class:`~phasescope.engine.measure.ridge.OneHot`) and its per-sample error is computed
  from the prediction alone, ``||x - x_hat||^2 = ||x_hat||^2 - 2 x_hat[token] + 1`` per position,
  so no dense one-hot of the vocabulary is ever formed. The error is averaged over the
  ``k * vocab`` entries (as pixels are averaged), and ``token_recovery`` is the fraction of the k
  tokens whose decoded argmax is the token. With k > 1 each position also gets its own rows,
  ``reconstruction_mse@lag=j`` and ``token_recovery@lag=j`` (j tokens before the last; lag 0 is
  the last token): ridge regression solves every target column on its own, so lag 0 of a window
  of k is exactly the measurement of ``window=1``. The probe's target, the label (the next
  token), is a one-hot of indices too.

Sharded over ``torch.distributed`` ranks (:mod:`phasescope.engine.measure.distributed`) each rank
index-adds its share of the fit samples into float64 sums, which are then summed over the ranks
like the dense products (:func:`~phasescope.engine.measure.ridge.all_reduce_statistics`); a one-hot's
shift is zero on every rank. The input-span decoder never applies to token targets: the
one-hot's columns are already the least a decoder can reconstruct.
"""
from __future__ import annotations

from typing import Any

import torch

from .ridge import OneHot, StreamingRidge, one_hot

CHUNK_ENTRIES = 1 << 24  # predictions scored at a time: rows x (k * vocab) float64 entries


class InputTarget:
    """The flattened input (pixels, features) and the dense one-hot label: the tracker as always."""

    kind = "input"
    metrics: tuple[str, ...] = ()

    def __init__(self, num_classes: int):
        self.num_classes = int(num_classes)

    def width(self, x: torch.Tensor) -> int:
        """Columns of the decoder's target for inputs like ``x``: the values of one input."""
        return int(x[0].numel())

    def fit_targets(self, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> dict[str, Any]:
        """A fit batch's targets: the inputs ``x`` (or their span coordinates) flattened, and the
        one-hot of the labels ``y``."""
        return {"x": x.reshape(len(x), -1).to(device), "y": one_hot(y, self.num_classes).to(device)}

    def test_targets(self, x: torch.Tensor, device: torch.device) -> Any:
        """The test inputs as :meth:`score` takes them (flattened once, on the device)."""
        return x.flatten(1).to(device)

    def score(self, solver: StreamingRidge, H: torch.Tensor, X: Any,
              device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-sample test errors of the decoder from features ``H`` against ``X`` (from
        :meth:`test_targets`, or the test inputs' span projection), and no further metric."""
        if not len(H):  # a rank's empty share
            return torch.zeros(0, dtype=torch.float64), {}
        return solver.per_sample_mse(H.to(device), X, "x").cpu(), {}

    def describe(self) -> dict:
        return {"target": self.kind}


class TokenTarget:
    """The one-hot of the last ``window`` tokens of each window of ``vocab_size`` token ids."""

    kind = "tokens"
    metrics = ("token_recovery",)

    def __init__(self, vocab_size: int, num_classes: int, window: int = 1):
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive integer (the last k tokens are reconstructed); got {window!r}.")
        self.vocab_size, self.num_classes, self.window = int(vocab_size), int(num_classes), window

    def check(self, x: torch.Tensor, name: str) -> None:
        """Token ids (N, T) in 0..vocab_size-1, with T >= window."""
        if x.dim() != 2:
            raise ValueError(f"{name}: token inputs are windows of token ids, shape (N, T); got shape {tuple(x.shape)}.")
        if x.shape[1] < self.window:
            raise ValueError(f"{name}: windows of {x.shape[1]} tokens are shorter than the {self.window} tokens to "
                             "reconstruct; lower the token window.")
        low, high = int(x.min()), int(x.max())
        if low < 0 or high >= self.vocab_size:
            raise ValueError(f"{name}: token ids go from {low} to {high} but the vocabulary has {self.vocab_size} "
                             f"tokens (0..{self.vocab_size - 1}); give vocab_size= the tokenizer's size.")

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(n, window) tokens reconstructed: those at the last ``window`` positions."""
        return x[:, -self.window:]

    def width(self, x: torch.Tensor) -> int:
        """Columns of the decoder's target: the one-hot of ``window`` tokens."""
        return self.window * self.vocab_size

    def fit_targets(self, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> dict[str, Any]:
        return {"x": OneHot(self.tokens(x).to(device), self.vocab_size), "y": OneHot(y.to(device), self.num_classes)}

    def test_targets(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        return x  # token ids: the one-hot is never formed

    def score(self, solver: StreamingRidge, H: torch.Tensor, x: torch.Tensor,
              device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-sample errors on the one-hot and ``token_recovery`` (and per-lag rows), from the
        token ids ``x``; an empty share gives empty values under the same keys."""
        err, hit = one_hot_errors(solver, H.to(device), OneHot(self.tokens(x).to(device), self.vocab_size), "x",
                                  per_position=True)  # (n, k) each, position k-1 = the last token
        extra = {"token_recovery": hit.mean(1)}
        if self.window > 1:
            for j in range(self.window):  # lag j: j tokens before the last
                extra[f"reconstruction_mse@lag={j}"] = err[:, -1 - j]
                extra[f"token_recovery@lag={j}"] = hit[:, -1 - j]
        return err.mean(1), extra

    def describe(self) -> dict:
        return {"target": self.kind, "vocab_size": self.vocab_size, "token_window": self.window,
                "reconstructed": ("the token at the last position of each window" if self.window == 1 else
                                  f"the tokens at the last {self.window} positions of each window")}


def one_hot_errors(solver: StreamingRidge, H: torch.Tensor, T: OneHot, name: str,
                   per_position: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample mean squared error of target ``name``'s prediction against the one-hot ``T``
    (over its ``k * num_classes`` entries) and the fraction of its k tokens recovered by the
    argmax, both (n,) float64 on the CPU, without forming the one-hot:
    ``||t - p||^2 = ||p||^2 - 2 p[token] + 1`` for each position. ``per_position``: both (n, k)
    instead, each position's error averaged over its ``num_classes`` entries."""
    n, k, v = len(T), T.index.shape[1], T.num_classes
    err = torch.empty(n, k, dtype=torch.float64)
    recovered = torch.empty(n, k, dtype=torch.float64)
    step = max(1, CHUNK_ENTRIES // T.dim)
    for i in range(0, n, step):
        P = solver.predict(H[i : i + step], name).double().view(-1, k, v)
        idx = T.index[i : i + step].to(P.device)
        at = P.gather(2, idx[..., None]).squeeze(2)  # (rows, k): the prediction at the true token
        err[i : i + step] = ((P.square().sum(2) - 2 * at + 1) / v).cpu()
        recovered[i : i + step] = (P.argmax(2) == idx).double().cpu()
    return (err, recovered) if per_position else (err.mean(1), recovered.mean(1))
