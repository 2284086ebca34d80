"""RunConfig: typed sections, strict keys, no mutation, old config.json files still load."""
import warnings

import pytest

from phasescope.config import ConfigError, RunConfig, SamplesOptions, TransferOptions


def test_sections_reject_misspelt_keys_listing_the_valid_ones():
    with pytest.raises(ConfigError, match="Unknown transfer option.*keep_best"):
        RunConfig.from_dict({"transfer": {"keep_bets": True}})
    with pytest.raises(ConfigError, match="Unknown configuration key"):
        RunConfig.from_dict({"samlpes": {}})


def test_from_dict_and_validate_change_nothing_they_are_given():
    given = {"layers": ["features.3"], "samples": {"max_samples": 10}, "transfer": {"tasks": ["colour"]}}
    snapshot = {k: (dict(v) if isinstance(v, dict) else list(v)) for k, v in given.items()}
    cfg = RunConfig.from_dict(given)
    assert given == snapshot
    before = cfg.to_dict()
    cfg.validate()
    assert cfg.to_dict() == before
    assert cfg.samples == SamplesOptions(max_samples=10) and cfg.transfer == TransferOptions(tasks=["colour"])


def test_round_trip_through_a_dict():
    cfg = RunConfig(model="mlp", samples=SamplesOptions(enabled=False), transfer=TransferOptions(keep_best=True))
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


def test_config_json_of_earlier_versions_still_loads():
    old = {"ridge": 0.3, "extra": {"samples": {"enabled": False, "max_samples": None, "seed": 0},
                                   "transfer": ["colour"], "keep_best": True, "synthetic": {"dim": 40, "data_seed": 2}}}
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        cfg = RunConfig.from_dict(old)
    assert any("relative_ridge" in str(x.message) for x in w)
    assert cfg.relative_ridge == 0.3 and cfg.ridge == 0.3
    assert not cfg.samples.enabled and cfg.transfer.tasks == ["colour"] and cfg.transfer.keep_best
    assert cfg.synthetic.knobs == {"dim": 40} and cfg.synthetic.data_seed == 2


def test_a_layer_string_is_split_but_an_empty_list_is_an_error():
    assert RunConfig.from_dict({"layers": "features.2, features.3"}).layers == ["features.2", "features.3"]
    with pytest.raises(ConfigError, match="layers"):
        RunConfig(layers=[]).validate()


@pytest.mark.parametrize("key, value, message", [
    ("optimizer", "lbfgs", "choose one of: sgd, adam, adamw"),
    ("bn_samples", 0, "bn_samples must be positive"),
    ("num_classes", 1, "integer >= 2"),
    ("relative_ridge", -1.0, "relative_ridge must be a number >= 0"),
    ("relative_ridge", "gcv", "or .auto."),
])
def test_bad_values_name_the_parameter_and_the_fix(key, value, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict({key: value})
