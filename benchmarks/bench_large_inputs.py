"""Time and peak memory of the linear decoder on 224 x 224 x 3 inputs (D = 150,528): phasescope
with the input-span reduction, phasescope without it, and forward hooks + scikit-learn Ridge.

Run: python benchmarks/bench_large_inputs.py [--fit 4000] [--test 2000] [--threads 2] [--no-full] [--loader]

A ResNet-18-style network built here (ImageNet stem: 7x7/2 conv and 3x3/2 max-pool, four stages
of two BasicBlocks, widths 16-32-64-128 so that its forward passes stay cheap on a CPU), untrained,
on the CIFAR-10 subset (../shared/data/cifar10_subset.npz; else random images) upsampled to
224 x 224 with F.interpolate. Layers ``layer3`` and ``layer4``, average-pooled to at most 1,024
features (``max_features=1024``), one checkpoint measured twice (iterations 0 and 1: the first
includes the span's one-time set-up). scikit-learn: the same pooled features through forward
hooks, ``Ridge(alpha)`` with phasescope's absolute lambda per layer, fitted to the flattened
inputs and scored per sample. Each method runs in turn in this process; its peak memory is the rise
of the process's resident set (VmHWM after resetting it, minus VmRSS at the start), also printed per
segment (the tracker's set-up, each checkpoint: the first includes the span's one-time set-up). The
float32 inputs (fit and test: 3.4 GiB at 4,000 / 2,000) are held by the caller before and are not in it.

``--loader``: phasescope alone, on DataLoaders that upsample each batch as they go (the caller holds
only the 32 x 32 images), once with the inputs in the memory-mapped file a large loader's inputs go to
by default and once with them held in memory; besides the resident set's peak (which counts the
file's pages while they are cached) it prints the peak of the anonymous memory (RssAnon, sampled).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SUBSET = Path("shared") / "data" / "cifar10_subset.npz"
CIFAR = next((p / SUBSET for p in Path(__file__).resolve().parents[1:] if (p / SUBSET).exists()), None)
LAYERS = ["layer3", "layer4"]


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        return F.relu(self.b2(self.c2(F.relu(self.b1(self.c1(x))))) + self.skip(x))


class ResNet18ish(nn.Module):
    def __init__(self, widths=(16, 32, 64, 128), num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        cin, stages = widths[0], []
        for i, w in enumerate(widths):
            stages.append(nn.Sequential(Block(cin, w, 1 if i == 0 else 2), Block(w, w, 1)))
            cin = w
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(x.mean((2, 3)))


def small(n_fit: int, n_test: int):
    """The 32 x 32 images, normalised (contiguous (N, C, H, W)), and their labels."""
    if CIFAR is not None:
        d = np.load(CIFAR)
        x = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float().div(255)
        xs = [x(d["x_train"][:n_fit]), x(d["x_test"][:n_test])]
        ys = [torch.from_numpy(d["y_train"][:n_fit]), torch.from_numpy(d["y_test"][:n_test])]
        source = "CIFAR-10 subset"
    else:
        g = torch.Generator().manual_seed(0)
        xs = [torch.rand(n, 3, 32, 32, generator=g) for n in (n_fit, n_test)]
        ys = [torch.randint(0, 10, (n,), generator=g) for n in (n_fit, n_test)]
        source = "random images"
    mean = xs[0].mean((0, 2, 3), keepdim=True)
    std = xs[0].std((0, 2, 3), keepdim=True)
    # contiguous (N, C, H, W), as a data pipeline gives them: the CIFAR arrays are (N, H, W, C), and
    # interpolating their permuted view keeps that channels-last memory order, which any flattening copies
    return source, [((x - mean) / std).contiguous() for x in xs], ys


def up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False).contiguous()


def load(n_fit: int, n_test: int):
    source, xs, ys = small(n_fit, n_test)
    return source, (up(xs[0]), ys[0]), (up(xs[1]), ys[1])


def loaders(n_fit: int, n_test: int, batch: int = 100):
    """DataLoaders that upsample each batch of 32 x 32 images as they go (a pipeline that decodes and
    resizes): nothing at 224 x 224 is held by the caller."""
    source, xs, ys = small(n_fit, n_test)
    collate = lambda b: (up(torch.stack([x for x, _ in b])), torch.stack([y for _, y in b]))
    make = lambda x, y: torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch,
                                                    collate_fn=collate)
    return source, make(xs[0], ys[0]), make(xs[1], ys[1])


class AnonPeak:
    """The peak of the process's anonymous resident memory (RssAnon: not file pages, which the
    operating system can drop), sampled every 20 ms in a thread while in the block."""

    def __enter__(self):
        import threading

        self.start = self.peak = _rss("RssAnon")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self):
        while not self.stop.wait(0.02):
            self.peak = max(self.peak, _rss("RssAnon"))

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, _rss("RssAnon"))


def loader_run(args) -> None:
    """phasescope (input span) on DataLoaders, with the inputs kept in a memory-mapped file (over
    SPILL_BYTES, the default) and held in memory (SPILL_BYTES raised): time and memory side by side."""
    import gc
    import warnings

    from phasescope import PhaseTracker
    from phasescope.engine.measure import inputs

    default = inputs.SPILL_BYTES
    print("DataLoaders upsampling each batch of 100 images as they go; phasescope with the input span")
    for label, spill in (("as by default (a memory-mapped file over 1 GiB)", default), ("held in memory", 1 << 62)):
        inputs.SPILL_BYTES = spill
        torch.manual_seed(0)
        model = ResNet18ish()
        gc.collect()
        _, fit, test = loaders(args.fit, args.test)
        with AnonPeak() as anon:
            peaks = Peaks()
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t = PhaseTracker(model, LAYERS, fit, test, [0, 1], max_features=1024, bn_mode="running", bootstrap=200)
            made = time.perf_counter() - t0
            mapped = sum("phasescope-inputs-" in line for line in Path("/proc/self/maps").read_text().splitlines())
            peaks.mark("set-up")
            for it in (0, 1):
                t.measure(model, it)
                peaks.mark(f"checkpoint {it + 1}")
        print(f"  inputs {label} ({mapped} mapped file(s)): reading the loaders {made:.1f} s, "
              f"checkpoints {t.timings[0]:.1f} s, "
              f"{t.timings[1]:.1f} s; peak rise of the resident set {peaks.peak / 2**30:.2f} GiB, of its anonymous "
              f"memory {(anon.peak - anon.start) / 2**30:.2f} GiB", flush=True)
        del t, fit, test
    inputs.SPILL_BYTES = default


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    except OSError:
        pass


class Peaks:
    """Peak rises of the resident set over ``start`` (VmRSS when made), segment by segment: each
    :meth:`mark` records the segment's peak (VmHWM) and resets it for the next."""

    def __init__(self):
        import gc

        gc.collect()
        _reset_peak()
        self.start, self.segments = _rss("VmRSS"), {}

    def mark(self, name: str) -> None:
        self.segments[name] = _rss("VmHWM") - self.start
        _reset_peak()

    @property
    def peak(self) -> int:
        return max(self.segments.values(), default=0)


def isolated(fn, *args):
    """fn(peaks, *args): (seconds, peak rise of the resident set in bytes, segment peaks, result). The
    peak (VmHWM) is reset first (/proc/self/clear_refs), so each method's peak is its own (one process:
    forked children of a process that already ran threaded torch code can deadlock)."""
    peaks = Peaks()
    t0 = time.perf_counter()
    out = fn(peaks, *args)
    seconds = time.perf_counter() - t0
    peaks.mark("rest")
    return seconds, peaks.peak, peaks.segments, out


def phasescope_run(peaks, model, fit, test, input_span):
    import warnings

    from phasescope import PhaseTracker

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = PhaseTracker(model, LAYERS, fit, test, [0, 1], max_features=1024, input_span=input_span, bn_mode="running",
                         bootstrap=200)
        peaks.mark("set-up")
        for it in (0, 1):
            t.measure(model, it)
            peaks.mark(f"checkpoint {it + 1}")
    errs = {n: t.errors[n][1] for n in LAYERS}
    lams = {}
    return [t.timings[0], t.timings[1]], errs, lams


def sklearn_run(peaks, model, fit, test, lams, batch):
    """Forward hooks give the same pooled features (batches of ``batch`` rows, as the tracker's
    forward passes); scikit-learn Ridge decodes the inputs. Returns the per-sample errors and the
    seconds of the forward passes and of the decoding."""
    from sklearn.linear_model import Ridge

    from phasescope.engine.measure.capture import feature_map

    feats = {}
    hooks = [getattr(model, n).register_forward_hook(lambda m, i, o, n=n: feats.setdefault(n, []).append(o))
             for n in LAYERS]
    model.eval()

    def features(x):
        feats.clear()
        with torch.no_grad():
            for i in range(0, len(x), batch):
                model(x[i:i + batch])
        out = {}
        for n in LAYERS:
            o = torch.cat(feats[n])
            g = feature_map(list(o.shape[1:]), 1024).grid
            out[n] = (F.adaptive_avg_pool2d(o, g) if g else o).flatten(1).numpy()
        return out

    t0 = time.perf_counter()
    Hf, Ht = features(fit[0]), features(test[0])
    forward = time.perf_counter() - t0
    for h in hooks:
        h.remove()
    Xf, Xt = fit[0].flatten(1).numpy(), test[0].flatten(1).numpy()
    errs = {}
    for n in LAYERS:
        r = Ridge(alpha=lams[n]).fit(Hf[n], Xf)
        errs[n] = ((r.predict(Ht[n]) - Xt) ** 2).mean(1)
    return errs, forward, time.perf_counter() - t0 - forward


def channels_last_forward(model, fit, test, batch: int) -> float:
    """Seconds of the eval forward passes over fit and test in channels-last memory order (what
    phasescope runs for a conv net on a CPU: phasescope.engine.layers.to_channels_last)."""
    import copy

    from phasescope.engine.layers import call_model, to_channels_last

    frozen = to_channels_last(copy.deepcopy(model).eval())
    t0 = time.perf_counter()
    with torch.no_grad():
        for x in (fit[0], test[0]):
            for i in range(0, len(x), batch):
                call_model(frozen, x[i:i + batch])
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fit", type=int, default=4000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-full", action="store_true", help="skip phasescope without the reduction (memory)")
    ap.add_argument("--loader", action="store_true", help="only phasescope on DataLoaders that upsample as they go: "
                    "inputs in a memory-mapped file against inputs in memory")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.loader:
        return loader_run(args)
    source, fit, test = load(args.fit, args.test)
    torch.manual_seed(0)
    model = ResNet18ish()
    print(f"{source}: {args.fit} fit / {args.test} test images at 224x224x3 (D = {fit[0][0].numel():,}), "
          f"layers {LAYERS} (max_features 1024), {args.threads} threads")

    # phasescope's lambdas, for scikit-learn's alpha: the decoder of the span run at iteration 1
    from phasescope import PhaseTracker

    held = sum(t.numel() * t.element_size() for t in (*fit, *test))
    print(f"inputs held by the caller (float32): {held / 2**30:.2f} GiB; process resident set before the methods: "
          f"{_rss('VmRSS') / 2**30:.2f} GiB")
    results, segments = {}, {}
    t, peak, seg, (times, errs, _) = isolated(phasescope_run, model, fit, test, "auto")
    results["phasescope, input span"] = (times, peak, errs)
    segments["phasescope, input span"] = seg
    print(f"  input span: checkpoints {times[0]:.1f} s, {times[1]:.1f} s; peak {peak / 2**30:.2f} GiB", flush=True)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probe = PhaseTracker(model, LAYERS, (fit[0][:2], fit[1][:2]), (test[0][:2], test[1][:2]), [0],
                             max_features=1024, bn_mode="running")
    lams = _lambdas(probe, model, fit)
    t, peak, _, (errs_sk, forward, decode) = isolated(sklearn_run, model, fit, test, lams, probe.batch_size)
    results["hooks + scikit-learn Ridge"] = ([t, float("nan")], peak, errs_sk)
    sk_t = t
    print(f"  hooks + scikit-learn: {t:.1f} s (forward passes {forward:.1f} s, Ridge {decode:.1f} s); "
          f"peak {peak / 2**30:.2f} GiB", flush=True)
    forward_cl = channels_last_forward(model, fit, test, probe.batch_size)
    print(f"  the same forward passes in channels-last order: {forward_cl:.1f} s", flush=True)
    for n in LAYERS:
        rel = np.abs(errs[n] - errs_sk[n]).max() / np.abs(errs_sk[n]).max()
        print(f"  {n}: per-sample errors, span vs scikit-learn: max relative difference {rel:.1e}")
    if not args.no_full:
        t, peak, seg, (times, errs_full, _) = isolated(phasescope_run, model, fit, test, "off")
        results["phasescope, all D values"] = (times, peak, errs_full)
        segments["phasescope, all D values"] = seg
        print(f"  all D values: checkpoints {times[0]:.1f} s, {times[1]:.1f} s; peak {peak / 2**30:.2f} GiB", flush=True)
        for n in LAYERS:
            rel = np.abs(errs[n] - errs_full[n]).max() / np.abs(errs_full[n]).max()
            print(f"  {n}: per-sample errors, span vs all D values: max relative difference {rel:.1e}")

    base_t, base_m = results["phasescope, input span"][0][1], results["phasescope, input span"][1]
    print(f"\n{'method':28s} {'1st checkpoint':>15s} {'2nd':>9s} {'peak memory':>12s} {'time / span':>12s} "
          f"{'memory / span':>14s}")
    for name, (times, peak, _) in results.items():
        print(f"{name:28s} {times[0]:13.1f} s {times[1]:7.1f} s {peak / 2**30:9.2f} GiB "
              f"{times[0] / base_t:11.1f}x {peak / base_m:13.1f}x")
    print("(time / span: each method's first checkpoint over the span's second; scikit-learn's time "
          "includes its forward passes; phasescope's include the probes and intervals; BatchNorm in running mode for both)")
    beyond = base_t - forward_cl
    print(f"\nforward passes ({probe.batch_size} rows per batch): hooks on the model as it is {forward:.1f} s "
          f"(timed in the scikit-learn run); in channels-last order, as phasescope runs a conv net on a CPU, "
          f"{forward_cl:.1f} s. Beyond them, per checkpoint: phasescope (input span, decoders + probes + intervals) "
          f"{beyond:.1f} s, scikit-learn Ridge (decoders only) {decode:.1f} s: {decode / max(beyond, 1e-9):.1f}x; "
          f"whole checkpoint {sk_t:.1f} s against {base_t:.1f} s: {sk_t / base_t:.1f}x")
    print("\npeak rise of the resident set per segment (over the start of the method; the inputs the caller holds "
          "are not in it):")
    for name, seg in segments.items():
        print(f"  {name}: " + ", ".join(f"{k} {v / 2**30:.2f} GiB" for k, v in seg.items()))


def _lambdas(probe, model, fit) -> dict[str, float]:
    """phasescope's absolute ridge per layer (0.1 x the mean feature variance) on the fit set."""
    frozen = model.eval()
    with torch.no_grad():
        _, H = probe.features(frozen, fit[0])
    out = {}
    for n in LAYERS:
        Hc = H[n].double() - H[n].double().mean(0)
        out[n] = 0.1 * float((Hc * Hc).sum()) / Hc.shape[1]
    return out


if __name__ == "__main__":
    main()
