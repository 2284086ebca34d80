"""Typed measurement settings: MeasureSettings for the tracker, PhaseSettings for detect_phases."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from phasescope import PhaseTracker, RunConfig, detect_phases
from phasescope.config import ConfigError
from phasescope.engine.phases import PhaseSettings
from phasescope.engine.settings import MeasureSettings


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))


def _data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, generator=g), torch.arange(n) % 3


def test_settings_and_keywords_build_the_same_tracker():
    kw = dict(decoder="linear", probe="ridge", relative_ridge=0.5, max_features=64, batch_size=16, bootstrap=50,
              confidence=0.9, min_effect=0.05, seed=3)
    a = PhaseTracker(_model(), ["2"], _data(), _data(seed=1), [0, 1, 2], **kw)
    b = PhaseTracker(_model(), ["2"], _data(), _data(seed=1), [0, 1, 2], settings=MeasureSettings(**kw))
    assert a.settings == b.settings == MeasureSettings(**kw)
    assert a.describe() == b.describe()
    assert (a.bootstrap, a.confidence, a.min_effect, a.seed, a.batch_size) == (50, 0.9, 0.05, 3, 16)
    c = PhaseTracker(_model(), ["2"], _data(), _data(seed=1), [0, 1, 2], settings=MeasureSettings(**kw), bootstrap=80)
    assert c.bootstrap == 80 and c.settings.confidence == 0.9  # a keyword changes the given settings


def test_settings_are_checked_by_the_one_validator():
    with pytest.raises(ConfigError, match="decoder='mlp' is not valid"):
        MeasureSettings(decoder="mlp")
    with pytest.raises(ConfigError, match="confidence must be in"):
        PhaseTracker(_model(), ["2"], _data(), _data(seed=1), [0, 1], confidence=1.5)
    with pytest.raises(ConfigError, match="relative_ridge must be a number >= 0"):
        MeasureSettings(relative_ridge=-1.0)
    with pytest.raises(TypeError, match="did you mean 'bootstrap'"):
        PhaseTracker(_model(), ["2"], _data(), _data(seed=1), [0, 1], bootstap=10)


def test_from_config_maps_every_field_of_a_run():
    cfg = RunConfig(decoder="conv", conv_epochs=3, conv_channels=4, measure_batch_size=77, bootstrap=20, seed=5,
                    relative_ridge=[0.1, 1.0])
    s = MeasureSettings.from_config(cfg)
    assert s.batch_size == 77 and s.decoder_options == {"epochs": 3, "channels": 4} and s.relative_ridge == [0.1, 1.0]
    for f in dataclasses.fields(MeasureSettings):
        key = f.metadata.get("key", f.name)
        if key is not None:
            assert getattr(s, f.name) == getattr(cfg, key), f.name
    assert MeasureSettings.from_config(RunConfig()).decoder_options is None
    assert s.phases() == PhaseSettings(confidence=cfg.confidence, bootstrap=20, min_effect=cfg.min_effect, seed=5)


def test_detect_phases_takes_one_settings_value():
    rng = np.random.default_rng(0)
    E = np.stack([1.0 + 0.5 * rng.random(30), 0.5 + 0.1 * rng.random(30), 0.6 + 0.1 * rng.random(30)])
    s = PhaseSettings(confidence=0.9, bootstrap=200, min_effect=0.01, seed=2)
    a = detect_phases([0, 1, 2], E, settings=s)
    b = detect_phases([0, 1, 2], E, confidence=0.9, n_boot=200, min_effect=0.01, seed=2)
    assert a.to_dict() == b.to_dict()
    assert detect_phases([0, 1, 2], E, settings=s, seed=7).settings["seed"] == 7  # a loose value replaces it
    assert PhaseSettings.from_config({"confidence": 0.8}) == PhaseSettings(confidence=0.8)
    with pytest.raises(ConfigError, match="bootstrap must be positive"):
        PhaseSettings(bootstrap=0)


def test_token_settings_are_settings_too():
    s = MeasureSettings.from_config(RunConfig(token_window=2), target="tokens", vocab_size=65)
    assert (s.target, s.vocab_size, s.token_window) == ("tokens", 65, 2)
    assert MeasureSettings.from_config(RunConfig()).target == "input"
    with pytest.raises(ConfigError, match="target='words' is not valid"):
        MeasureSettings(target="words")
    with pytest.raises(ConfigError, match="token_window must be positive"):
        MeasureSettings(token_window=0)
    with pytest.raises(ConfigError, match="vocab_size must be positive"):
        MeasureSettings(vocab_size=0)
