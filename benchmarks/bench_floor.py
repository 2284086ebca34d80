"""One checkpoint against the floor of exact measurement, and against hooks + scikit-learn.

    python benchmarks/bench_floor.py [--rounds 7] [--data PATH] [--fit 4000] [--test 2000]

Setting: VGG-8 at half width (the ``cifar10-vgg8`` preset's model, freshly initialised, seed 0),
layer ``features.4`` (256 features), the CIFAR-10 subset at ../shared/data/cifar10_subset.npz
(or ``--data``; the benchmark says so and stops when it is not there), 4,000 fit / 2,000 test
samples, one thread (torch's and the BLAS of numpy: set before anything is imported).

**The floor** of an exact measurement is what any exact method must pay: one eval forward pass
over the fit + test samples (timed, hooks on) plus the decoder's products H^T X (fit) and the
test predictions H W, 2 (n_fit + n_test) p D flops, at the float32 matrix-product rate measured on
the same shapes in the same round (H^T H and the p x p solve are small at p = 256).

Each round (the weights nudged between rounds, the same for every method) times, in an order
that rotates from round to round so that a drift of the machine's speed hits all alike: the
forward pass, the products, a phasescope checkpoint with BatchNorm recalibrated (the default),
one with the BatchNorm statistics the model has, and forward hooks + scikit-learn ``Ridge``
(decoder) and ``RidgeClassifier`` (probe) at phasescope's absolute ridge on the same features,
with per-sample test errors, on the features as hooks give them (float32: scikit-learn then
solves in float32) and converted to float64 (what ``np.asarray(..., float)`` pipelines do). Medians over rounds of each time and of each per-round ratio are
printed, in wall and CPU seconds (one thread: CPU time is what an idle core would take; on a
shared machine wall time also holds other jobs' time), with the load average.

Then one more checkpoint of each phasescope setting is taken apart (CPU seconds per part, the
functions wrapped with timers): model copy, BatchNorm pass, forward, products (fit statistics
and test predictions), solve (decoder and probe: one Gram matrix), probe scores, bootstrap
intervals, other; and phase detection over the checkpoints measured, which a run does once.
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one thread, numpy's BLAS too
    os.environ[_v] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

SUBSET = Path("shared") / "data" / "cifar10_subset.npz"  # beside the project's folder, or one above it
CIFAR = next((p / SUBSET for p in Path(__file__).resolve().parents[1:] if (p / SUBSET).exists()),
             Path(__file__).resolve().parents[2] / SUBSET)
LAYER = "features.4"


class Clock:
    """Wall and CPU seconds of a block."""

    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w, time.process_time() - self.c


def load(args):
    from phasescope.data import load_dataset
    from phasescope.run.models import build_model

    path = Path(args.data) if args.data else CIFAR
    if not path.exists():
        print(f"skipped: the CIFAR-10 subset is not at {path} (give --data PATH, an .npz with x_train, y_train, "
              "x_test, y_test)")
        sys.exit(0)
    data = load_dataset("npz", data_dir=str(path))
    fit = (data.x_train[: args.fit].contiguous(), data.y_train[: args.fit])
    test = (data.x_test[: args.test].contiguous(), data.y_test[: args.test])
    torch.manual_seed(0)
    model = build_model("vgg8", data.input_shape, data.num_classes, width=0.5)
    return path, model, fit, test


def nudge(model, k: int) -> None:
    with torch.no_grad():  # other weights at the next checkpoint (the same for every method)
        for p in model.parameters():
            p.mul_(1.0 + 0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(k)))


def forward_pass(model, x: torch.Tensor) -> None:
    """One eval forward pass over ``x`` with the layer hooked (what every method pays)."""
    from phasescope.engine.measure.capture import iter_batches, prepare

    frozen = prepare(model, "running", None, 500, torch.device("cpu"))
    for _ in iter_batches(frozen, [LAYER], x, 500, torch.device("cpu")):
        pass


def products(H: torch.Tensor, X: torch.Tensor, Ht: torch.Tensor, W: torch.Tensor) -> None:
    """The floor's products in float32, batch by batch as the fit pass forms them: H^T X, then H_t W."""
    for i in range(0, len(H), 500):
        H[i:i + 500].T @ X[i:i + 500]
    Ht @ W


def sklearn_checkpoint(model, fit, test, ridge: float, dtype=np.float32) -> tuple[np.ndarray, float, float]:
    """Forward hooks on the layer, then scikit-learn Ridge (decoder) and RidgeClassifier (probe) at the
    absolute lambda phasescope uses (relative ridge x the mean eigenvalue of the centred Gram matrix),
    on the features and inputs as ``dtype`` (float32: as hooks give them; scikit-learn then works in
    float32). Returns per-sample test errors, test probe accuracy, and the lambda."""
    from sklearn.linear_model import Ridge, RidgeClassifier

    from phasescope.engine.measure.capture import prepare

    frozen = prepare(model, "running", None, 500, torch.device("cpu"))
    layer = dict(frozen.named_modules())[LAYER]
    store = []
    handle = layer.register_forward_hook(lambda _m, _i, out: store.append(out.reshape(len(out), -1)))

    def features(x):
        store.clear()
        with torch.no_grad():
            for i in range(0, len(x), 500):
                frozen(x[i:i + 500])
        return torch.cat(store).numpy().astype(dtype, copy=False)

    H, Ht = features(fit[0]), features(test[0])
    handle.remove()
    X = fit[0].reshape(len(H), -1).numpy().astype(dtype, copy=False)
    Xt = test[0].reshape(len(Ht), -1).numpy().astype(dtype, copy=False)
    Hc = H - H.mean(0)
    lam = ridge * float(np.einsum("ij,ij->", Hc, Hc, dtype=np.float64)) / H.shape[1]
    dec = Ridge(alpha=lam).fit(H, X)
    err = ((dec.predict(Ht) - Xt) ** 2).mean(1)
    probe = RidgeClassifier(alpha=lam).fit(H, fit[1].numpy())
    acc = float((probe.predict(Ht) == test[1].numpy()).mean())
    return err, acc, lam


# ---------------------------------------------------------------------- a checkpoint taken apart
PARTS = ["model copy", "BatchNorm pass", "forward", "products", "solve", "probe scores", "bootstrap intervals"]


@contextmanager
def anatomy():
    """Wraps the functions a checkpoint spends its time in; yields {part: CPU seconds} (exclusive:
    a part's time does not include the parts it calls; a forward inside the BatchNorm pass is that pass)."""
    import phasescope.engine.measure.capture as capture
    import phasescope.engine.stats as stats
    from phasescope.engine.measure.probe import LinearProbe
    from phasescope.engine.measure.ridge import StreamingRidge

    spent = dict.fromkeys(PARTS, 0.0)
    stack: list[list] = []  # [part, start, time spent in nested parts]

    def timed(part, fn):
        def wrapper(*a, **k):
            name = "BatchNorm pass" if part == "forward" and stack and stack[-1][0] == "BatchNorm pass" else part
            stack.append([name, time.process_time(), 0.0])
            try:
                return fn(*a, **k)
            finally:
                name, t0, inner = stack.pop()
                dt = time.process_time() - t0
                spent[name] += dt - inner
                if stack:
                    stack[-1][2] += dt
        return wrapper

    patches = [(capture, "frozen_copy", "model copy"), (capture, "recalibrate_bn", "BatchNorm pass"),
               (capture, "call_model", "forward"), (StreamingRidge, "_accumulate", "products"),
               (StreamingRidge, "per_sample_mse", "products"), (StreamingRidge, "solve", "solve"),
               (LinearProbe, "per_sample", "probe scores"), (stats.Bootstrap, "estimate_all", "bootstrap intervals"),
               (stats.Bootstrap, "estimate", "bootstrap intervals")]
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches if hasattr(obj, name)]
    for obj, name, part in patches:
        if hasattr(obj, name):
            setattr(obj, name, timed(part, getattr(obj, name)))
    try:
        yield spent
    finally:
        for obj, name, fn in saved:
            setattr(obj, name, fn)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--fit", type=int, default=4000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--data", default=None, help="an .npz like ../shared/data/cifar10_subset.npz")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from phasescope import PhaseTracker
    from phasescope.defaults import RELATIVE_RIDGE
    from phasescope.engine.measure.capture import flatten_features, iter_batches, prepare

    path, model, fit, test = load(args)
    n_fit, n_test = len(fit[0]), len(test[0])
    D = fit[0][0].numel()
    trackers = {bn: PhaseTracker(model, [LAYER], fit, test, list(range(10_000)), bn_mode=bn)
                for bn in ("recalibrate", "running")}
    p = trackers["running"]._feature_dim(LAYER)
    flops = 2.0 * (n_fit + n_test) * p * D
    print(f"vgg8 (width 0.5, freshly initialised) on {path.name}: {n_fit} fit / {n_test} test samples, layer "
          f"{LAYER} ({p} features), D = {D}, one thread; floor products {flops / 1e9:.2f} GFLOP")

    # features for the products' timing (the shapes and values of the real ones)
    frozen = prepare(model, "running", None, 500, torch.device("cpu"))
    H = torch.cat([flatten_features(o[LAYER], None) for _, _, o in iter_batches(frozen, [LAYER], fit[0], 500,
                                                                                   torch.device("cpu"))])
    Ht = H[:n_test].clone()
    X = fit[0].reshape(n_fit, -1)
    W = torch.randn(p, D)
    both = torch.cat([fit[0], test[0]])

    it = 0
    for tr in trackers.values():  # warm-up: the first checkpoint draws the bootstrap weights
        tr.measure(model, it)
    forward_pass(model, both)
    sklearn_checkpoint(model, fit, test, RELATIVE_RIDGE)
    it += 1

    runs = {k: [] for k in ("forward", "products", "recalibrate", "running", "sklearn", "sklearn64")}
    same = []
    for r in range(args.rounds):
        nudge(model, r)
        jobs = {
            "forward": lambda: forward_pass(model, both),
            "products": lambda: products(H, X, Ht, W),
            "recalibrate": lambda: trackers["recalibrate"].measure(model, it),
            "running": lambda: trackers["running"].measure(model, it),
            "sklearn": lambda: sklearn_checkpoint(model, fit, test, RELATIVE_RIDGE),
            "sklearn64": lambda: sklearn_checkpoint(model, fit, test, RELATIVE_RIDGE, np.float64),
        }
        order = list(jobs)
        order = order[r % len(order):] + order[: r % len(order)]  # rotate: drift hits every method alike
        out = {}
        for k in order:
            with Clock() as c:
                out[k] = jobs[k]()
            runs[k].append((c.wall, c.cpu))
        err_sk, acc_sk, _ = out["sklearn"]
        err_64, acc_64, _ = out["sklearn64"]
        tr = trackers["running"]
        err_ps = tr.errors[LAYER][it]
        acc_ps = tr.results().query(f"iteration == {it} and layer == '{LAYER}' and split == 'test' and "
                                    "metric == 'probe_accuracy'").value.item()
        same.append((float(err_ps.mean()), float(err_sk.mean()), float(np.abs(err_ps - err_64).max() /
                     np.abs(err_64).max()), acc_ps, acc_sk, float(err_64.mean()), acc_64))
        it += 1

    def med(k, i):
        return statistics.median(v[i] for v in runs[k])

    def ratio(a, b, i):  # median over rounds of a per-round ratio
        return statistics.median(x[i] / y[i] for x, y in zip(runs[a], runs[b]))

    def floor(r, i):
        fwd, prod = runs["forward"][r][i], runs["products"][r][i]
        return fwd + prod  # the products timed on the real shapes: flops / the measured rate

    floors = [[floor(r, i) for i in (0, 1)] for r in range(args.rounds)]
    rate = statistics.median(flops / v[1] for v in runs["products"]) / 1e9
    print(f"\nmedian of {args.rounds} rounds (wall / CPU seconds; 'floor units': the round's time over its floor)")
    print(f"  eval forward pass, {n_fit + n_test} samples: {med('forward', 0):.3f} / {med('forward', 1):.3f} s")
    print(f"  floor products at the measured float32 rate ({rate:.0f} GFLOP/s CPU): {med('products', 0):.3f} / "
          f"{med('products', 1):.3f} s")
    print(f"  floor: {statistics.median(f[0] for f in floors):.3f} / {statistics.median(f[1] for f in floors):.3f} s")
    print(f"{'':<40}{'wall s':>9}{'CPU s':>9}{'floor units':>22}{'forward units':>16}")
    for k, label in (("running", "phasescope, BatchNorm as the model has"), ("recalibrate", "phasescope, BatchNorm recalibrated"),
                     ("sklearn", "hooks + scikit-learn, float32 features"),
                     ("sklearn64", "hooks + scikit-learn, float64 features")):
        fu = [statistics.median(runs[k][r][i] / floors[r][i] for r in range(args.rounds)) for i in (0, 1)]
        print(f"{label:<40}{med(k, 0):>9.3f}{med(k, 1):>9.3f}{fu[0]:>11.2f} / {fu[1]:>4.2f}"
              f"{ratio(k, 'forward', 0):>8.2f} / {ratio(k, 'forward', 1):>4.2f}")
    for k, what in (("sklearn", "float32"), ("sklearn64", "float64")):
        print(f"hooks + scikit-learn ({what}) / phasescope (BatchNorm as the model has): "
              f"{ratio(k, 'running', 0):.2f}x wall, {ratio(k, 'running', 1):.2f}x CPU")
    bn = [ratio("recalibrate", "forward", i) - ratio("running", "forward", i) for i in (0, 1)]
    print(f"BatchNorm recalibration adds {bn[0]:.2f} / {bn[1]:.2f} forward-pass units (wall / CPU)")
    m_ps, m_sk, dmax, a_ps, a_sk, m_64, a_64 = same[-1]
    print(f"same features, last round: test MSE phasescope {m_ps:.6f}, scikit-learn {m_sk:.6f} (float32) / {m_64:.6f} "
          f"(float64; per-sample errors differ from phasescope's by <= {max(s[2] for s in same):.1e} relative in every "
          f"round); probe test accuracy {a_ps:.4f} vs {a_sk:.4f} / {a_64:.4f}"
          + ("" if all(s[3] == s[4] == s[6] for s in same) else "  (ACCURACY DIFFERS in some round)"))

    print("\none checkpoint taken apart (CPU seconds; share of the checkpoint; in floor units):")
    fl = statistics.median(f[1] for f in floors)
    for bn_mode in ("running", "recalibrate"):
        nudge(model, 1000 + it)
        with anatomy() as spent, Clock() as c:
            trackers[bn_mode].measure(model, it)
        spent["other"] = c.cpu - sum(spent.values())
        print(f"  bn_mode={bn_mode}: {c.cpu:.3f} s = {c.cpu / fl:.2f} floor units")
        for part, s in spent.items():
            print(f"    {part:<22}{s:>7.3f} s{100 * s / c.cpu:>6.1f}%{s / fl:>7.2f}")
        it += 1
    with Clock() as c:
        trackers["running"].phases()
    print(f"  phase detection over {len(trackers['running'].timings)} checkpoints (once per run): {c.cpu:.3f} s CPU")
    print(f"\nload average now: {', '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
