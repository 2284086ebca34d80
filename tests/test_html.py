"""report.html and index.html from files: self-contained, and never failing on what a folder lacks."""
import json
import re
import shutil

import pytest
from typer.testing import CliRunner

from phasescope import RunConfig, run_experiment
from phasescope.interfaces.cli import app
from phasescope.outputs.html import ReportError, write_index, write_report

runner = CliRunner()


def tiny(**kw):
    return RunConfig(dataset="digits", model="cnn", width=0.5, iterations=8, batch_size=32, lr=0.05, fit_samples=300,
                     test_samples=150, bootstrap=50, device="cpu").replace(**kw)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return run_experiment(tiny(), tmp_path_factory.mktemp("html") / "run", progress=False).out


def references(text: str) -> list[str]:
    """Every URL the page would load by itself (src, srcset, url(), link/script href), not navigation links."""
    refs = re.findall(r'\bsrc\s*=\s*"([^"]*)"', text) + re.findall(r"url\(\s*['\"]?([^'\")]*)", text)
    refs += re.findall(r'<link\b[^>]*\bhref\s*=\s*"([^"]*)"', text) + re.findall(r"@import\s+['\"]?([^'\";]+)", text)
    return refs


def test_every_run_writes_a_self_contained_report(run_dir):
    text = (run_dir / "report.html").read_text()
    assert text.startswith("<!DOCTYPE html>")
    refs = references(text)
    assert refs and all(r.startswith("data:") for r in refs), [r[:40] for r in refs if not r.startswith("data:")]
    assert "default-src 'none'" in text and "<script" not in text  # the report needs no script
    assert not re.search(r"https?://", text)
    for section in ('id="phase-table"', 'data-figure="curves.png"', 'data-figure="reconstructions.png"',
                    'data-figure="few.png"', 'data-figure="samples.png"', "@media print", 'id="kept-table"'):
        assert section in text, section
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["versions"]["torch"] in text and "Partial report" not in text


def test_report_escapes_what_it_shows(tmp_path, run_dir):
    d = tmp_path / "esc"
    shutil.copytree(run_dir, d)
    ph = json.loads((d / "phases.json").read_text())
    ph["warnings"] = ["<script>alert(1)</script> & more"]
    (d / "phases.json").write_text(json.dumps(ph))
    text = write_report(d).read_text()
    assert "<script>alert(1)" not in text and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in text


def test_report_on_no_run_is_bad_input(tmp_path):
    res = runner.invoke(app, ["report", str(tmp_path / "nope"), "--html"])
    assert res.exit_code == 2 and "does not exist" in res.output
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    res = runner.invoke(app, ["report", str(tmp_path / "empty"), "--html"])
    assert res.exit_code == 2 and "not a phasescope run folder" in res.output
    assert not (tmp_path / "empty" / "report.html").exists()
    with pytest.raises(ReportError):
        write_report(tmp_path / "empty")


def test_interrupted_run_reports_what_exists_and_says_it_is_partial(tmp_path):
    def interrupt(t, tracker):
        if t == 2:
            raise KeyboardInterrupt

    r = run_experiment(tiny(), tmp_path / "part", progress=False, on_checkpoint=interrupt)
    assert r.status == "interrupted"
    text = (r.out / "report.html").read_text()
    assert "Partial report" in text and "interrupted" in text and "iterations 0 to 2 of 8 planned" in text
    assert 'data-figure="curves.png"' in text


def test_killed_run_is_rebuilt_by_the_cli_and_marked_partial(tmp_path, run_dir):
    d = tmp_path / "killed"
    shutil.copytree(run_dir, d)
    for name in ("report.html", "curves.png", "samples.png", "few.png", "reconstructions.png"):
        (d / name).unlink()
    ph = json.loads((d / "phases.json").read_text())
    del ph["status"], ph["seconds"]  # as written after a checkpoint, before the end
    (d / "phases.json").write_text(json.dumps(ph))
    res = runner.invoke(app, ["report", str(d), "--html"])
    assert res.exit_code == 0, res.output
    text = (d / "report.html").read_text()
    assert "Partial report" in text and "no final status" in text
    for fig in ("curves.png", "samples.png", "reconstructions.png"):  # redrawn from the files
        assert f'data-figure="{fig}"' in text, fig
    assert "few.png is missing" in text  # needs the images: reported, not redrawn


def test_older_run_without_some_files_omits_sections_with_a_note(tmp_path, run_dir):
    d = tmp_path / "old"
    shutil.copytree(run_dir, d)
    for name in ("report.html", "errors.npz", "reconstructions.npz", "reconstructions.png", "samples.npz",
                 "samples.parquet", "samples.png", "few.png"):
        (d / name).unlink()
    cfg = json.loads((d / "config.json").read_text())
    del cfg["versions"], cfg["config"]["reconstructions"], cfg["config"]["min_effect"]
    (d / "config.json").write_text(json.dumps(cfg))
    ph = json.loads((d / "phases.json").read_text())
    stored = ph["layers"]
    for key in ("samples", "reconstructions", "warnings", "seconds"):
        ph.pop(key, None)
    (d / "phases.json").write_text(json.dumps(ph))
    res = runner.invoke(app, ["report", str(d), "--html"])
    assert res.exit_code == 0, res.output
    assert json.loads((d / "phases.json").read_text())["layers"] == stored  # kept, not wiped, without errors.npz
    text = (d / "report.html").read_text()
    assert 'id="phase-table"' in text and 'data-figure="curves.png"' in text
    assert "No reconstructions" in text and "No per-sample dynamics" in text and "Not recorded in config.json" in text
    assert "kept as stored" in text or "kept as stored" in res.output

    # a malformed file is a note too, never a crash
    (d / "phases.json").write_text("{not json")
    (d / "curves.png").write_bytes(b"not a png")
    res = runner.invoke(app, ["report", str(d), "--html"])
    assert res.exit_code == 0, res.output
    text = (d / "report.html").read_text()
    assert "phases.json could not be read" in text or "phases.json is missing" in text

    # only config.json left: plain `report` has nothing to rebuild (exit 2), --html still reports
    for p in d.iterdir():
        if p.name != "config.json":
            p.unlink()
    assert runner.invoke(app, ["report", str(d)]).exit_code == 2
    res = runner.invoke(app, ["report", str(d), "--html"])
    assert res.exit_code == 0 and "No phases" in (d / "report.html").read_text()


def test_diverged_run_writes_a_report_that_says_so(tmp_path):
    from phasescope.run.training import TrainingDiverged

    with pytest.raises(TrainingDiverged):
        run_experiment(tiny(lr=1e6, momentum=0.0, iterations=256), tmp_path / "div", progress=False)
    text = (tmp_path / "div" / "report.html").read_text()
    assert "diverged" in text and "Partial report" in text


def test_compare_html_links_every_report_and_overlays_seeds(tmp_path, run_dir):
    other = run_experiment(tiny(seed=1), tmp_path / "seed1", progress=False).out
    third = run_experiment(tiny(lr=0.02), tmp_path / "lr", progress=False).out
    (third / "report.html").unlink()
    out = tmp_path / "cmp"
    res = runner.invoke(app, ["compare", str(run_dir), str(other), str(third), "--out", str(out), "--html"])
    assert res.exit_code == 0, res.output
    text = (out / "index.html").read_text()
    links = re.findall(r'<a href="([^"]+)"', text)
    assert len(links) == 2 and all((out / link).resolve() == (d / "report.html").resolve()
                                   for link, d in zip(links, [run_dir, other]))
    assert "no report.html" in text and 'id="runs-table"' in text and "Seeds overlaid" in text
    assert all(r.startswith("data:") for r in references(text))
    assert write_index([run_dir], tmp_path / "one").exists()  # folders work as well as loaded runs


def test_seeds_get_an_index_and_flat_inputs_a_note(tmp_path):
    from phasescope.run.experiment import run_seeds

    _, summary = run_seeds(tiny(iterations=4), [0, 1], tmp_path / "seeds", progress=False)
    text = (summary["out"] / "index.html").read_text()
    assert 'href="./seed-0/report.html"' in text and 'href="./seed-1/report.html"' in text and "Seeds overlaid" in text

    cfg = RunConfig(dataset="synthetic", model="mlp", iterations=4, bootstrap=20, device="cpu")
    out = run_experiment(cfg, tmp_path / "flat", progress=False).out
    assert not (out / "reconstructions.png").exists()
    assert "are not images" in (out / "report.html").read_text()
