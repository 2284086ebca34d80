"""A fresh linear probe on frozen features, as a small estimator.

The tracker's label probes and the transfer probes are this estimator:

* ``ridge``: closed-form ridge regression on one-hot targets (:class:`StreamingRidge`);
  the loss is the squared error on the one-hot target, summed over classes;
* ``logistic``: multinomial logistic regression solved to convergence
  (:func:`logistic_probe`); the loss is the negative log-likelihood.

    probe = LinearProbe("ridge", num_classes=3).fit(H_train, y_train)
    correct, loss = probe.per_sample(H_test, y_test)   # (n,) float64 each
"""
from __future__ import annotations

import numpy as np
import torch

from .ridge import DEFAULT_RIDGE, NotFittedError, StreamingRidge, logistic_probe, one_hot

from ...defaults import PROBES as PROBE_KINDS, check_choice


class LinearProbe:
    def __init__(self, kind: str = "ridge", *, ridge: float = DEFAULT_RIDGE, num_classes: int | None = None, seed: int = 0,
                 device: str | torch.device = "cpu"):
        check_choice("probe", kind, PROBE_KINDS)
        self.kind, self.ridge, self.num_classes, self.seed = kind, ridge, num_classes, seed
        self.device = torch.device(device)

    @classmethod
    def from_solver(cls, solver: StreamingRidge, target: str = "y", *, num_classes: int,
                    device: str | torch.device = "cpu") -> "LinearProbe":
        """A fitted ridge probe from a solved :class:`StreamingRidge` whose ``target`` holds the
        one-hot labels: the tracker fits decoder and probe from one Gram matrix this way."""
        probe = cls("ridge", ridge=solver.ridge, num_classes=num_classes, device=device)
        probe.solver_, probe.num_classes_, probe.target_ = solver, num_classes, target
        return probe

    def fit(self, H: torch.Tensor, y: torch.Tensor) -> "LinearProbe":
        """Fit on features ``H`` (n, p) and integer labels ``y`` (n,)."""
        y = torch.as_tensor(y).long()
        self.num_classes_ = int(self.num_classes or int(y.max()) + 1)
        if self.kind == "ridge":
            self.solver_ = StreamingRidge(self.ridge).partial_fit(
                H.to(self.device), {"y": one_hot(y, self.num_classes_).to(self.device)}).solve()
            self.target_ = "y"
        else:
            self.solver_ = logistic_probe(H.cpu().numpy(), y.numpy(), seed=self.seed)
        return self

    def scores(self, H: torch.Tensor) -> np.ndarray:
        """(n, num_classes) class scores: ridge outputs, or probabilities for ``logistic``."""
        if not hasattr(self, "solver_"):
            raise NotFittedError("LinearProbe is not fitted; call fit(H, y) first.")
        if self.kind == "ridge":
            return self.solver_.predict(H.to(self.device), self.target_).cpu().double().numpy()
        proba = np.clip(self.solver_.predict_proba(H.cpu().numpy()), 1e-12, 1)
        full = np.full((len(H), self.num_classes_), 1e-12)  # classes absent from the fit set
        full[:, self.solver_.classes_] = proba
        return full

    def per_sample(self, H: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample correctness (0/1) and loss, float64 arrays of shape (n,)."""
        y = torch.as_tensor(y).long().numpy()
        s = self.scores(H)
        correct = (s.argmax(1) == y).astype(np.float64)
        if self.kind == "ridge":
            d = s.copy()  # s minus the one-hot target, without np.eye (a vocabulary of 50,000 would not fit)
            d[np.arange(len(y)), y] -= 1.0
            loss = (d ** 2).sum(1)  # squared loss on the one-hot target
        else:
            loss = -np.log(s[np.arange(len(y)), y])
        return correct, loss
