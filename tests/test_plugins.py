"""Extensions as plug-ins: an installed package's extension runs like a built-in one.

The plug-in is a tiny package the test writes into tmp_path: a module holding the README's
MeanActivation unchanged and a ``*.dist-info`` folder whose entry_points.txt declares it in the
``phasescope.extensions`` group, as ``pip install`` of a package with

    [project.entry-points."phasescope.extensions"]
    mean_activation = "meanact:MeanActivation"

would leave it. Runs are seconds long, on scikit-learn's 8x8 digits.
"""
import json
import sys
import textwrap
import warnings
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from phasescope import registry
from phasescope.interfaces.cli import app
from phasescope.config import ConfigError, RunConfig

runner = CliRunner()
TINY = ["--dataset", "digits", "--iterations", "4", "--fit-samples", "200", "--test-samples", "100",
        "--bootstrap", "50", "--quiet"]

README_EXAMPLE = '''\
from phasescope.extension import Extension

class MeanActivation(Extension):
    name = "mean_activation"

    def measure(self, ctx):           # ctx: frozen model, features, logits, ctx.reconstruct(layer, rows), ...
        return [ctx.row(layer, "test", "mean_activation", ctx.test_features[layer].mean(1)) for layer in ctx.layers]
'''


def install(site, module: str, source: str, entry_points: str, dist: str = "meanact-plugin") -> None:
    """What pip leaves in site-packages: the module and the distribution's metadata."""
    (site / f"{module}.py").write_text(source)
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path (like site-packages), the registry reloaded on first use and after the test."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    registry.clear_cache()
    yield site
    registry.clear_cache()
    for name in ("meanact", "broken_plugin"):
        sys.modules.pop(name, None)


@pytest.fixture
def plugin(site):
    install(site, "meanact", README_EXAMPLE, "[phasescope.extensions]\nmean_activation = meanact:MeanActivation\n")
    return site


def test_the_readme_example_installs_and_runs_as_a_plugin(plugin, tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, ["run", *TINY, "--extension", "mean_activation", "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = pd.read_csv(out / "metrics.csv").query("metric == 'mean_activation'")
    assert len(rows) == 4 and set(rows.split) == {"test"} and rows.ci_low.notna().all()  # 4 checkpoints: 0, 1, 2, 4
    conf = json.loads((out / "config.json").read_text())
    assert conf["config"]["extensions"] == ["mean_activation"]
    assert "mean_activation" in conf["measurement"]["extensions"]
    assert RunConfig.from_dict(conf["config"]).extensions == ["mean_activation"]  # resumable: it reads back

    res = runner.invoke(app, ["report", str(out), "--html"])
    assert res.exit_code == 0, res.output
    assert len(pd.read_csv(out / "metrics.csv").query("metric == 'mean_activation'")) == 4

    res = runner.invoke(app, ["extensions"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "mean_activation" in res.output and "meanact-plugin 0.1" in res.output and "built-in" in res.output


def test_a_sweep_file_turns_the_plugin_on(plugin, tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(textwrap.dedent("""\
        dataset = "digits"
        iterations = 4
        fit_samples = 200
        test_samples = 100
        bootstrap = 50
        extensions = ["mean_activation"]
        [grid]
        seed = [0, 1]
        """))
    out = tmp_path / "sw"
    res = runner.invoke(app, ["sweep", str(path), "--out", str(out), "--backend", "local", "--quiet"])
    assert res.exit_code == 0, res.output
    for seed in (0, 1):
        run = out / "runs" / f"seed{seed}"
        assert (pd.read_csv(run / "metrics.csv").metric == "mean_activation").any()
        assert json.loads((run / "config.json").read_text())["config"]["extensions"] == ["mean_activation"]


def readme_plugin() -> str:
    """The fuller plug-in of the README's "Write an extension" section, as it stands there."""
    text = (Path(__file__).parents[1] / "README.md").read_text()
    start = text.index("# mypkg/meanact.py")
    return text[start:text.index("```", start)]


def test_the_readme_plugin_with_options_gets_a_section_validation_and_a_report_section(site, tmp_path):
    install(site, "meanact", readme_plugin(), "[phasescope.extensions]\nmean_activation = meanact:MeanActivation\n")
    from phasescope.outputs.runs import run_files

    assert "mean_activation.csv" in run_files()  # --overwrite may delete what a plug-in writes, and nothing else
    cfg = RunConfig.from_dict({"extensions": ["mean_activation:scale=3"]})
    assert cfg.mean_activation.scale == 3 and cfg.extensions == ["mean_activation"]
    assert cfg.to_dict()["mean_activation"] == {"scale": 3} and "mean_activation" not in RunConfig().to_dict()
    assert RunConfig.from_dict({"mean_activation": {"scale": 4.0}}).extensions == ["mean_activation"]  # options: on
    with pytest.raises(ConfigError, match="mean_activation scale must be positive"):
        RunConfig.from_dict({"extensions": ["mean_activation:scale=-1"]})
    with pytest.raises(ConfigError, match="did you mean 'scale'"):
        RunConfig.from_dict({"extensions": ["mean_activation:scael=1"]})
    out = tmp_path / "run"
    res = runner.invoke(app, ["run", *TINY, "--extension", "mean_activation:scale=2", "--no-samples", "--out", str(out)])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out / "metrics.csv")
    assert len(df[df.metric == "mean_activation"]) == 4
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["mean_activation"] == {"scale": 2} and saved["extensions"] == ["mean_activation"]
    report = (out / "report.html").read_text()
    assert '<section id="mean_activation">' in report and "<h2>Mean activation</h2>" in report
    assert 'href="#mean_activation"' in report


def test_a_broken_plugin_warns_and_phasescope_works(site, tmp_path):
    install(site, "broken_plugin", "raise ImportError('needs a package that is not installed')\n",
            "[phasescope.extensions]\nbroken = broken_plugin:Broken\nnot_one = json:dumps\n", dist="broken-plugin")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = [cls.name for cls in registry.extensions()]
    messages = " ".join(str(w.message) for w in caught)
    assert "'broken'" in messages and "broken-plugin 0.1" in messages and "not installed" in messages
    assert "'not_one'" in messages and "not a subclass" in messages
    assert names[:2] == ["transfer", "samples"] and "broken" not in names
    res = runner.invoke(app, ["run", *TINY, "--no-samples", "--no-reconstructions", "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output


def test_an_unknown_extension_name_suggests_the_closest_and_the_list(plugin, tmp_path):
    res = runner.invoke(app, ["run", *TINY, "--extension", "mean_activaton", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "Did you mean 'mean_activation'" in res.output
    assert "phasescope extensions" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "r").exists()
    res = runner.invoke(app, ["run", *TINY, "--extension", "mean_activation:x=1", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "takes no options" in res.output


def test_builtin_extensions_by_name_with_options():
    cfg = RunConfig.from_dict({"extensions": ["infoplane:estimators=binning+kde,bins=20", "best_features:stop_on_increase=true"]})
    assert cfg.infoplane.estimators == ["binning", "kde"] and cfg.infoplane.bins == 20
    assert cfg.transfer.stop_on_increase and cfg.transfer.keep_best  # implied, as --stop-on-increase does
    assert cfg.extensions == ["infoplane", "best_features"]
    one = RunConfig.from_dict({"extensions": ["infoplane:estimators=kde"]})
    assert one.infoplane.estimators == ["kde"]  # a single value of a list option is a one-item list
    with pytest.raises(ConfigError, match="choose from"):
        RunConfig.from_dict({"extensions": ["infoplane:estimators=kdee"]})
    with pytest.raises(ConfigError, match="Did you mean 'samples'"):
        RunConfig.from_dict({"extensions": ["sample"]})
    # callbacks and PhaseTracker take names too
    made = registry.create("infoplane:estimators=binning,bins=12")
    assert type(made).__name__ == "InfoPlane" and made.estimators == ["binning"] and made.bins == 12


def test_generated_flags_keep_their_names_and_reach_the_sections(tmp_path):
    from phasescope.interfaces.cli import section_flags

    flags = {sf.param.default.param_decls[0]: sf for sf in section_flags()}
    for flag in ("--samples/--no-samples", "--samples-max", "--transfer", "--keep-best", "--stop-on-increase",
                 "--info-plane", "--reconstructions/--no-reconstructions", "--reconstructions-per-class"):
        assert flag in flags, flag
    out = tmp_path / "run"
    res = runner.invoke(app, ["run", *TINY, "--samples-max", "50", "--reconstructions-per-class", "1",
                              "--info-plane", "binning", "--infoplane-bins", "10", "--out", str(out)])
    assert res.exit_code == 0, res.output
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["samples"]["max_samples"] == 50 and saved["reconstructions"]["per_class"] == 1
    assert saved["infoplane"]["estimators"] == ["binning"] and saved["infoplane"]["bins"] == 10
    assert "extensions" not in saved  # flags of built-in extensions set their sections only


def test_the_tracker_takes_extension_names(site):
    import torch

    from phasescope import PhaseTracker
    from phasescope.data import load_dataset
    from phasescope.run.models import build_model

    install(site, "meanact", README_EXAMPLE, "[phasescope.extensions]\nmean_activation = meanact:MeanActivation\n")
    d = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model("cnn", (1, 8, 8), 10, width=0.5)
    tracker = PhaseTracker(model, ["features.3"], (d.x_train[:200], d.y_train[:200]), (d.x_test[:100], d.y_test[:100]),
                           schedule=[0], bootstrap=20, extensions=["mean_activation", "infoplane:estimators=binning"])
    assert [e.name for e in tracker.extensions] == ["mean_activation", "infoplane"]
    metrics = {r["metric"] for r in tracker.measure(model, 0)}
    assert {"mean_activation", "mi_input", "mi_label"} <= metrics
    with pytest.raises(ConfigError, match="cannot be made from its name"):
        PhaseTracker(model, ["features.3"], (d.x_train[:200], d.y_train[:200]), (d.x_test[:100], d.y_test[:100]),
                     schedule=[0], extensions=["transfer"])  # needs its tasks: pass an instance


def test_sweep_files_take_extension_names_with_options_and_every_section(tmp_path):
    from phasescope.interfaces.sweep import SweepError, load_spec

    path = tmp_path / "s.toml"
    path.write_text(textwrap.dedent("""\
        dataset = "digits"
        extension = ["infoplane:estimators=kde"]
        [reconstructions]
        per_class = 1
        [grid]
        infoplane.bins = [10, 20]
        """))
    runs = load_spec(path).runs
    assert [r.config.infoplane.bins for r in runs] == [10, 20]
    assert all(r.config.infoplane.estimators == ["kde"] and r.config.extensions == ["infoplane"]
               and r.config.reconstructions.per_class == 1 for r in runs)
    path.write_text('dataset = "digits"\nextensions = ["infoplain"]\n[grid]\nseed = [0]\n')
    with pytest.raises(SweepError, match="Did you mean 'infoplane'"):
        load_spec(path)


def test_a_module_in_the_extensions_package_is_a_builtin_without_any_other_change(tmp_path, monkeypatch):
    """A new built-in extension is one module of phasescope.extensions: the registry finds it there
    (after the listed ones, which keep their order); helpers and imported classes are not extensions."""
    import phasescope.extensions as package

    folder = tmp_path / "more"
    folder.mkdir()
    (folder / "zz_mean_out.py").write_text(textwrap.dedent("""\
        from phasescope.extension import Extension
        from phasescope.extensions.infoplane import InfoPlane  # imported, not defined here: not listed twice

        class Helper:  # not an Extension
            pass

        class MeanOut(Extension):
            name = "zz_mean_out"

            def measure(self, ctx):
                return [ctx.row(l, "test", "zz_mean_out", ctx.test_features[l].mean(1)) for l in ctx.layers]
        """))
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(folder)])
    registry.clear_cache()
    try:
        found = registry.discovered()
        assert found[-1] == "phasescope.extensions.zz_mean_out:MeanOut"
        assert not [t for t in found if t.startswith("phasescope.extensions.zz_mean_out") and not t.endswith(":MeanOut")]
        names = [cls.name for cls in registry.extensions()]
        assert names[:2] == ["transfer", "samples"] and names[-1] == "zz_mean_out"
        assert registry.origin(registry.get("zz_mean_out")) == "built-in"
        out = tmp_path / "run"
        res = runner.invoke(app, ["run", *TINY, "--extension", "zz_mean_out", "--no-samples", "--out", str(out)])
        assert res.exit_code == 0, res.output
        assert len(pd.read_csv(out / "metrics.csv").query("metric == 'zz_mean_out'")) == 4
    finally:
        registry.clear_cache()
        sys.modules.pop("phasescope.extensions.zz_mean_out", None)
