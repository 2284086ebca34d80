"""phasescope sweep: sweep files, expansion and names, tables, failures, resume, atomic writes, CLI.
Runs use the local backend and seconds-long runs on scikit-learn's 8x8 digits."""
import json
import sys
import textwrap

import pandas as pd
import pytest
from typer.testing import CliRunner

from phasescope.interfaces.cli import app
from phasescope.interfaces.sweep import SweepError, load_spec, run_sweep, shipped
from phasescope.interfaces.sweep.tables import write_tables

runner = CliRunner()
TINY = textwrap.dedent("""\
    dataset = "digits"
    width = 0.5
    iterations = 16
    batch_size = 32
    lr = 0.05
    fit_samples = 400
    test_samples = 200
    bootstrap = 100
    samples = { enabled = false }
    reconstructions = { enabled = false }
    """)


def sweep_file(tmp_path, body, base=TINY, name="s.toml"):
    p = tmp_path / name
    p.write_text(base + textwrap.dedent(body))
    return p


def error_of(path, **kw):
    with pytest.raises(SweepError) as e:
        load_spec(path, **kw)
    return str(e.value)


# ---------------------------------------------------------------------- parsing and validation
@pytest.mark.parametrize("body, expected", [
    ("iteration = 8\n[grid]\nseed = [0, 1]\n", ["unknown key 'iteration'", "Did you mean 'iterations'"]),
    ("[grid]\n", ["[grid] is empty"]),
    ("[grid]\nseed = []\n", ["axis 'seed'", "empty list"]),
    ("[grid]\nseed = 3\n", ["axis 'seed'", "must be a list"]),
    ("[grid]\nlr = [0.01, \"fast\"]\n", ["lr", "must be a number", "'fast'"]),
    ("[grid]\nseed = [0, 1.5]\n", ["seed", "must be an integer", "1.5"]),
    ("[grid]\nmodle = [\"cnn\"]\n", ["unknown key 'modle'", "Did you mean 'model'"]),
    ("[grid]\nseed = [0, 0]\n", ["repeats a value"]),
    ("[[runs]]\nlr = 0.1\nbogus = 1\n", ["unknown key 'bogus'", "[[runs]] entry 1"]),
    ("[grid]\npreset = [\"nope\"]\n", ["preset 'nope'", "cifar10-vgg8"]),
    ("[grid]\niterations = [0, 8]\n", ["iterations must be positive", "run 'iterations0'"]),
    ("[grid]\nmodel = [\"resnet9000\"]\n", ["resnet9000", "vgg8"]),
    ("", ["defines no runs"]),
    ("[infoplane]\nbinz = 3\n[grid]\nseed = [0]\n", ["unknown key 'infoplane.binz'"]),
    ("[grid]\nseed = [0, 1]\n[[runs]]\nseed = 3\n", ["both a key", "grid axis"]),
    ("[[runs]]\nlr = 0.1\n[[runs]]\nlr = 0.1\n", ["same name"]),
    ("[grid\n", ["not valid TOML"]),
])
def test_bad_sweep_files_name_the_key_and_the_file(tmp_path, body, expected):
    path = sweep_file(tmp_path, body)
    message = error_of(path)
    assert str(path) in message
    for text in expected:
        assert text in message, message


def test_wrong_types_of_base_keys_and_set_overrides(tmp_path):
    msg = error_of(sweep_file(tmp_path, "[grid]\nseed = [0]\n", base='iterations = "many"\n'))
    assert "iterations" in msg and "must be an integer" in msg and "'many'" in msg
    msg = error_of(sweep_file(tmp_path, "[grid]\nseed = [0]\n"), overrides={"batch_sise": 8})
    assert "batch_sise" in msg and "command line" in msg
    msg = error_of(sweep_file(tmp_path, "[grid]\nseed = [0]\n", base='data_dir = "missing.npz"\n'))
    assert "data_dir" in msg and "does not exist" in msg


# ---------------------------------------------------------------------- expansion and names
def test_grid_expands_to_readable_unique_stable_names(tmp_path):
    path = sweep_file(tmp_path, """\
        [grid]
        model = ["cnn", "mlp"]
        lr = [0.01, 0.1]
        seed = [0, 1]
        """)
    spec = load_spec(path)
    names = [r.name for r in spec.runs]
    assert len(names) == 8 == len(set(names))
    assert names[0] == "cnn-lr0.01-seed0" and "mlp-lr0.1-seed1" in names
    assert [r.name for r in load_spec(path).runs] == names  # stable
    assert {r.configuration for r in spec.runs} == {"cnn-lr0.01", "cnn-lr0.1", "mlp-lr0.01", "mlp-lr0.1"}
    assert spec.columns == ["model", "lr", "seed"]
    r = spec.runs[-1]
    assert (r.config.model, r.config.lr, r.config.seed, r.config.iterations) == ("mlp", 0.1, 1, 16)


def test_runs_entries_presets_and_precedence(tmp_path):
    path = sweep_file(tmp_path, """\
        preset = "digits-mlp"
        iterations = 32
        [grid]
        seed = [0, 1]
        [[runs]]
        name = "wide"
        width = 2.0
        [[runs]]
        preset = "cifar10-vgg8"
        dataset = "digits"
        [runs.grid]
        lr = [0.002, 0.02]
        """, base="")
    spec = load_spec(path, overrides={"bootstrap": 50})
    names = [r.name for r in spec.runs]
    assert names == ["wide-seed0", "wide-seed1", "cifar10-vgg8-lr0.002-seed0", "cifar10-vgg8-lr0.002-seed1",
                     "cifar10-vgg8-lr0.02-seed0", "cifar10-vgg8-lr0.02-seed1"], names
    wide, vgg = spec.runs[0].config, spec.runs[-1].config
    assert (wide.model, wide.width, wide.iterations, wide.dataset, wide.bootstrap) == ("mlp", 2.0, 32, "digits", 50)
    # preset < base keys < entry keys < grid values < --set
    assert (vgg.model, vgg.width, vgg.iterations, vgg.dataset, vgg.lr, vgg.bootstrap) == (
        "vgg8", 0.5, 32, "digits", 0.02, 50)


def test_shipped_sweeps_parse_with_expected_sizes():
    sizes = {name: len(load_spec(name).runs) for name in shipped()}
    assert sizes["demo"] == 6
    assert sizes["paper-cifar10"] == 6 and sizes["paper-all"] >= 12
    spec = load_spec("paper-cifar10")
    assert {r.config.model for r in spec.runs} == {"vgg8", "resnet10"}
    assert "vgg8-seed0" in [r.name for r in spec.runs]


def test_data_option_sets_data_dir_per_dataset(tmp_path):
    npz = tmp_path / "c.npz"
    npz.write_bytes(b"")
    spec = load_spec("paper-all", data_dirs={"cifar10": str(npz)})
    dirs = {r.config.dataset: r.config.data_dir for r in spec.runs}
    assert dirs["cifar10"] == str(npz.resolve()) and dirs["cifar100"] is None


# ---------------------------------------------------------------------- running, tables, failures
def test_sweep_writes_run_folders_and_tables(tmp_path):
    path = sweep_file(tmp_path, "[grid]\nlr = [0.01, 0.05]\nseed = [0, 1]\n")
    out = tmp_path / "sw"
    result = run_sweep(load_spec(path), out, backend="local", progress=False)
    assert result.exit_code == 0 and not result.failed
    for r in result.spec.runs:
        assert (out / "runs" / r.name / "metrics.csv").exists() and (out / "runs" / r.name / "curves.png").exists()
    table = pd.read_csv(out / "sweep.csv")
    assert list(table.run) == ["lr0.01-seed0", "lr0.01-seed1", "lr0.05-seed0", "lr0.05-seed1"]
    for col in ("lr", "seed", "status", "message", "phases", "min_iteration", "min_value", "relative_decrease",
                "relative_decrease_ci_low", "relative_increase_ci_high", "final_train_accuracy",
                "final_test_accuracy", "seconds"):
        assert col in table.columns, col
    assert set(table.status) == {"complete"}
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.configuration) == ["lr0.01", "lr0.05"]
    assert list(summary.seeds) == ["0,1", "0,1"] and list(summary.finished) == [2, 2]
    row = summary.iloc[0]
    sub = table[table.configuration == "lr0.01"]
    assert row.relative_decrease_mean == pytest.approx(sub.relative_decrease.mean(), rel=1e-4)
    assert row.relative_decrease_ci_low < row.relative_decrease_mean < row.relative_decrease_ci_high
    assert (out / "sweep.png").stat().st_size > 10_000
    saved = json.loads((out / "sweep.json").read_text())
    assert [r["name"] for r in saved["runs"]] == list(table.run)


def test_failures_are_recorded_and_the_others_go_on(tmp_path):
    path = sweep_file(tmp_path, """\
        [[runs]]
        name = "ok"
        [[runs]]
        name = "diverges"
        lr = 1e6
        momentum = 0.0
        iterations = 64
        [[runs]]
        name = "broken"
        layers = ["no.such.layer"]
        [[runs]]
        name = "ok-too"
        seed = 1
        """)
    result = run_sweep(load_spec(path), tmp_path / "sw", backend="local", progress=False)
    status = {n: o["status"] for n, o in result.outcomes.items()}
    assert status == {"ok": "complete", "diverges": "diverged", "broken": "failed", "ok-too": "complete"}
    assert result.exit_code == 1
    table = pd.read_csv(tmp_path / "sw" / "sweep.csv").drop_duplicates("run").set_index("run")
    assert "diverged at iteration" in table.loc["diverges", "message"]
    assert "no.such.layer" in table.loc["broken", "message"]
    summary = pd.read_csv(tmp_path / "sw" / "summary.csv").set_index("configuration")
    assert summary.loc["broken", "failed"] == 1 and summary.loc["ok", "finished"] == 1
    # only divergences: exit code 3
    path = sweep_file(tmp_path, '[[runs]]\nname = "ok"\n[[runs]]\nname = "diverges"\nlr = 1e6\nmomentum = 0.0\n'
                                "iterations = 64\n", name="d.toml")
    assert run_sweep(load_spec(path), tmp_path / "sw2", backend="local", progress=False).exit_code == 3


# ---------------------------------------------------------------------- resume
def test_resume_skips_finished_and_continues_interrupted_runs(tmp_path, monkeypatch):
    import phasescope.interfaces.sweep.backends as backends  # runs each configuration with its run_experiment

    path = sweep_file(tmp_path, "[grid]\nlr = [0.01, 0.05]\nseed = [0, 1]\n")
    spec = load_spec(path)
    reference = run_sweep(spec, tmp_path / "ref", backend="local", progress=False)
    original = backends.run_experiment
    calls = []

    def interrupting(cfg, out, **kw):  # the third run is interrupted (Ctrl-C) after iteration 8's checkpoint
        calls.append((out.name, kw.get("resume")))
        if len(calls) == 3:
            def on_step(t, loss):
                if t == 9:
                    raise KeyboardInterrupt
            kw["on_step"] = on_step
        return original(cfg, out, **kw)

    monkeypatch.setattr(backends, "run_experiment", interrupting)
    out = tmp_path / "sw"
    first = run_sweep(spec, out, backend="local", progress=False)
    assert first.interrupted and first.exit_code == 130
    assert first.outcomes["lr0.05-seed0"]["status"] == "interrupted" and "lr0.05-seed1" not in first.outcomes
    mtimes = {n: (out / "runs" / n / "metrics.csv").stat().st_mtime_ns for n in ("lr0.01-seed0", "lr0.01-seed1")}
    calls.clear()
    second = run_sweep(spec, out, backend="local", progress=False)
    assert calls == [("lr0.05-seed0", True), ("lr0.05-seed1", False)]  # nothing computed twice
    assert second.skipped == ["lr0.01-seed0", "lr0.01-seed1"] and second.exit_code == 0
    assert {n: (out / "runs" / n / "metrics.csv").stat().st_mtime_ns for n in mtimes} == mtimes
    status = json.loads((out / "status" / "lr0.05-seed0.json").read_text())
    assert status["resumed"] is True and status["status"] == "complete"
    drop = ["seconds", "message"]
    pd.testing.assert_frame_equal(pd.read_csv(out / "sweep.csv").drop(columns=drop),
                                  pd.read_csv(tmp_path / "ref" / "sweep.csv").drop(columns=drop))
    for n in ("lr0.05-seed0", "lr0.05-seed1"):
        pd.testing.assert_frame_equal(pd.read_csv(out / "runs" / n / "metrics.csv"),
                                      pd.read_csv(tmp_path / "ref" / "runs" / n / "metrics.csv"))
    calls.clear()
    third = run_sweep(spec, out, backend="local", progress=False, resume=True)
    assert calls == [] and len(third.skipped) == 4


def test_a_different_sweep_in_the_same_folder_is_refused(tmp_path):
    out = tmp_path / "sw"
    run_sweep(load_spec(sweep_file(tmp_path, "[grid]\nseed = [0]\n")), out, backend="local", progress=False)
    other = load_spec(sweep_file(tmp_path, "[grid]\nseed = [0]\n", base=TINY.replace("lr = 0.05", "lr = 0.2"),
                                 name="t.toml"))
    with pytest.raises(SweepError, match="different sweep.*lr saved 0.05, now 0.2"):
        run_sweep(other, out, backend="local", progress=False)
    assert run_sweep(other, out, backend="local", progress=False, overwrite=True).exit_code == 0
    assert json.loads((out / "runs" / "s" / "config.json").read_text()) if (out / "runs" / "s").exists() else True
    with pytest.raises(SweepError, match="not a sweep folder"):
        (tmp_path / "busy").mkdir()
        (tmp_path / "busy" / "notes.txt").write_text("mine")
        run_sweep(other, tmp_path / "busy", backend="local", progress=False)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_sweep_tables_are_written_atomically(tmp_path, monkeypatch):
    path = sweep_file(tmp_path, "[grid]\nseed = [0, 1]\n")
    spec = load_spec(path)
    out = tmp_path / "sw"
    run_sweep(spec, out, backend="local", progress=False)
    before = (out / "sweep.csv").read_bytes()
    original = pd.DataFrame.to_csv

    def torn(self, p, *a, **k):  # writes half a file, then the disk is full
        with open(p, "w") as f:
            f.write("run,configuration\nseed0,")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", torn)
    with pytest.raises(OSError):
        write_tables(spec, out)
    monkeypatch.setattr(pd.DataFrame, "to_csv", original)
    assert (out / "sweep.csv").read_bytes() == before
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------------- command line
def test_cli_list_dry_run_and_local_sweep(tmp_path):
    res = runner.invoke(app, ["sweep", "--list"])
    assert res.exit_code == 0 and "demo" in res.output and "paper-cifar10" in res.output
    res = runner.invoke(app, ["sweep", "demo", "--dry-run"])
    assert res.exit_code == 0 and "lr0.05-seed2" in res.output
    path = sweep_file(tmp_path, "[grid]\nseed = [0, 1]\n")
    out = tmp_path / "sw"
    res = runner.invoke(app, ["sweep", str(path), "--out", str(out), "--backend", "local", "--quiet",
                              "--set", "iterations=8"])
    assert res.exit_code == 0, res.output
    assert "seed0" in (out / "sweep.csv").read_text() and "2/2" in res.output
    assert json.loads((out / "runs" / "seed1" / "config.json").read_text())["config"]["iterations"] == 8
    res = runner.invoke(app, ["sweep", "--resume", "--out", str(out), "--backend", "local", "--quiet"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["sweep", str(path), "--out", str(out), "--backend", "local", "--quiet"])
    assert res.exit_code == 2 and "different sweep" in res.output and "iterations saved 8, now 16" in res.output


def test_cli_bad_file_and_failed_runs_exit_codes(tmp_path):
    res = runner.invoke(app, ["sweep", str(sweep_file(tmp_path, "[grid]\nlrr = [1]\n")), "--backend", "local"])
    assert res.exit_code == 2 and "lrr" in res.output
    res = runner.invoke(app, ["sweep", "no-such-sweep", "--backend", "local"])
    assert res.exit_code == 2 and "demo" in res.output
    path = sweep_file(tmp_path, '[[runs]]\nname = "ok"\n[[runs]]\nname = "broken"\nlayers = ["nope"]\n', name="f.toml")
    res = runner.invoke(app, ["sweep", str(path), "--out", str(tmp_path / "f"), "--backend", "local", "--quiet"])
    assert res.exit_code == 1 and "broken" in res.output and "nope" in res.output


def test_cli_without_ray_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    path = sweep_file(tmp_path, "[grid]\nseed = [0]\n")
    res = runner.invoke(app, ["sweep", str(path), "--out", str(tmp_path / "sw")])
    assert res.exit_code == 2
    assert 'pip install "phasescope[ray]"' in res.output and "--backend local" in res.output
    assert not (tmp_path / "sw").exists()
