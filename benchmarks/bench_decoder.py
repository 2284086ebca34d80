"""Closed-form ridge decoder vs an iteratively trained linear decoder, on the same activations.

The iterative protocol is the research code's: a linear layer trained with Adam
(lr 3e-4, weight decay 1e-5), 20 epochs, batch 128, on MSE. Both decoders see the same
training activations and are scored on the same held-out activations; times are measured
side by side in one run.

    python benchmarks/bench_decoder.py                                   # embedded MNIST digits (ships with the package)
    python benchmarks/bench_decoder.py --data cifar10 --data-dir PATH    # CIFAR-10 files or an .npz with x_train, ...

It prints which data it used; data asked for but not found is an error, never a silent fallback.
"""
from __future__ import annotations

import argparse
import time
import sys
from pathlib import Path

import torch

from phasescope.data import load_dataset
from phasescope.engine.measure.capture import flatten_features, iter_batches, prepare
from phasescope.engine.measure.ridge import RidgeDecoder
from phasescope.run.models import build_model

def activations(model, layer, x):
    feats = [flatten_features(o[layer], None) for _, _, o in iter_batches(model, [layer], x, 500, torch.device("cpu"))]
    return torch.cat(feats)


def adam_decoder(H, X, Ht, Xt, epochs=20, lr=3e-4, wd=1e-5, batch=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(H.shape[1], X.shape[1])
    opt = torch.optim.Adam(lin.parameters(), lr=lr, weight_decay=wd)
    for _ in range(epochs):
        perm = torch.randperm(len(H), generator=g)
        for i in range(0, len(H), batch):
            idx = perm[i : i + batch]
            loss = torch.nn.functional.mse_loss(lin(H[idx]), X[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return float(((lin(Ht) - Xt) ** 2).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="mnist-digits", help="a dataset name (see phasescope run --help)")
    ap.add_argument("--data-dir", type=Path, default=None, help="where file datasets are (folder or .npz)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.data_dir is not None and not args.data_dir.exists():
        sys.exit(f"error: --data-dir {args.data_dir} does not exist; give the folder or .npz of --data {args.data}.")
    data = load_dataset("npz" if args.data_dir and args.data_dir.suffix == ".npz" else args.data,
                        data_dir=str(args.data_dir) if args.data_dir else None)
    print(f"data: {args.data} from {args.data_dir or 'the embedded copy'} ({data.info.get('source', '')})")
    model_name, layer = ("vgg8", "features.4") if data.input_shape[0] == 3 else ("cnn", "features.3")
    torch.manual_seed(0)
    model = prepare(build_model(model_name, data.input_shape, data.num_classes), "recalibrate",
                    data.x_train[:2000], 500, torch.device("cpu"))
    H, Ht = activations(model, layer, data.x_train), activations(model, layer, data.x_test)
    X, Xt = data.x_train.reshape(len(H), -1), data.x_test.reshape(len(Ht), -1)
    print(f"data {args.data}: {len(H)} train / {len(Ht)} test activations of {layer} ({H.shape[1]} features), "
          f"{X.shape[1]} pixels; freshly initialised {model_name}; {args.threads} threads")
    t = time.perf_counter()
    dec = RidgeDecoder().fit(H, X, batch_size=500)  # default relative ridge 0.1
    mse_ridge = float(dec.per_sample_error(Ht, Xt).mean())
    t_ridge = time.perf_counter() - t
    t = time.perf_counter()
    mse_adam = adam_decoder(H, X, Ht, Xt)
    t_adam = time.perf_counter() - t
    print(f"{'decoder':<34}{'seconds':>10}{'test MSE':>12}")
    print(f"{'closed-form ridge (phasescope)':<34}{t_ridge:>10.2f}{mse_ridge:>12.4f}")
    print(f"{'Adam 20 epochs (research code)':<34}{t_adam:>10.2f}{mse_adam:>12.4f}")
    print(f"speed-up {t_adam / t_ridge:.1f}x; test MSE ratio ridge/Adam {mse_ridge / mse_adam:.3f}")
    print("sensitivity of the closed form to the relative ridge (same Gram matrix, re-solved):")
    for r in (1e-3, 1e-2, 1e-1, 3e-1):
        dec.solver_.ridge = r
        dec.solver_.solve()
        print(f"  ridge {r:<6g} test MSE {float(dec.solver_.per_sample_mse(Ht, Xt, 'x').mean()):.4f}")


if __name__ == "__main__":
    main()
