"""Time of one ConvDecoder epoch for activation shapes of the models on 3x32x32 inputs.

Run: python benchmarks/bench_conv_decoder.py [--threads 2] [--n 4000] [--channels 8 16 32]
Random activations and images; one epoch of ``--n`` samples (batch 128), timed after a
one-epoch warm-up fit. A full fit costs about ``epochs`` times this.
"""
from __future__ import annotations

import argparse
import time
import warnings

import torch

from phasescope.engine.measure.conv_decoder import ConvDecoder, DecoderConvergenceWarning

SHAPES = {
    "vgg8/2 features.4": (256, 1, 1),
    "vgg8/2 features.3": (128, 2, 2),
    "vgg8/2 features.2": (64, 4, 4),
    "resnet10/4 features.4": (128, 4, 4),
    "cnn features.3": (64, 2, 2),
    "cnn features.1": (32, 8, 8),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", DecoderConvergenceWarning)
    X = torch.randn(args.n, 3, 32, 32)
    print(f"threads={args.threads} n={args.n} device={args.device}: seconds per epoch")
    print(f"{'layer':24s} {'shape':>14s} " + " ".join(f"ch={c:<4d}" for c in args.channels))
    for name, shape in SHAPES.items():
        H = torch.randn(args.n, *shape)
        row = []
        for c in args.channels:
            ConvDecoder(epochs=1, channels=c, device=args.device).fit(H[:256], X[:256])  # warm-up
            t0 = time.perf_counter()
            ConvDecoder(epochs=1, channels=c, device=args.device).fit(H, X)
            row.append(time.perf_counter() - t0)
        print(f"{name:24s} {str(shape):>14s} " + " ".join(f"{t:7.2f}" for t in row), flush=True)


if __name__ == "__main__":
    main()
