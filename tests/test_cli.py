import json

from typer.testing import CliRunner

from phasescope.cli import app

runner = CliRunner()
TINY = ["--dataset", "digits", "--width", "0.5", "--iterations", "16", "--batch-size", "32", "--lr", "0.05",
        "--fit-samples", "400", "--test-samples", "200", "--bootstrap", "100", "--quiet"]


def test_run_prints_summary_and_writes_folder(tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, ["run", *TINY, "--out", str(out), "--layers", "features.2,features.3"])
    assert res.exit_code == 0, res.output
    assert "features.3" in res.output and "final accuracy" in res.output
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert cfg["layers"] == ["features.2", "features.3"] and cfg["dataset"] == "digits"


def test_bad_inputs_give_clear_errors(tmp_path):
    res = runner.invoke(app, ["run", *TINY, "--out", str(tmp_path / "a"), "--layers", "nope"])
    assert res.exit_code == 2 and "features.3" in res.output
    res = runner.invoke(app, ["run", "--model", "resnet9000", "--out", str(tmp_path / "b")])
    assert res.exit_code == 2 and "Choose one of" in res.output
    res = runner.invoke(app, ["run", "--dataset", "imagenet", "--out", str(tmp_path / "c")])
    assert res.exit_code == 2 and "mnist-digits" in res.output


def test_divergence_exit_code(tmp_path):
    res = runner.invoke(app, ["run", *TINY, "--lr", "1e6", "--momentum", "0", "--iterations", "200",
                              "--out", str(tmp_path / "d")])
    assert res.exit_code == 3 and "diverged" in res.output
    assert (tmp_path / "d" / "metrics.csv").exists()


def test_layers_lists_names_and_shapes():
    res = runner.invoke(app, ["layers", "--model", "vgg8", "--dataset", "cifar10"])
    assert res.exit_code == 0
    assert "features.4" in res.output and "512x1x1" in res.output


def test_report_rebuilds_from_files(tmp_path):
    out = tmp_path / "run"
    assert runner.invoke(app, ["run", *TINY, "--out", str(out)]).exit_code == 0
    before = json.loads((out / "phases.json").read_text())["layers"]
    (out / "phases.json").unlink()
    (out / "curves.png").unlink()
    res = runner.invoke(app, ["report", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "phases.json").read_text())["layers"] == before
    assert (out / "curves.png").stat().st_size > 10_000


def test_synthetic_dataset_knobs_reach_the_data_model(tmp_path):
    out = tmp_path / "syn"
    res = runner.invoke(app, ["run", "--dataset", "synthetic", "--synthetic", "atypical_fraction=0.2,dim=40",
                              "--model", "mlp", "--iterations", "8", "--bootstrap", "50", "--quiet", "--out", str(out)])
    assert res.exit_code == 0, res.output
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["synthetic"]["knobs"] == {"atypical_fraction": 0.2, "dim": 40}
    assert cfg["data"]["input_shape"] == [40]
    res = runner.invoke(app, ["run", "--dataset", "digits", "--synthetic", "dim", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "KEY=VALUE" in res.output


def test_theory_is_mounted():
    res = runner.invoke(app, ["theory", "--help"])
    assert res.exit_code == 0 and "--atypical-fraction" in res.output


def test_threads_option(tmp_path):
    import torch

    before = torch.get_num_threads()
    try:
        res = runner.invoke(app, ["run", *TINY, "--threads", "1", "--out", str(tmp_path / "t")])
        assert res.exit_code == 0, res.output
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_ridge_auto_records_the_chosen_lambda_per_checkpoint(tmp_path):
    import pandas as pd

    out = tmp_path / "auto"
    res = runner.invoke(app, ["run", *TINY, "--ridge", "auto", "--no-samples", "--out", str(out)])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out / "metrics.csv")
    lam = df[df.metric == "decoder_lambda"]
    dof = df[df.metric == "decoder_dof"]
    assert sorted(lam.iteration) == [0, 1, 2, 4, 8, 16] and (lam.value > 0).all()
    assert (dof.value > 0).all()
    assert json.loads((out / "config.json").read_text())["config"]["relative_ridge"] == "auto"
    bad = runner.invoke(app, ["run", *TINY, "--ridge", "lots", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "auto" in bad.output
