import json
import os
import shutil

import pytest
from typer.testing import CliRunner

from phasescope.interfaces.cli import app

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
    assert before != 2  # conftest runs the suite with one thread: 2 is not what was there already
    try:
        res = runner.invoke(app, ["run", *TINY, "--iterations", "2", "--no-samples", "--threads", "2",
                                  "--out", str(tmp_path / "t")])
        assert res.exit_code == 0, res.output
        assert torch.get_num_threads() == 2
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


def test_seed_lists_are_checked(tmp_path):
    for bad, why in (("3-1", "runs backwards"), ("0,0", "repeats a seed"), ("a", "comma-separated"),
                     ("1-", "comma-separated"), ("-1", "comma-separated")):
        res = runner.invoke(app, ["run", *TINY, "--seeds", bad, "--out", str(tmp_path / "s")])
        assert res.exit_code == 2 and why in res.output, (bad, res.output)
    assert not (tmp_path / "s").exists()


def test_small_cli_promises(tmp_path):
    res = runner.invoke(app, ["layers", "--dataset", "nope"])
    assert res.exit_code == 2 and "Unknown dataset 'nope'" in res.output and "mnist-digits" in res.output
    res = runner.invoke(app, ["layers", "--model", "mlp", "--dataset", "synthetic"])  # shape from the loaded data
    assert res.exit_code == 0 and "(100,)" in res.output
    res = runner.invoke(app, ["run", *TINY, "--fit-samples", "3", "--out", str(tmp_path / "f")])
    assert res.exit_code == 2 and "--fit-samples 3" in res.output and "train_size" not in res.output
    res = runner.invoke(app, ["run", *TINY, "--test-samples", "3", "--out", str(tmp_path / "f")])
    assert res.exit_code == 2 and "--test-samples 3" in res.output
    assert not (tmp_path / "f").exists()  # no empty folder after a configuration error


def test_out_must_be_a_writable_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    for out, why in ((tmp_path / "file", "is a file, not a folder"), (tmp_path / "file" / "run", "is a file")):
        res = runner.invoke(app, ["run", *TINY, "--out", str(out)])
        assert res.exit_code == 2 and why in res.output and "Traceback" not in res.output, res.output
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o500)
        res = runner.invoke(app, ["run", *TINY, "--out", str(locked / "run")])
        assert res.exit_code == 2 and "not writable" in res.output
        assert not (locked / "run").exists()


def test_clamped_sizes_resume_and_interrupt_wording(tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, ["run", *TINY, "--iterations", "4", "--batch-size", "4000", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "--batch-size 4000 is more than the 1437 training samples; using 1437" in " ".join(res.output.split())
    assert json.loads((out / "config.json").read_text())["config"]["batch_size"] == 1437
    res = runner.invoke(app, ["run", "--out", str(out), "--resume", "--lr", "0.3", "--model", "mlp", "--quiet"])
    assert res.exit_code == 2
    assert "--lr: saved 0.05, given 0.3" in res.output and "--model: saved 'cnn', given 'mlp'" in res.output
    res = runner.invoke(app, ["run", "--out", str(out), "--resume", "--batch-size", "4000", "--quiet"])
    assert res.exit_code == 0, res.output
    from phasescope.interfaces.cli import accuracy_line

    payload = {"final_accuracy": {"train": 0.5, "test": 0.25}, "checkpoints": [0, 1, 2, 4]}
    assert accuracy_line(payload, "interrupted") == "accuracy at iteration 4 (run interrupted): train 0.500, test 0.250"
    assert accuracy_line(payload, "stopped").startswith("accuracy at iteration 4 (run stopped)")
    assert accuracy_line(payload, "complete").startswith("final accuracy")


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    res = runner.invoke(app, ["run", *TINY, "--iterations", "8", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


@pytest.mark.parametrize("name,damage", [
    ("metrics.csv", lambda b: b""), ("metrics.csv", lambda b: bytes(range(256)) * 4),
    ("metrics.csv", lambda b: b[:-5]), ("metrics.csv", lambda b: b"".join(b.splitlines(keepends=True)[:-2])),
    ("phases.json", lambda b: b[: len(b) // 2]), ("config.json", lambda b: b[:10]),
    ("errors.npz", lambda b: b[: len(b) // 2]), ("samples.parquet", lambda b: b[:100]),
])
def test_report_and_compare_name_a_corrupt_file(cli_run, tmp_path, name, damage):
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    (run / name).write_bytes(damage((run / name).read_bytes()))
    commands = [["report", str(run)]]
    if name in ("metrics.csv", "phases.json", "config.json"):  # what compare reads
        commands.append(["compare", str(run), "--out", str(tmp_path / "cmp")])
    for command in commands:
        res = runner.invoke(app, command)
        assert res.exit_code == 2, (command, res.output)
        assert name in res.output and "Traceback" not in res.output, res.output


def test_compare_lists_the_metrics_it_can_draw(cli_run, tmp_path):
    res = runner.invoke(app, ["compare", str(cli_run), "--metric", "nonsense", "--out", str(tmp_path / "c")])
    assert res.exit_code == 2 and "reconstruction_mse" in res.output and "probe_accuracy" in res.output
    assert not (tmp_path / "c").exists()


def test_run_options_are_generated_from_the_config_fields(tmp_path):
    """Every command-line RunConfig field is an option of `run`, with the field's help text and default."""
    import dataclasses

    from phasescope.interfaces.cli import CLI_NAMES, config_parameters
    from phasescope.config import RunConfig

    cli_fields = [f for f in dataclasses.fields(RunConfig) if f.metadata.get("cli", True)]
    params = {p.name: p for p in config_parameters()}
    assert list(params) == [f.name for f in cli_fields]
    for f in cli_fields:
        flag = "--" + CLI_NAMES.get(f.name, f.name).replace("_", "-")
        option = params[f.name].default
        assert option.param_decls == (flag,) and f.metadata["help"].split("[")[0] in option.help
    assert "[4096]" in params["iterations"].default.help and "[0]" in params["seed"].default.help
    # a field the hand-written options never had works like any other
    out = tmp_path / "mbs"
    res = runner.invoke(app, ["run", *TINY, "--measure-batch-size", "64", "--confidence", "0.9", "--no-samples",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["measure_batch_size"] == 64 and saved["confidence"] == 0.9
