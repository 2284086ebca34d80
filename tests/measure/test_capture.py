import torch
from torch import nn

from phasescope.engine.measure.capture import flatten_features, frozen_copy, pool_grid, prepare, recalibrate_bn
from phasescope.run.models import build_model


def test_recalibrated_statistics_are_the_exact_data_statistics():
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(4)
    model = nn.Sequential(nn.Identity(), bn)
    x = torch.randn(1000, 4) * 3 + 2
    recalibrate_bn(model, x, batch_size=100, device=torch.device("cpu"))
    torch.testing.assert_close(bn.running_mean, x.mean(0), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(bn.running_var, x.var(0), rtol=1e-2, atol=1e-3)  # per-batch unbiased var averaged
    assert not model.training


def test_prepare_never_touches_the_training_model():
    torch.manual_seed(0)
    model = build_model("cnn", (1, 8, 8), 10, width=0.5)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for mode in ("recalibrate", "running", "batch"):
        prepare(model, mode, torch.randn(64, 1, 8, 8), 32, torch.device("cpu"))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training
    frozen = frozen_copy(model)
    assert not any(p.requires_grad for p in frozen.parameters())


def test_pooling_keeps_features_under_the_cap():
    assert pool_grid((64, 2, 2), 4096) is None
    g = pool_grid((16, 14, 14), 1024)
    assert g == 8 and 16 * g * g <= 1024
    assert pool_grid((8192, 4, 4), 4096) == 1
    assert flatten_features(torch.randn(3, 16, 14, 14), 8).shape == (3, 16 * 64)
