"""How close does ConvDecoder get to the exact linear (ridge) optimum, by capacity?

Run: python benchmarks/decoder_quality.py --data ../shared/data/cifar10_subset.npz \
        [--device cuda] [--n-fit 10000] [--channels 8 16 32 64] [--out results.json]
Freshly initialised VGG-8 (width 0.5, seed 0) on real CIFAR-10 images, normalised per
channel; activations from a train-mode (batch-statistics) pass of 500 images. For each
layer: the exact ridge decoder (normal equations in float64, ridge 1e-3 x mean feature
variance) and ConvDecoder at each ``--channels`` (20 epochs, Adam lr 1e-3), scored on the
test images by the per-pixel MSE. The data file is optional for the package; this script
needs it.
"""
from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import torch

from phasescope.engine.measure.conv_decoder import ConvDecoder, DecoderConvergenceWarning
from phasescope.run.models import build_model


def ridge_test_mse(h_fit: torch.Tensor, x_fit: torch.Tensor, h_test: torch.Tensor, x_test: torch.Tensor,
                   alpha: float = 1e-3) -> float:
    """Exact ridge from flattened activations to flattened images, with an intercept."""
    H, X = h_fit.flatten(1).double(), x_fit.flatten(1).double()
    mu_h, mu_x = H.mean(0), X.mean(0)
    Hc = H - mu_h
    gram = Hc.T @ Hc / len(H)
    lam = alpha * float(torch.diagonal(gram).mean())
    W = torch.linalg.solve(gram + lam * torch.eye(gram.shape[0], dtype=gram.dtype), Hc.T @ (X - mu_x) / len(H))
    pred = (h_test.flatten(1).double() - mu_h) @ W + mu_x
    return float(((pred - x_test.flatten(1).double()) ** 2).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n-fit", type=int, default=10000)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--layers", nargs="+", default=["features.4", "features.2", "features.1"])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    d = np.load(args.data)
    x_tr = torch.tensor(d["x_train"][: args.n_fit]).permute(0, 3, 1, 2).float() / 255
    x_te = torch.tensor(d["x_test"][: args.n_test]).permute(0, 3, 1, 2).float() / 255
    mean, std = x_tr.mean((0, 2, 3), keepdim=True), x_tr.std((0, 2, 3), keepdim=True)
    x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    print(f"test variance (trivial MSE): {float(x_te.var(unbiased=False)):.4f}")

    torch.manual_seed(0)
    model = build_model("vgg8", (3, 32, 32), 10, width=0.5).to(args.device).train()
    acts: dict[str, list[torch.Tensor]] = {}
    modules = dict(model.named_modules())
    hooks = [modules[n].register_forward_hook(lambda _m, _i, o, n=n: acts.setdefault(n, []).append(o.cpu()))
             for n in args.layers]

    def activations(x: torch.Tensor) -> dict[str, torch.Tensor]:
        acts.clear()
        with torch.no_grad():
            for i in range(0, len(x), 500):
                model(x[i:i + 500].to(args.device))
        return {n: torch.cat(v) for n, v in acts.items()}

    h_tr, h_te = activations(x_tr), activations(x_te)
    for h in hooks:
        h.remove()
    warnings.simplefilter("ignore", DecoderConvergenceWarning)
    rows = []
    for layer in args.layers:
        t0 = time.perf_counter()
        r = ridge_test_mse(h_tr[layer], x_tr, h_te[layer], x_te)
        rows.append({"layer": layer, "shape": list(h_tr[layer].shape[1:]), "decoder": "ridge", "test_mse": r,
                     "seconds": time.perf_counter() - t0})
        print(rows[-1], flush=True)
        for c in args.channels:
            t0 = time.perf_counter()
            dec = ConvDecoder(epochs=args.epochs, channels=c, device=args.device).fit(h_tr[layer], x_tr)
            err = dec.per_sample_error(h_te[layer], x_te)
            rows.append({"layer": layer, "shape": list(h_tr[layer].shape[1:]), "decoder": f"conv ch={c}",
                         "test_mse": float(err.mean()), "train_mse": dec.train_mse_, "epochs_run": dec.epochs_run_,
                         "converged": dec.converged_, "seconds": time.perf_counter() - t0,
                         "history": [round(v, 4) for v in dec.history_]})
            print({k: v for k, v in rows[-1].items() if k != "history"}, flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
