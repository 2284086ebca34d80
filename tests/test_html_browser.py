"""The reports as a reader sees them: rendered by headless Chromium with the network off.

Needs Debian's ``chromium`` (``.ci/run`` installs it) and the ``playwright`` package (test extra),
which drives that binary; no browser is downloaded. Skipped, saying why, only where either is missing.
"""
import pytest

from phasescope import RunConfig, run_experiment
from phasescope.outputs.html import write_index

from .browser_check import render, unavailable

why = unavailable()
pytestmark = pytest.mark.skipif(why is not None, reason=f"browser test skipped: {why}")

FIGURES = {"curves.png", "reconstructions.png", "few.png", "samples.png"}


def tiny(**kw):
    return RunConfig(dataset="digits", model="cnn", width=0.5, iterations=8, batch_size=32, lr=0.05, fit_samples=300,
                     test_samples=150, bootstrap=50, device="cpu").replace(**kw)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    return [run_experiment(tiny(seed=s), root / f"seed-{s}", progress=False).out for s in (0, 1)]


def assert_clean(found: dict) -> None:
    assert found["offsite"] == [], f"the page tried to reach the network: {found['offsite']}"
    assert found["failed"] == [], f"failed requests: {found['failed']}"
    assert found["console_errors"] == [], f"console errors: {found['console_errors']}"


def test_report_renders_offline_with_every_figure(runs, tmp_path):
    def inspect(page):
        rows = page.locator("#phase-table tbody tr")
        print_view = {}
        page.emulate_media(media="print")
        print_view["nav"] = page.locator("nav.toc").is_visible()
        page.emulate_media(media="screen")
        return {"rows": rows.count(), "first": rows.first.inner_text(), **print_view,
                "overflow": page.evaluate("document.documentElement.scrollWidth > window.innerWidth")}

    shot = tmp_path / "report.png"
    found = render(runs[0] / "report.html", shot, actions=inspect)
    assert_clean(found)
    assert found["title"].startswith("phasescope: cnn on digits")
    r = found["result"]
    assert r["rows"] == 1 and "features.3" in r["first"] and "[" in r["first"]  # the phase table, with intervals
    assert not r["nav"], "the print stylesheet hides the navigation"
    assert not r["overflow"], "the page is wider than a 1280-pixel laptop screen"
    shown = {i["figure"] for i in found["images"]}
    assert shown == FIGURES, shown
    for img in found["images"]:
        assert img["src"].startswith("data:image/png"), img
        assert img["naturalWidth"] > 0 and img["naturalHeight"] > 0 and img["width"] > 100, img
    for text in ("Learning phases", "What the layer keeps", "Configuration", "Timings", "Versions", "torch"):
        assert text in found["text"], text
    assert shot.stat().st_size > 50_000


def test_partial_report_renders_and_says_so(tmp_path):
    def interrupt(t, tracker):
        if t == 2:
            raise KeyboardInterrupt

    out = run_experiment(tiny(), tmp_path / "part", progress=False, on_checkpoint=interrupt).out
    found = render(out / "report.html", tmp_path / "partial.png")
    assert_clean(found)
    assert "Partial report" in found["text"] and "interrupted" in found["text"]
    assert all(i["naturalWidth"] > 0 for i in found["images"]) and len(found["images"]) >= 2


def test_index_sorts_by_clicking_a_header_and_links_each_report(runs, tmp_path):
    from phasescope.outputs.compare import load_runs

    loaded = load_runs(runs)
    index = write_index(loaded, tmp_path / "cmp", labels=["b-seed0", "a-seed1"])

    def click_sort(page):
        names = lambda: page.locator("#runs-table tbody tr td:first-child a").all_inner_texts()  # noqa: E731
        before = names()
        page.locator("#runs-table th", has_text="run").first.click()
        ascending = names()
        page.locator("#runs-table th", has_text="run").first.click()
        descending = names()
        hrefs = page.locator("#runs-table tbody a").evaluate_all("links => links.map(a => a.href)")
        return {"before": before, "ascending": ascending, "descending": descending, "hrefs": hrefs}

    found = render(index, tmp_path / "index.png", actions=click_sort)
    assert_clean(found)
    r = found["result"]
    assert r["before"] == ["b-seed0", "a-seed1"]
    assert r["ascending"] == ["a-seed1", "b-seed0"] and r["descending"] == ["b-seed0", "a-seed1"]
    assert sorted(r["hrefs"]) == sorted((d / "report.html").resolve().as_uri() for d in runs)
    assert len(found["images"]) == 2 and all(i["naturalWidth"] > 0 for i in found["images"])  # all runs; seeds


def test_the_check_catches_a_page_that_reaches_out(tmp_path):
    """The harness itself: a page with an external image is caught (request aborted and recorded)."""
    page = tmp_path / "leaky.html"
    page.write_text('<!DOCTYPE html><html><body><img src="http://example.invalid/x.png"></body></html>')
    found = render(page)
    assert found["offsite"] == ["http://example.invalid/x.png"]
    assert found["images"][0]["naturalWidth"] == 0
