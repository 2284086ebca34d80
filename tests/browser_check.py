"""Render a phasescope HTML page in headless Chromium, offline, and report what a reader would see.

Used by tests/test_html_browser.py; also a script that saves a screenshot:

    python tests/browser_check.py runs/RUN/report.html docs/img/report.png [HEIGHT]   # top HEIGHT pixels

It drives the system's Chromium (Debian's ``chromium`` package) with the ``playwright`` package:
no browser is downloaded. Every request that is not for a local file is aborted and recorded,
so a page that tries to reach the network fails the check.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def find_chromium() -> str | None:
    """The Chromium binary: $PHASESCOPE_CHROMIUM, else chromium / chromium-browser on PATH."""
    for c in (os.environ.get("PHASESCOPE_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser")):
        if c and Path(c).exists():
            return c
    return None


def unavailable() -> str | None:
    """Why the browser check cannot run here, or None when it can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if find_chromium() is None:
        return ("no chromium binary (apt-get install -y chromium, as .ci/run does; or set PHASESCOPE_CHROMIUM); "
                "the browser test needs a real browser")
    return None


def render(path: str | Path, screenshot: str | Path | None = None, *, width: int = 1280, height: int = 900,
           actions=None, full_page: bool = True, clip_height: int | None = None) -> dict:
    """Open ``path`` (a local HTML file) offline; return what happened and what the page shows:

    ``offsite`` requests that were not file:// (aborted), ``failed`` requests, ``console_errors``
    (console messages of type error and uncaught exceptions), ``images`` (src prefix, natural and
    rendered size of every <img>), ``text`` of the page, and ``result`` of ``actions(page)``.
    """
    from playwright.sync_api import sync_playwright

    url = Path(path).resolve().as_uri()
    found: dict = {"offsite": [], "failed": [], "console_errors": [], "requests": []}
    with tempfile.TemporaryDirectory(prefix="phasescope-chromium-") as profile, sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            profile, executable_path=find_chromium(), headless=True, args=FLAGS, offline=True,
            viewport={"width": width, "height": height}, java_script_enabled=True)
        try:
            def route(r):
                found["requests"].append(r.request.url)
                if r.request.url.startswith(("file:", "data:")):
                    r.continue_()
                else:
                    found["offsite"].append(r.request.url)
                    r.abort()

            ctx.route("**/*", route)
            page = ctx.new_page()
            page.on("console", lambda m: m.type == "error" and found["console_errors"].append(m.text))
            page.on("pageerror", lambda e: found["console_errors"].append(f"uncaught: {e}"))
            page.on("requestfailed", lambda r: found["failed"].append(f"{r.url[:80]}: {r.failure}"))
            page.goto(url, wait_until="load")
            page.wait_for_function("Array.from(document.images).every(i => i.complete)")
            found["images"] = page.evaluate("""Array.from(document.images).map(i => ({
                src: i.getAttribute('src').slice(0, 22), naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight,
                width: i.getBoundingClientRect().width, height: i.getBoundingClientRect().height,
                figure: (i.closest('figure') || {dataset: {}}).dataset.figure || null}))""")
            found["text"] = page.inner_text("body")
            found["title"] = page.title()
            found["result"] = actions(page) if actions is not None else None
            if screenshot is not None:
                clip = {"x": 0, "y": 0, "width": width, "height": clip_height} if clip_height else None
                page.screenshot(path=str(screenshot), full_page=full_page, clip=clip)
        finally:
            ctx.close()
    return found


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: python tests/browser_check.py PAGE.html SCREENSHOT.png [HEIGHT]")
    why = unavailable()
    if why:
        sys.exit(why)
    r = render(sys.argv[1], sys.argv[2], clip_height=int(sys.argv[3]) if len(sys.argv) == 4 else None)
    print({k: r[k] for k in ("offsite", "failed", "console_errors")}, f"{len(r['images'])} images")
