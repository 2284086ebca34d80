"""--ridge with a list: every value's curve from one Gram matrix equals a run with that value alone."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from phasescope import RunConfig
from phasescope.config import ConfigError
from phasescope.run.experiment import run_experiment
from phasescope.engine.measure.ridge import StreamingRidge
from phasescope.ridge_sweep import ridge_label, sweep_curves

RIDGES = [0.1, 1e-4, 0.01, 1.0, "auto", 0.0]


def _data(n=300, p=24, d=40, seed=0, decades=3):
    g = torch.Generator().manual_seed(seed)
    H = torch.randn(n, p, generator=g) @ torch.diag(torch.logspace(0, -decades, p)) + 3.0
    X = H @ torch.randn(p, d, generator=g) + torch.randn(n, d, generator=g)
    return H, X


@pytest.mark.parametrize("ridge", RIDGES[1:])
def test_solution_from_one_eigendecomposition_equals_a_solve_at_that_ridge(ridge):
    H, X = _data()
    main = StreamingRidge(0.1).partial_fit(H, {"x": X}).solve()
    alone = StreamingRidge(ridge).partial_fit(H, {"x": X}).solve()
    sol = main.solution("x", ridge)
    torch.testing.assert_close(sol.coef, alone.coef_["x"], rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(sol.intercept, alone.intercept_["x"], rtol=1e-6, atol=1e-8)
    assert sol.train_mse == pytest.approx(alone.train_mse_["x"], rel=1e-9)
    assert sol.lam == pytest.approx(alone.lams_["x"], rel=1e-12)
    assert main.eigen() is main.eigen()  # computed once, shared by every ridge


def test_degrees_of_freedom_fall_with_the_ridge():
    H, X = _data(decades=2)  # every direction above RCOND: ridge 0 keeps all p
    s = StreamingRidge(0.1).partial_fit(H, {"x": X}).solve()
    dofs = [s.solution("x", r).dof for r in (0.0, 1e-4, 1e-2, 1.0)]
    assert dofs[0] == pytest.approx(H.shape[1]) and all(a > b for a, b in zip(dofs, dofs[1:]))


def test_config_and_cli_accept_a_list_of_ridges():
    cfg = RunConfig(relative_ridge=[0.1, "auto", 1e-3]).validate()
    assert cfg.relative_ridge == [0.1, "auto", 1e-3]
    for bad in ([], [0.1, -1.0], [0.1, 0.1], ["gcv"]):
        with pytest.raises(ConfigError, match="relative_ridge"):
            RunConfig(relative_ridge=bad).validate()
    from phasescope.interfaces.cli import _parse_ridge

    assert _parse_ridge("1e-4, 0.01,auto") == [1e-4, 0.01, "auto"] and _parse_ridge("0.3") == 0.3


def test_each_value_of_the_list_equals_a_run_with_that_value_alone(tiny_cfg, tmp_path):
    cfg = tiny_cfg.replace(iterations=16, samples={"enabled": False}, reconstructions={"enabled": False})
    swept = run_experiment(cfg.replace(relative_ridge=RIDGES), tmp_path / "sweep", progress=False)
    df, payload = swept.metrics, swept.payload
    saved = json.loads((tmp_path / "sweep" / "config.json").read_text())
    assert saved["config"]["relative_ridge"] == RIDGES
    assert (tmp_path / "sweep" / "errors_ridge.npz").exists() and (tmp_path / "sweep" / "ridge_sweep.png").exists()
    sweep = payload["ridge_sweep"]
    assert sweep["main"] == "0.1" and sweep["ridges"] == [ridge_label(r) for r in RIDGES]
    assert sweep["per_ridge"]["0.1"] == json.loads(json.dumps(payload["layers"]))
    html = (tmp_path / "sweep" / "report.html").read_text()  # the report shows every ridge and the figure
    section = html[html.index('<section id="ridge">'):]
    section = section[:section.index("</section>")]
    assert section.count("<tr") == 1 + len(RIDGES) * len(payload["layers"]) and 'data-figure="ridge_sweep.png"' in section
    for r in RIDGES:
        assert f"<td>{ridge_label(r)}</td>" in section or f"<strong>{ridge_label(r)}</strong>" in section
    # existing readers: reconstruction_mse is the main measurement, once per checkpoint, layer and split
    main = df[df.metric == "reconstruction_mse"]
    assert not main.duplicated(["iteration", "layer", "split"]).any()
    curves = sweep_curves(df, main="0.1")
    for r in RIDGES:
        alone = run_experiment(cfg.replace(relative_ridge=r), tmp_path / f"alone-{ridge_label(r)}", progress=False)
        a = alone.metrics
        for split in ("test", "train"):
            ref = a[(a.metric == "reconstruction_mse") & (a.split == split)].sort_values(["layer", "iteration"])
            metric = "reconstruction_mse" if r == RIDGES[0] else f"reconstruction_mse@ridge={ridge_label(r)}"
            got = df[(df.metric == metric) & (df.split == split)].sort_values(["layer", "iteration"])
            np.testing.assert_allclose(got.value.to_numpy(), ref.value.to_numpy(), rtol=2e-5, atol=1e-7)
            if split == "test":
                np.testing.assert_allclose(got.ci_low.to_numpy(), ref.ci_low.to_numpy(), rtol=2e-5)
        label = ridge_label(r)
        assert len(curves[curves.ridge == label]) == len(a[(a.metric == "reconstruction_mse") & (a.split == "test")])
        for layer, res in alone.payload["layers"].items():
            got = sweep["per_ridge"][label][layer]
            assert [p["name"] for p in got["phases"]] == [p["name"] for p in res["phases"]]
            assert got["min_iteration"] == res["min_iteration"]
            assert got["relative_increase"]["value"] == pytest.approx(res["relative_increase"]["value"], rel=1e-4, abs=1e-7)
        if r == "auto":  # GCV's choice is the same
            lam = df[df.metric == "decoder_lambda@ridge=auto"].value.to_numpy()
            np.testing.assert_allclose(lam, a[a.metric == "decoder_lambda"].value.to_numpy(), rtol=1e-9)


def test_sweep_resumes_and_rebuilds(tiny_cfg, tmp_path):
    from phasescope.outputs.rebuild import rebuild

    cfg = tiny_cfg.replace(iterations=8, relative_ridge=[0.1, 1.0], samples={"enabled": False},
                           reconstructions={"enabled": False})
    out = tmp_path / "run"
    r = run_experiment(cfg, out, progress=False)
    before = r.payload["ridge_sweep"]
    (out / "phases.json").write_text(json.dumps({**r.payload, "ridge_sweep": {**before, "per_ridge": {}}}))
    rebuild(out)
    after = json.loads((out / "phases.json").read_text())["ridge_sweep"]
    assert after["per_ridge"]["1"] == json.loads(json.dumps(before["per_ridge"]["1"]))
    longer = run_experiment(cfg.replace(iterations=16), tmp_path / "long", progress=False)
    assert set(longer.payload["ridge_sweep"]["per_ridge"]) == {"0.1", "1"}


def test_a_list_of_ridges_needs_the_linear_decoder(tiny_cfg, tmp_path):
    cfg = tiny_cfg.replace(iterations=2, relative_ridge=[0.1, 1.0], decoder="conv")
    with pytest.raises(ValueError, match="linear decoder"):
        run_experiment(cfg, tmp_path / "conv", progress=False)
