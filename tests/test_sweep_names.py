"""Sweep files: run names stay inside the sweep folder, sweeps are bounded, and sweep files accept
what `phasescope run` accepts. Most tests expand specs without training (fast); the property tests
draw arbitrary names and grid values with hypothesis."""
import json
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from phasescope.interfaces.cli import app
from phasescope.interfaces.sweep import SweepError, load_spec, run_sweep, saved_spec
from phasescope.interfaces.sweep.backends import status_path
from phasescope.interfaces.sweep.spec import MAX_NAME, count_runs, expand, run_path, valid_name
from phasescope.interfaces.sweep.tables import run_dir

runner = CliRunner()
BASE = textwrap.dedent("""\
    dataset = "digits"
    iterations = 32
    fit_samples = 300
    test_samples = 200
    bootstrap = 100
    """)
BASE_DOC = {"dataset": "digits", "iterations": 32, "fit_samples": 300, "test_samples": 200, "bootstrap": 100}
OUT = Path("/sweeps/out")  # the property tests only compute paths under it, never write
RULE = "letters, digits and - _ . = +"


def sweep_file(folder: Path, body: str, name: str = "s.toml") -> Path:
    p = folder / name
    p.write_text(BASE + textwrap.dedent(body))
    return p


def error_of(path, **kw) -> str:
    with pytest.raises(SweepError) as e:
        load_spec(path, **kw)
    return str(e.value)


def toml_string(text: str) -> str:
    return json.dumps(text)  # a JSON string with \\u escapes is a valid TOML basic string


def inside(out: Path, name: str) -> bool:
    runs = Path(out, "runs").resolve()
    return run_dir(out, name).resolve().parent == runs and status_path(out, name).resolve().parent == (
        Path(out, "status").resolve())


# ---------------------------------------------------------------------- names given in the file
@pytest.mark.parametrize("name", ["x/../../../escaped", "../escaped", "a/../A", "/abs", "a\\b", ".hidden", "..",
                                  "x" * 300, "a\x00b", "two words", "caf\u00e9", "a:b", "semi;colon"])
def test_names_outside_the_vocabulary_are_refused_naming_the_run_and_the_rule(tmp_path, name):
    path = sweep_file(tmp_path, f"[[runs]]\nname = \"ok\"\n[[runs]]\nname = {toml_string(name)}\nlr = 0.1\n")
    message = error_of(path)
    assert str(path) in message and "[[runs]] entry 2" in message and "not a valid run name" in message, message
    assert RULE in message and f"at most {MAX_NAME} characters" in message
    assert len(message) < 400  # a 300-character name is shown cut


@pytest.mark.parametrize("name", ["A", "lr=0.1+wd_1e-4", "vgg8-wide.v2", "x" * MAX_NAME, "_x", "-x", "9"])
def test_names_in_the_vocabulary_are_kept(tmp_path, name):
    spec = load_spec(sweep_file(tmp_path, f"[[runs]]\nname = {toml_string(name)}\n"))
    assert [r.name for r in spec.runs] == [name]


def test_names_that_differ_only_in_case_are_refused_naming_both_runs(tmp_path):
    message = error_of(sweep_file(tmp_path, '[[runs]]\nname = "A"\n[[runs]]\nname = "a"\nlr = 0.1\n'))
    assert "runs 1 ('A') and 2 ('a')" in message and "differ only in case" in message, message
    # a given name against a generated one
    message = error_of(sweep_file(tmp_path, '[[runs]]\nname = "LR0.1"\n[[runs]]\nlr = 0.1\n'))
    assert "'LR0.1'" in message and "'lr0.1'" in message, message


def test_every_name_is_checked_before_any_run_starts(tmp_path):
    """A bad name in the last entry stops the sweep before the first run trains or any folder is made."""
    path = sweep_file(tmp_path, '[[runs]]\nname = "first"\n[[runs]]\nname = "' + "y" * 300 + '"\n')
    out = tmp_path / "sw"
    with pytest.raises(SweepError, match="entry 2"):
        run_sweep(path, out, backend="local", progress=False)
    assert not out.exists()


# ---------------------------------------------------------------------- generated names
def test_generated_names_are_sanitised_and_long_ones_shortened_deterministically(tmp_path):
    long = ["L" * 300 + "a", "L" * 300 + "b"]
    path = sweep_file(tmp_path, f"[grid]\nlayers = [[{toml_string(long[0])}], [{toml_string(long[1])}]]\n"
                                "reconstructions.layer = [\"../up\", \"a/b\"]\n")
    names = [r.name for r in load_spec(path).runs]
    assert len(set(n.lower() for n in names)) == 4 and all(valid_name(n) and len(n) <= MAX_NAME for n in names)
    assert [r.name for r in load_spec(path).runs] == names  # stable: a rerun continues the same folders
    assert names[0].startswith("layers" + "L" * 50) and "layer.._up" in load_spec(
        sweep_file(tmp_path, 'reconstructions.layer = "x"\n[grid]\nreconstructions.layer = ["../up", "a/b"]\n',
                   "short.toml")).runs[0].name


def test_a_generated_name_never_starts_with_a_dot(tmp_path):
    path = sweep_file(tmp_path, '[grid]\nmodel = ["..dotmodels:f", "cnn"]\n')
    assert [r.name for r in load_spec(path).runs] == ["dotmodelsf", "cnn"]


# ---------------------------------------------------------------------- the path guard
@pytest.mark.parametrize("name", ["../x", "a/../../b", "/etc/x", "..", ".", "", "a\x00b", "x" * 300])
def test_the_path_guard_refuses_any_name_leading_elsewhere(tmp_path, name):
    with pytest.raises(SweepError, match="not be a folder inside"):
        run_path(tmp_path / "runs", name)
    with pytest.raises(SweepError):
        run_dir(tmp_path, name)
    with pytest.raises(SweepError):
        status_path(tmp_path, name)


def test_a_spec_built_in_code_or_a_tampered_sweep_json_is_refused_before_anything_is_written(tmp_path):
    spec = load_spec(sweep_file(tmp_path, '[[runs]]\nname = "fine"\n'))
    spec.runs[0].name = "../../escaped"
    out = tmp_path / "a" / "b" / "sw"
    with pytest.raises(SweepError, match="not a valid run name"):
        run_sweep(spec, out, backend="local", progress=False)
    assert not out.exists() and not (tmp_path / "a" / "escaped").exists()
    out.mkdir(parents=True)
    doc = {**spec.to_dict()}
    (out / "sweep.json").write_text(json.dumps(doc, default=str))
    with pytest.raises(SweepError, match="sweep.json: run 1 has the name '../../escaped'"):
        saved_spec(out)
    res = runner.invoke(app, ["sweep", "--resume", "--out", str(out), "--backend", "local"])
    assert res.exit_code == 2 and "not a valid run name" in res.output, res.output


# ---------------------------------------------------------------------- property tests
grid_values = st.one_of(st.text(min_size=1, max_size=12), st.text(min_size=80, max_size=150),
                        st.text(alphabet="./\\aA-_:\x00 ", min_size=1, max_size=6))
names = st.one_of(
    st.text(max_size=120),
    st.text(alphabet="./\\aA-_=+ \x00:", max_size=12),
    st.sampled_from(["..", ".", "../x", "a/../A", "A", "a", "x" * 101, "/", "~", "con"]),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(names, min_size=1, max_size=4))
def test_any_given_names_are_refused_or_stay_inside_the_folder(labels):
    doc = {**BASE_DOC, "runs": [{"name": n, "seed": i} for i, n in enumerate(labels)]}
    try:
        runs, _ = expand(doc, "s.toml")
    except SweepError as e:
        assert "s.toml" in str(e) and len(str(e)) < 1000
        return
    got = [r.name for r in runs]
    assert all(valid_name(n) and inside(OUT, n) for n in got)
    assert len({n.lower() for n in got}) == len(got)
    assert got == [n.strip() for n in labels]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(grid_values, min_size=2, max_size=5, unique=True))
def test_generated_names_from_any_grid_values_are_valid_and_inside_the_folder(values):
    doc = {**BASE_DOC, "grid": {"layers": [[v] for v in values], "reconstructions": {"layer": values[:2]}}}
    try:
        runs, _ = expand(doc, "s.toml")
    except SweepError as e:  # values alike once made names (a/b and a_b): refused, never one shared folder
        assert "same name" in str(e) or "differ only in case" in str(e), str(e)
        return
    got = [r.name for r in runs]
    assert len(got) == 2 * len(values)
    assert all(valid_name(n) and inside(OUT, n) for n in got)
    assert len({n.lower() for n in got}) == len(got)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(grid_values, min_size=1, max_size=5))
def test_distinct_grid_values_always_give_valid_distinct_names_inside_the_folder(suffixes):
    values = [f"v{i}-{s}" for i, s in enumerate(suffixes)]  # distinct after any sanitising: v1- is no prefix of v10-
    runs, _ = expand({**BASE_DOC, "grid": {"layers": [[v] for v in values]}}, "s.toml")
    got = [r.name for r in runs]
    assert all(valid_name(n) and inside(OUT, n) for n in got)
    assert len({n.lower() for n in got}) == len(values)
    assert got == [r.name for r in expand({**BASE_DOC, "grid": {"layers": [[v] for v in values]}}, "s.toml")[0]]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.from_regex(r"[A-Za-z0-9_=+-][A-Za-z0-9._=+-]{0,200}", fullmatch=True), min_size=2, max_size=5,
                unique_by=str.lower))
def test_grid_values_in_the_vocabulary_always_give_distinct_names(values):
    runs, _ = expand({**BASE_DOC, "grid": {"layers": [[v] for v in values]}}, "s.toml")
    got = [r.name for r in runs]
    assert all(valid_name(n) for n in got) and len({n.lower() for n in got}) == len(values)


# ---------------------------------------------------------------------- end to end
def test_cli_refuses_an_escaping_name_with_exit_2_and_writes_nothing(tmp_path, monkeypatch):
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    sweep_file(deep, '[[runs]]\nname = "x/../../../escaped"\n', "n.toml")
    before = sorted(p for p in tmp_path.rglob("*"))
    res = runner.invoke(app, ["sweep", "n.toml", "--backend", "local", "--out", "sw", "--quiet"])
    assert res.exit_code == 2, res.output
    assert "name 'x/../../../escaped' of [[runs]] entry 1 is not a valid run name" in res.output
    assert sorted(p for p in tmp_path.rglob("*")) == before  # no sweep folder, nothing escaped
    res = runner.invoke(app, ["sweep", "n.toml", "--dry-run"])
    assert res.exit_code == 2 and "not a valid run name" in res.output


# ---------------------------------------------------------------------- bounded sweeps
def test_a_huge_grid_is_refused_before_anything_is_expanded(tmp_path, monkeypatch):
    import phasescope.interfaces.sweep.spec as spec_module

    def no_expansion(*a, **k):
        raise AssertionError("the grid was expanded")

    monkeypatch.setattr(spec_module.itertools, "product", no_expansion)
    seeds, sizes = (", ".join(str(i + start) for i in range(1000)) for start in (0, 1))
    path = sweep_file(tmp_path, f"[grid]\nseed = [{seeds}]\nbatch_size = [{sizes}]\n")
    message = error_of(path)
    assert "expands to 1,000,000 runs" in message and "seed 1,000 x batch_size 1,000" in message, message
    assert "limit of 10,000" in message and "--max-runs" in message and len(message) < 400
    res = runner.invoke(app, ["sweep", str(path), "--dry-run"])
    assert res.exit_code == 2 and "expands to 1,000,000 runs" in res.output


def test_the_count_includes_runs_entries_and_their_grids_and_max_runs_raises_the_limit(tmp_path):
    body = ('[grid]\nseed = [0, 1, 2]\n[[runs]]\nname = "a"\n[runs.grid]\nlr = [0.1, 0.2]\n'
            '[[runs]]\nname = "b"\n[runs.grid]\nlr = [0.1, 0.2]\nbatch_size = [8, 16]\n')
    path = sweep_file(tmp_path, body)
    assert count_runs({"grid": {"seed": [0, 1, 2]}, "runs": [{"grid": {"lr": [1, 2]}},
                                                             {"grid": {"lr": [1, 2], "batch_size": [8, 16]}}]}) == 18
    assert len(load_spec(path).runs) == 18
    message = error_of(path, max_runs=17)
    assert "expands to 18 runs" in message and "2 [[runs]] entries" in message and "limit of 17" in message
    assert len(load_spec(path, max_runs=18).runs) == 18
    res = runner.invoke(app, ["sweep", str(path), "--dry-run", "--max-runs", "10"])
    assert res.exit_code == 2 and "limit of 10" in res.output, res.output
    res = runner.invoke(app, ["sweep", str(path), "--dry-run", "--max-runs", "18"])
    assert res.exit_code == 0 and "18 runs of" in res.output, res.output


def test_yaml_aliases_are_refused(tmp_path):
    pytest.importorskip("yaml")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("dataset: digits\na: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                    "grid:\n  seed: [0]\n")
    message = error_of(bomb)
    assert "line 3: YAML aliases (*a) are not allowed in sweep files" in message, message
    merge = tmp_path / "merge.yaml"
    merge.write_text("base: &base {lr: 0.1}\ndataset: digits\nruns:\n  - <<: *base\n    name: x\n")
    assert "YAML aliases (*base)" in error_of(merge)
    plain = tmp_path / "plain.yaml"
    plain.write_text("dataset: digits\niterations: 32\ngrid:\n  seed: [0, 1]\n")
    assert [r.name for r in load_spec(plain).runs] == ["seed0", "seed1"]


def test_error_messages_cut_long_values(tmp_path):
    long = "q" * 100_000
    for body in (f"[grid]\nlr = [{toml_string(long)}]\n", f"[grid]\nseed = {toml_string(long)}\n",
                 f"device = {toml_string(long)}\n[grid]\nseed = [0]\n", f"{long} = 1\n[grid]\nseed = [0]\n",
                 f"[grid]\nlayers = [[{toml_string(long)}], [{toml_string(long)}]]\n"):
        message = error_of(sweep_file(tmp_path, body))
        assert len(message) < 1000 and "qqq..." in message, message[:300]


# ---------------------------------------------------------------------- what `phasescope run` accepts
FACTORY = textwrap.dedent("""
    from torch import nn

    def make_model(input_shape, num_classes):
        c, h, w = input_shape
        return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 16), nn.ReLU(), nn.Linear(16, num_classes))
""")


def test_a_model_import_path_is_accepted_as_by_phasescope_run(tmp_path, monkeypatch):
    (tmp_path / "sweepmodels.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "sweepmodels", raising=False)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "s.toml"
    path.write_text('dataset = "digits"\nmodel = "sweepmodels:make_model"\niterations = 4\nfit_samples = 200\n'
                    'test_samples = 100\nbootstrap = 50\nsamples = { enabled = false }\n'
                    'reconstructions = { enabled = false }\n[grid]\nseed = [0]\n')
    spec = load_spec(path)
    assert [(r.name, r.config.model) for r in spec.runs] == [("run", "sweepmodels:make_model")]
    grid = sweep_file(tmp_path, '[grid]\nmodel = ["cnn", "sweepmodels:make_model"]\n', "g.toml")
    assert [r.name for r in load_spec(grid).runs] == ["cnn", "sweepmodelsmake_model"]
    result = run_sweep(spec, tmp_path / "sw", backend="local", progress=False)
    assert result.exit_code == 0, result.outcomes
    assert (tmp_path / "sw" / "runs" / "run" / "metrics.csv").exists()


@pytest.mark.parametrize("model, expected", [("sweepmodels:", "import path 'package.module:function'"),
                                             (":make_model", "import path 'package.module:function'"),
                                             ("resnet9000", "Unknown model 'resnet9000'")])
def test_models_run_refuses_are_refused_by_the_sweep_too(tmp_path, model, expected):
    message = error_of(sweep_file(tmp_path, f"model = {toml_string(model)}\n[grid]\nseed = [0]\n"))
    assert expected in message and "run 'run'" in message, message


def test_sweep_file_and_run_validate_the_same_transfer_tasks(tmp_path):
    message = error_of(sweep_file(tmp_path, 'transfer = { tasks = ["nope"] }\n[grid]\nseed = [0]\n'))
    res = runner.invoke(app, ["run", "--dataset", "digits", "--transfer", "nope", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "nope" in message and "nope" in res.output
