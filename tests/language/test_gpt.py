"""The zoo's GPT, its training (next-token loss at every position, AdamW, warm-up) and its defaults."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from phasescope import RunConfig
from phasescope.errors import ModelError
from phasescope.run.gpt import GPT
from phasescope.run.models import build_model, default_layers, trackable_layers
from phasescope.run.presets import preset_config
from phasescope.run.training import BatchStream, loss_of, make_optimizer, train, warm_up


def small(context: int = 16, vocab: int = 11) -> GPT:
    torch.manual_seed(0)
    return build_model("gpt", (context,), vocab, width=0.25)


def test_training_mode_gives_every_position_and_eval_the_last():
    m = small()
    x = torch.randint(0, 11, (3, 16))
    assert m.train()(x).shape == (3, 16, 11)
    last = m.eval()(x)
    assert last.shape == (3, 11)
    assert torch.allclose(last, m(x, all_positions=True)[:, -1], atol=1e-6)
    # causal: the last position's logits do not see a change after it... and earlier ones do not see later tokens
    y = x.clone()
    y[:, -1] = (y[:, -1] + 1) % 11
    assert torch.allclose(m(x, all_positions=True)[:, :-1], m(y, all_positions=True)[:, :-1], atol=1e-6)


def test_the_gpt_has_four_blocks_of_128_and_tracks_them_all():
    m = build_model("gpt", (64,), 65)
    assert isinstance(m, GPT) and len(m.blocks) == 4 and m.ln_f.normalized_shape == (128,) and m.context == 64
    assert default_layers(m, (64,)) == ["blocks.0", "blocks.1", "blocks.2", "blocks.3"]
    rows = trackable_layers(small(), (16,))
    assert [r["name"] for r in rows] == ["embed", "blocks.0", "blocks.1", "blocks.2", "blocks.3", "ln_f"]
    assert rows[1]["shape"] == [16, 32]


def test_the_gpt_refuses_images_and_float_inputs():
    with pytest.raises(ModelError, match="token inputs"):
        build_model("gpt", (1, 28, 28), 10)
    with pytest.raises(ModelError, match="token ids"):
        small()(torch.zeros(2, 16))


def test_the_loss_is_the_next_token_at_every_position():
    x, y = torch.randint(0, 11, (4, 6)), torch.randint(0, 11, (4,))
    logits = torch.randn(4, 6, 11)
    targets = torch.cat([x[:, 1:], y[:, None]], 1)
    assert torch.allclose(loss_of(logits, x, y), F.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1)))
    flat = torch.randn(4, 11)  # a classifier's logits: the labels, as always
    assert torch.equal(loss_of(flat, torch.randn(4, 3, 8, 8), y), F.cross_entropy(flat, y))


def test_adamw_decays_matrices_only_and_warms_up_linearly():
    m = small()
    opt = make_optimizer(RunConfig(model="gpt", optimizer="adamw", lr=0.01, weight_decay=0.1), m.parameters())
    assert isinstance(opt, torch.optim.AdamW)
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and all(p.dim() >= 2 for p in decayed["params"])
    assert plain["weight_decay"] == 0.0 and all(p.dim() < 2 for p in plain["params"])
    warm_up(opt, 1, 4)
    assert [g["lr"] for g in opt.param_groups] == [0.0025, 0.0025]
    warm_up(opt, 4, 4)
    warm_up(opt, 9, 4)
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.01]
    assert opt.state_dict()["param_groups"][0]["initial_lr"] == 0.01  # a resumed run warms up from the same lr


def test_a_few_steps_lower_the_next_token_loss():
    m = small(context=8)
    text = torch.arange(400) % 11  # a cycle: perfectly predictable
    x, y = text[:-1].unfold(0, 8, 1), text[8:]
    opt = make_optimizer(RunConfig(model="gpt", optimizer="adamw", lr=3e-3), m.parameters())
    m.eval()
    before = F.cross_entropy(m(x), y)
    train(m, opt, BatchStream(x, y, 32, seed=0), 30, torch.device("cpu"), warmup=5)
    m.eval()
    assert F.cross_entropy(m(x), y) < before * 0.5


def test_phasescope_run_trains_the_gpt_with_adamw_and_warmup_unless_told_otherwise():
    cfg = preset_config(None, {"model": "gpt", "dataset": "shakespeare"})
    assert (cfg.optimizer, cfg.lr, cfg.warmup, cfg.weight_decay, cfg.batch_size) == ("adamw", 1e-3, 100, 0.1, 32)
    mine = preset_config(None, {"model": "gpt", "dataset": "shakespeare", "optimizer": "sgd", "lr": 0.5})
    assert (mine.optimizer, mine.lr, mine.warmup) == ("sgd", 0.5, 100)
    assert preset_config(None, {}).optimizer == "sgd"  # image models: as before
    assert preset_config("shakespeare-gpt", {}).optimizer == "adamw"
