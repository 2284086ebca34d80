"""report.html: one self-contained page per run, and index.html over several runs.

    from phasescope.outputs.html import write_report, write_index
    write_report("runs/20261128-035852-mnist-digits-cnn")        # -> .../report.html
    write_index(["runs/a", "runs/b"], "compare")                  # -> compare/index.html

The page is read from the run folder's files only (config.json, phases.json, metrics.csv and
the PNG figures), so ``phasescope report RUN_DIR --html`` rebuilds it at any time. Everything
is inside the one file: figures are embedded as base64 ``data:`` URIs, the stylesheet is inline,
fonts are the reader's own, and a Content-Security-Policy forbids every network request; the
report needs no script at all, the index a few lines of inline script to sort its table (allowed
by its SHA-256 hash alone, never by 'unsafe-inline'). Links to files are relative URLs whose path
segments are percent-encoded and that begin with ``./`` or ``../``: a folder named
``javascript:alert(1)`` stays a folder name, never a URL scheme.

A file that an interrupted run or an older phasescope did not write leaves its section out with
a note; nothing that is missing or malformed makes the report fail (each section is built on its
own). The curves are the static curves.png rather than an interactive chart: the interactive
plotting libraries embed one to several megabytes of script per page, do not print, and would
draw a second version of a figure that curves.png already is.
"""
from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
import math
import os
import struct
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import quote

from .compare import load_runs, phase_table, plot_compare, plot_seeds, run_labels
from .rebuild import NotARunFolder, check_run_folder
from ..registry import extension_figures, extensions, find as find_extension
from .figures import PHASE_COLOURS
from .runs import RunFileError, atomic_write as _atomic
from ..version import __version__

REPORT, INDEX = "report.html", "index.html"
STATUS_TEXT = {
    "complete": "complete",
    "interrupted": "interrupted (Ctrl-C): partial, every checkpoint measured so far is included; "
                   "continue with `phasescope run --out RUN_DIR --resume`",
    "diverged": "diverged: training produced NaN or infinite numbers; partial, the checkpoints before it are included",
    "stopped": "stopped on purpose (--stop-on-increase) once the rise was significant",
}
FIGURES = {  # file -> (section, caption); the extensions name theirs (registry.extension_figures)
    "curves.png": ("curves", "Test reconstruction loss (band: 95% interval) and train loss of each tracked layer, "
                             "probe and model accuracy, against iteration (log axis); phases shaded."),
}
CONFIG_GROUPS = [
    ("Data", ["dataset", "data_dir", "train_size", "num_classes"]),
    ("Model and training", ["model", "width", "iterations", "batch_size", "optimizer", "lr", "momentum",
                            "weight_decay", "seed", "device"]),
    ("Measurement", ["layers", "points_per_octave", "fit_samples", "test_samples", "decoder", "relative_ridge", "ridge",
                     "probe", "bn_mode", "bootstrap", "confidence", "min_effect"]),
]


class ReportError(NotARunFolder):
    """No run to report on (exit 2 in the CLI)."""


# ---------------------------------------------------------------------- helpers
def _env():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape  # lazy: jinja2 only for the html pages

    env = Environment(loader=PackageLoader("phasescope", "templates"), autoescape=select_autoescape(["html", "j2"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.globals["phase_colours"] = PHASE_COLOURS
    return env


def href(target: str | Path, start: str | Path) -> str:
    """The link from a page in folder ``start`` to ``target``: relative, each path segment
    percent-encoded (``:`` included), starting with ``./`` or ``../``, so that no file or folder
    name can make it an absolute URL with a scheme (``javascript:``, ``data:``, ``https:``)."""
    rel = os.path.relpath(target, start).replace(os.sep, "/")
    link = "/".join(quote(segment, safe="") for segment in rel.split("/"))
    return link if link.startswith("../") else "./" + link


def inline_script(name: str) -> dict:
    """The page script ``templates/NAME`` and its CSP source (``'sha256-...'``): the policy allows
    this script and no other inline script, event handler or ``javascript:`` URL."""
    from markupsafe import Markup  # lazy: markupsafe (with jinja2) only renders report.html

    env = _env()
    text = env.loader.get_source(env, name)[0]
    digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")
    return {"script": Markup(text), "script_hash": f"sha256-{digest}"}


def png_uri(path: Path) -> dict | None:
    """{"src": data URI, "width", "height"} of a PNG file, or None when it is not a readable PNG."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return {"src": "data:image/png;base64," + base64.b64encode(data).decode("ascii"), "width": width,
            "height": height, "bytes": len(data)}


def _json(path: Path, notes: list[str]) -> dict:
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text())
        return doc if isinstance(doc, dict) else {}
    except (ValueError, OSError) as e:
        notes.append(f"{path.name} could not be read ({e}); what it holds is left out.")
        return {}


def _pct(e: Any) -> str:
    if not isinstance(e, dict) or e.get("value") is None:
        return "–"
    s = f"{100 * e['value']:.1f}%"
    if e.get("ci_low") is not None and e.get("ci_high") is not None:
        s += f" [{100 * e['ci_low']:.1f}%, {100 * e['ci_high']:.1f}%]"
    return s


def _value(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(_value, v)) if v else "–"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_value(x)}" for k, x in v.items() if x not in (None, [], {}, False)) or "–"
    return str(v)


def _seconds(s: Any) -> str:
    if not isinstance(s, (int, float)) or not math.isfinite(s):
        return "–"
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min ({s:.0f} s)"


def phase_bar(phases: list[dict], last: int | None) -> list[dict]:
    """Segments of a phase bar on a log2(1 + iteration) axis: name, colour, width (%)."""
    if not phases:
        return []
    end = max(last or 0, max(p.get("end", 0) for p in phases))
    scale = math.log2(1 + end) or 1.0
    out = []
    for p in phases:
        a, b = math.log2(1 + max(0, p.get("start", 0))), math.log2(1 + max(0, p.get("end", 0)))
        out.append({"name": p.get("name", "?"), "colour": PHASE_COLOURS.get(p.get("name"), "#dddddd"),
                    "width": max(0.0, 100 * (b - a) / scale), "start": p.get("start"), "end": p.get("end")})
    return out


def _section(notes: list[str], name: str, build: Callable[[], Any], default: Any = None) -> Any:
    """Build one section; a malformed file leaves it out with a note instead of failing the report."""
    try:
        return build()
    except Exception as e:  # noqa: BLE001  a report never fails on what one file holds
        notes.append(f"The {name} section was left out: its files could not be read ({type(e).__name__}: {e}).")
        return default


# ---------------------------------------------------------------------- one run
def report_context(run_dir: str | Path, *, status: str | None = None, notes: Sequence[str] = ()) -> dict[str, Any]:
    """Everything report.html shows, read from the files of ``run_dir`` (``notes``: shown with its own)."""
    try:
        run_dir = check_run_folder(Path(run_dir))
    except (NotARunFolder, RunFileError) as e:  # RunFileError: a corrupt config.json
        raise ReportError(str(e)) from None
    notes = list(notes)
    config = _json(run_dir / "config.json", notes)
    payload = _json(run_dir / "phases.json", notes)
    cfg = config.get("config") if isinstance(config.get("config"), dict) else {}
    if not config:
        notes.append("config.json is missing: no configuration, versions or data description.")
    if not payload:
        notes.append("phases.json is missing: no phase table, warnings, timings or summaries.")
    title = (f"{cfg.get('model')} on {cfg.get('dataset')}" + (f" (seed {cfg['seed']})" if "seed" in cfg else "")
             if cfg.get("model") else run_dir.resolve().name)
    ctx: dict[str, Any] = {"title": title, "run_name": run_dir.resolve().name, "notes": notes,
                           "generated": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
                           "version": _section(notes, "version", _version, "?")}
    ctx["status"] = _section(notes, "status", lambda: _status(run_dir, config, payload, status),
                             {"kind": "unknown", "text": "unknown", "partial": True, "detail": []})
    ctx["layers"] = _section(notes, "phase table", lambda: _phase_rows(payload), [])
    ctx["final_accuracy"] = payload.get("final_accuracy") if isinstance(payload.get("final_accuracy"), dict) else {}
    ctx["warnings"] = [str(w) for w in payload.get("warnings") or []] if isinstance(payload.get("warnings"), list) else []
    ctx["figures"] = _section(notes, "figures", lambda: _figures(run_dir, payload, notes), {})
    own = _extension_contexts(payload, notes)  # what each extension's section shows (its report_context)
    for part in own.values():
        ctx.update(part)
    ctx["extension_sections"] = _section(notes, "extensions", lambda: _extension_sections(ctx, own, notes), [])
    ctx["config_groups"] = _section(notes, "configuration", lambda: _config_groups(config), [])
    ctx["config_json"] = json.dumps(config, indent=2) if config else ""
    ctx["timings"] = _section(notes, "timings", lambda: _timings(payload, notes), [])
    ctx["versions"] = config.get("versions") if isinstance(config.get("versions"), dict) else {}
    ctx["files"] = _section(notes, "files", lambda: _files(run_dir), [])
    return ctx


def _extension_contexts(payload: dict, notes: list[str]) -> dict[type, dict]:
    """Every extension's ``report_context(payload)``; one whose part of phases.json is malformed is
    left out with a note (its section too)."""
    out = {}
    for cls in extensions():
        try:
            out[cls] = dict(cls.report_context(payload))
        except Exception as e:  # noqa: BLE001  a report never fails on what one section holds
            notes.append(f"The {cls.name} section was left out: phases.json's part could not be read "
                         f"({type(e).__name__}: {e}).")
    return out


def _is_template_name(text: str) -> bool:
    return "\n" not in text and "{" not in text and text.endswith(".j2")


def _extension_sections(ctx: dict, own: dict[type, dict], notes: list[str]) -> list[dict]:
    """The extensions' sections of report.html, in ``report_order`` (then registry order): each
    extension's ``report_template`` rendered with the report's context and its own; an extension
    without one shows its figures that exist. An empty rendering is no section (nor navigation)."""
    from markupsafe import Markup  # lazy: markupsafe (with jinja2) only renders report.html

    env = _env()
    out = []
    ranked = sorted(enumerate(extensions()), key=lambda item: (item[1].report_order, item[0]))
    for _, cls in ranked:
        if cls not in own:
            continue
        template = cls.report_template
        title = cls.report_title or cls.name
        present = [name for name in cls.figures if name in ctx["figures"]]
        if template is None:
            if not present:
                continue
            template = "extensions/figures.html.j2"
        try:
            tpl = env.get_template(template) if _is_template_name(template) else env.from_string(template)
            html = tpl.render({**ctx, **own[cls], "section_title": title, "section_figures": present})
        except Exception as e:  # noqa: BLE001  one section's template never fails the report
            notes.append(f"The {cls.name} section was left out: its template could not be rendered "
                         f"({type(e).__name__}: {e}).")
            continue
        if html.strip():
            out.append({"name": cls.name, "anchor": cls.report_anchor or cls.name, "title": title,
                        "html": Markup(html.strip("\n"))})
    return out


def _version() -> str:
    return __version__


def _status(run_dir: Path, config: dict, payload: dict, status: str | None) -> dict:
    kind = status or payload.get("status")
    schedule = ((config.get("measurement") or {}).get("schedule") or [])
    checkpoints = payload.get("checkpoints") or []
    detail = []
    if checkpoints:
        detail.append(f"{len(checkpoints)} checkpoints measured, iterations {checkpoints[0]} to {checkpoints[-1]}"
                      + (f" of {schedule[-1]} planned" if schedule else ""))
    short = bool(schedule and checkpoints and checkpoints[-1] < schedule[-1])
    if kind in STATUS_TEXT:
        text = STATUS_TEXT[kind]
    elif kind:
        text = str(kind)
    else:
        kind = "unknown"
        text = ("no final status recorded: the run stopped before it finished (or was made by an older phasescope); "
                "partial, the report shows what its files hold")
    partial = kind in ("interrupted", "diverged", "unknown") or (short and kind != "stopped")
    if short and kind == "complete":
        text += " (but fewer checkpoints than planned)"
    return {"kind": kind, "text": text, "partial": partial, "detail": detail}


def _phase_rows(payload: dict) -> list[dict]:
    rows = []
    last = (payload.get("checkpoints") or [None])[-1]
    for layer, p in (payload.get("layers") or {}).items():
        phases = [q for q in p.get("phases") or [] if isinstance(q, dict)]
        mv = (p.get("min_value") or {}).get("value") if isinstance(p.get("min_value"), dict) else p.get("min_value")
        rows.append({
            "layer": layer,
            "phases": [{"name": q.get("name"), "start": q.get("start"), "end": q.get("end"),
                        "colour": PHASE_COLOURS.get(q.get("name"), "#dddddd")} for q in phases],
            "bar": phase_bar(phases, last),
            "minimum": ("–" if mv is None else f"{mv:.4g}") + (f" @ {p['min_iteration']}" if p.get("min_iteration") is not None else ""),
            "decrease": _pct(p.get("relative_decrease")),
            "increase": _pct(p.get("relative_increase")),
            "decrease_significant": p.get("decrease_significant"),
            "increase_significant": p.get("increase_significant"),
        })
    return rows


def _figures(run_dir: Path, payload: dict, notes: list[str]) -> dict[str, dict]:
    figs = {}
    every = {**{n: (section, caption, True) for n, (section, caption) in FIGURES.items()}, **extension_figures(payload)}
    expected = {n: e for n, (_, _, e) in every.items()}
    for name, (section, caption, _) in every.items():
        path = run_dir / name
        img = png_uri(path) if path.exists() else None
        if img is not None:
            figs[name] = {**img, "name": name, "section": section, "caption": caption}
        elif path.exists():
            notes.append(f"{name} is not a readable PNG and was left out.")
        elif expected[name]:
            notes.append(f"{name} is missing (the run did not draw it: interrupted before the end, or an older "
                         f"phasescope); `phasescope report {run_dir} --html` redraws what the files allow.")
    return figs


def _config_groups(config: dict) -> list[dict]:
    cfg = config.get("config") if isinstance(config.get("config"), dict) else {}
    if not cfg:
        return []
    groups = []
    for title, keys in CONFIG_GROUPS:
        rows = [(k.replace("_", " "), _value(cfg[k])) for k in keys if cfg.get(k) is not None]
        groups.append({"title": title, "rows": rows})
    data, model, meas = (config.get(k) if isinstance(config.get(k), dict) else {} for k in ("data", "model", "measurement"))
    if cfg.get("layers") is None and meas.get("layers"):
        groups[2]["rows"].insert(0, ("layers", f"{_value(meas['layers'])} (default)"))
    groups[0]["rows"] += [(label, _value(data[k])) for k, label in
                          (("n_train", "training samples"), ("n_test", "test samples"),
                           ("input_shape", "input shape")) if k in data]
    if isinstance(data.get("normalisation"), dict):
        n = data["normalisation"]
        groups[0]["rows"].append(("normalisation", f"mean {_value(n.get('mean'))}; std {_value(n.get('std'))}"))
    groups[1]["rows"] += [(label, _value(model[k])) for k, label in
                          (("parameters", "parameters"), ("device", "ran on")) if k in model]
    for key in ("fit_samples", "test_samples"):  # what was measured, when the data had fewer than asked
        if isinstance(meas.get(key), int) and cfg.get(key) not in (None, meas[key]):
            rows = groups[2]["rows"]
            i = next((j for j, (k, _) in enumerate(rows) if k == key.replace("_", " ")), None)
            if i is not None:
                rows[i] = (rows[i][0], f"{meas[key]} (of {cfg[key]} asked)")
    if isinstance(meas.get("layer_shapes"), dict):
        groups[2]["rows"].append(("layer shapes", ", ".join(f"{n}: {'x'.join(map(str, s))}"
                                                            for n, s in meas["layer_shapes"].items())))
    if meas.get("schedule"):
        groups[2]["rows"].append(("checkpoints planned", f"{len(meas['schedule'])} ({_value(meas['schedule'])})"))
    plugins = [(name, _value(cfg[name])) for name in _sections_used(cfg, meas)
               if isinstance(cfg.get(name), dict) and _value(cfg[name]) != "–"]
    if plugins:
        groups.append({"title": "Extensions", "rows": plugins})
    return [g for g in groups if g["rows"]]


def _sections_used(cfg: dict, meas: dict) -> list[str]:
    """The option sections worth showing: synthetic, and those of the extensions the run had
    (config.json's ``measurement.extensions``), in config.json's order."""
    ran = {getattr(c.options, "section", None) for c in map(find_extension, meas.get("extensions") or {})
           if c is not None}
    return [name for name in cfg if name == "synthetic" or name in ran]


def _timings(payload: dict, notes: list[str] | None = None) -> list[tuple[str, str]]:
    sec = payload.get("seconds") if isinstance(payload.get("seconds"), dict) else {}
    rows = []
    if "total" in sec:
        rows.append(("total", _seconds(sec["total"])))
    n = len(payload.get("checkpoints") or [])
    if "measurement" in sec:
        rows.append(("measurement", _seconds(sec["measurement"]) +
                     (f" ({sec['measurement'] / n:.2f} s per checkpoint, {n} checkpoints)" if n else "")))
        if sec.get("total"):
            rows.append(("training and the rest", _seconds(sec["total"] - sec["measurement"])))
    for cls in extensions():  # e.g. the per-sample dynamics' cost per checkpoint
        try:
            rows += [(str(k), str(v)) for k, v in cls.report_timings(payload)]
        except Exception as e:  # noqa: BLE001
            if notes is not None:
                notes.append(f"The {cls.name} timings were left out ({type(e).__name__}: {e}).")
    return rows


def _files(run_dir: Path) -> list[dict]:
    out = []
    for p in sorted(run_dir.iterdir()):
        if p.is_file() and not p.name.endswith(".tmp") and p.name != REPORT:
            size = p.stat().st_size
            out.append({"name": p.name, "href": href(p, run_dir),
                        "size": f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"})
    return out


def render_report(run_dir: str | Path, *, status: str | None = None, notes: Sequence[str] = ()) -> str:
    return _env().get_template("report.html.j2").render(**report_context(run_dir, status=status, notes=notes))


def write_report(run_dir: str | Path, out: str | Path | None = None, *, status: str | None = None,
                 notes: Sequence[str] = ()) -> Path:
    """Write report.html of ``run_dir`` (or to ``out``) from its files; returns its path.
    ``status`` overrides the run status of phases.json (e.g. "diverged" while it is not yet recorded);
    ``notes`` are shown with the report's own (e.g. what a rebuild could not do).
    Raises :class:`ReportError` when ``run_dir`` is no run folder."""
    text = render_report(run_dir, status=status, notes=notes)
    path = Path(out) if out is not None else Path(run_dir) / REPORT
    _atomic(path, lambda p: p.write_text(text, encoding="utf-8"))
    return path


def write_report_quietly(run_dir: str | Path, *, status: str | None = None) -> Path | None:
    """:func:`write_report` for the end of a run: a failure is a warning, never the run's failure."""
    try:
        return write_report(run_dir, status=status)
    except Exception as e:  # noqa: BLE001  the run's results matter more than its report
        warnings.warn(f"report.html was not written ({type(e).__name__}: {e}); "
                      f"`phasescope report {run_dir} --html` retries.", RuntimeWarning, stacklevel=2)
        return None


# ---------------------------------------------------------------------- many runs
def _config_key(cfg: dict) -> str:
    return json.dumps({k: v for k, v in cfg.items() if k not in ("seed", "data_dir", "device")}, sort_keys=True,
                      default=str)


def index_context(runs: Sequence, out: Path, labels: Sequence[str] | None = None,
                  metric: str = "reconstruction_mse") -> dict[str, Any]:
    """What index.html shows for ``runs`` (:class:`~phasescope.outputs.compare.LoadedRun`); figures go to ``out``."""
    notes: list[str] = []
    labels = list(labels or run_labels(runs))
    table = phase_table(runs, labels)
    rows = []
    for run, label in zip(runs, labels):
        report = run.path / REPORT
        link = href(report, out) if report.exists() else None
        if link is None:
            notes.append(f"{run.path} has no report.html; `phasescope report {run.path} --html` makes one.")
        status = f"partial ({run.run_status})" if run.partial else run.run_status
        layers = run.phases.get("layers") or {}
        last = (run.phases.get("checkpoints") or [None])[-1]
        if not layers:
            rows.append({"label": label, "path": str(run.path), "link": link, "status": status, "layer": "–",
                         "phases": [], "bar": [], "sort": {}, "cells": {}})
        for layer, p in layers.items():
            r = table[(table.run == label) & (table.layer == layer)]
            r = r.iloc[0] if len(r) else None
            acc = run.phases.get("final_accuracy", {}).get("test")
            rows.append({
                "label": label, "path": str(run.path), "link": link, "status": status, "layer": layer,
                "phases": [{"name": q["name"], "start": q["start"], "end": q["end"],
                            "colour": PHASE_COLOURS.get(q["name"], "#dddddd")} for q in p.get("phases", [])],
                "bar": phase_bar(p.get("phases", []), last),
                "cells": {"min": f"{p['min_value']['value']:.4g} @ {p['min_iteration']}",
                          "decrease": _pct(p.get("relative_decrease")), "increase": _pct(p.get("relative_increase")),
                          "three": "yes" if r is not None and r.three_phases else "no",
                          "acc": "–" if acc is None else f"{acc:.3f}"},
                "sort": {"min": p["min_iteration"], "decrease": (p.get("relative_decrease") or {}).get("value"),
                         "increase": (p.get("relative_increase") or {}).get("value"), "acc": acc},
            })
    figures = []
    path = plot_compare(runs, out / "compare.png", labels, metric=metric)
    figures.append({**(png_uri(path) or {}), "caption": f"Every run's test {metric.replace('_', ' ')} "
                                                        "(band: 95% interval; dotted: reconstruction minimum)."})
    groups: dict[str, list] = {}
    for run, label in zip(runs, labels):
        groups.setdefault(_config_key(run.config), []).append((run, label))
    for i, members in enumerate(g for g in groups.values() if len(g) > 1):
        group = [r for r, _ in members]
        seeds = ", ".join(str(r.config.get("seed")) for r in group)
        name = f"{group[0].config.get('model')} on {group[0].config.get('dataset')}"
        path = plot_seeds(group, out / f"seeds-{i + 1}.png", title=f"{name}, seeds {seeds}")
        figures.append({**(png_uri(path) or {}), "caption": f"Seeds overlaid, one configuration ({name}; runs: "
                                                            f"{'; '.join(l for _, l in members)}): mean ± 1 sd."})
    return {"title": f"{len(runs)} runs", "rows": rows, "figures": [f for f in figures if f.get("src")],
            "notes": notes, "metric": metric, "version": _version(), **inline_script("sort-table.js"),
            "generated": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")}


def write_index(runs: Sequence, out: str | Path, labels: Sequence[str] | None = None,
                metric: str = "reconstruction_mse") -> Path:
    """index.html in ``out`` over several runs (LoadedRun objects or run folders): the summary
    table (sortable by clicking a header), each run's phases, the curves of all runs and, per
    configuration with several seeds, the seeds overlaid; links to each run's report.html."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [r for r in runs] if runs and not isinstance(runs[0], (str, Path)) else load_runs(list(runs))
    text = _env().get_template("index.html.j2").render(**index_context(runs, out, labels, metric))
    _atomic(out / INDEX, lambda p: p.write_text(text, encoding="utf-8"))
    return out / INDEX


def write_index_quietly(runs: Sequence, out: str | Path, labels: Sequence[str] | None = None) -> Path | None:
    """:func:`write_index` at the end of ``run_seeds``: a failure is a warning, never the run's failure."""
    try:
        return write_index(runs, out, labels)
    except Exception as e:  # noqa: BLE001
        warnings.warn(f"index.html was not written ({type(e).__name__}: {e}).", RuntimeWarning, stacklevel=2)
        return None
