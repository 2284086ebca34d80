"""phasescope inside your own training loop (the README's library example, runnable).

    python examples/own_loop.py        # ~1 min on CPU: small CNN on scikit-learn's 8x8 digits
"""
import torch
import torch.nn.functional as F

from phasescope import PhaseTracker, log_schedule
from phasescope.data import load_dataset
from phasescope.run.models import build_model

torch.manual_seed(0)
data = load_dataset("digits")                       # any (x, y) tensors work; here: normalised 8x8 digits
model = build_model("cnn", data.input_shape, data.num_classes, width=0.5)
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

iterations = 1024
tracker = PhaseTracker(
    model, layers=["features.2", "features.3"],
    fit_data=(data.x_train, data.y_train), test_data=(data.x_test, data.y_test),
    schedule=log_schedule(iterations),
)
g = torch.Generator().manual_seed(0)
for it in range(iterations + 1):
    tracker.maybe_measure(model, it)                # measures at 0, 1, 2, 4, ..., 1024; never touches training
    if it == iterations:
        break
    idx = torch.randint(len(data.x_train), (64,), generator=g)
    loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
    opt.zero_grad()
    loss.backward()
    opt.step()

df = tracker.results()
print(df.query("metric == 'reconstruction_mse' and split == 'test'")
        .pivot(index="iteration", columns="layer", values="value").round(4))
for layer, result in tracker.phases().items():
    print(layer, [(p.name, p.start, p.end) for p in result.phases],
          f"min at {result.min_iteration}, decrease {result.relative_decrease.value:.1%}, "
          f"increase {result.relative_increase.value:.1%}")
